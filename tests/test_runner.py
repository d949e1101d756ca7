"""Batches that never die: every failure is one row, results do not depend on --jobs.

The first half drives ``run_batch`` with fake checks (module-level, so worker processes can import them by
name): the kind of fault is the part of the spec's name before the colon. The second half runs real checks
(``run_check``) on the fixture implementations and on ``examples/``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from convcheck.batch.guard import CheckTimeout, describe_failure, run_one, timeout_of
from convcheck.batch.local import run_batch
from convcheck.batch.outcome import BatchOutcome
from convcheck.config import load_configs
from convcheck.results import CheckResult, NoteKind, Status
from convcheck.spec import Activation, CheckSpec, ConvShape, ImplRef, Layout, Signature

TINY = ConvShape(batch=1, in_height=3, in_width=3, in_depth=1, out_depth=1, filter_size=1)
FIXTURES = Path(__file__).parent / "fixtures" / "impls"
EXAMPLES = Path(__file__).parent.parent / "examples"


def fake_check(spec: CheckSpec) -> CheckResult:
    kind, _, argument = spec.name.partition(":")
    if kind == "pass":
        return CheckResult(spec.name, Status.PASS, spec, 0.0)
    if kind == "fail":
        return CheckResult(spec.name, Status.FAIL, spec, 0.0)
    if kind == "raise":
        raise RuntimeError("boom")
    if kind == "memory":
        raise MemoryError
    if kind == "interrupt":
        raise KeyboardInterrupt
    if kind == "sleep":
        time.sleep(float(argument))
        return CheckResult(spec.name, Status.PASS, spec, 0.0)
    if kind == "hang":
        while True:
            pass
    if kind == "block":  # like C code that never returns to Python: the alarm cannot interrupt it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(60)
    if kind == "crash":
        os._exit(3)
    if kind == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if kind == "print":
        print("debug output from the user's code")
        return CheckResult(spec.name, Status.PASS, spec, 0.0)
    if kind == "env":
        threads = tuple(os.environ.get(name, "unset") for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"))
        return CheckResult(spec.name, Status.PASS, spec, 0.0, notes=threads)
    raise AssertionError(f"unknown fake {kind!r}")


def fakes(*names: str, timeout: float = 0.5) -> list[CheckSpec]:
    return [CheckSpec(name, TINY, timeout=timeout) for name in names]


def rows(outcome: BatchOutcome) -> list[tuple[str, str, str | None]]:
    return [(r.name, r.status.value, r.error) for r in outcome.results]


# -- in process ---------------------------------------------------------------------------------------------


def test_every_exception_is_one_error_row_and_the_batch_goes_on():
    outcome = run_batch(fakes("pass:a", "raise:", "memory:", "fail:", "pass:b"), check=fake_check)
    assert [(name, status) for name, status, _ in rows(outcome)] == [
        ("pass:a", "pass"),
        ("raise:", "error"),
        ("memory:", "error"),
        ("fail:", "fail"),
        ("pass:b", "pass"),
    ]
    assert outcome.results[1].error.startswith("the check failed with RuntimeError: boom at ")
    assert "test_runner.py" in outcome.results[1].error and "Traceback" not in outcome.results[1].error
    assert outcome.results[2].error.startswith("ran out of memory (MemoryError)")
    assert not outcome.interrupted and not outcome.stopped_early and not outcome.passed


def test_a_hanging_check_times_out_in_process():
    start = time.monotonic()
    outcome = run_batch(fakes("hang:", "pass:", timeout=0.3), check=fake_check)
    assert time.monotonic() - start < 2
    assert rows(outcome)[0][:2] == ("hang:", "error")
    assert outcome.results[0].error.startswith("timed out after 0.3 s")
    assert outcome.results[1].status is Status.PASS


def test_the_alarm_leaves_signal_state_as_it_found_it():
    handler = signal.getsignal(signal.SIGALRM)
    run_one(fakes("pass:")[0], fake_check)
    run_one(fakes("hang:", timeout=0.1)[0], fake_check)
    assert signal.getsignal(signal.SIGALRM) is handler
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_outside_the_main_thread_the_timeout_is_not_enforced_and_the_result_says_so():
    results = []
    thread = threading.Thread(target=lambda: results.append(run_one(fakes("pass:")[0], fake_check)))
    thread.start()
    thread.join()
    assert results[0].status is Status.PASS
    said = [note for note in results[0].notes if note.kind is NoteKind.TIMEOUT_NOT_ENFORCED]
    assert len(said) == 1 and str(said[0]).startswith("timeout not enforced")


def test_timeout_defaults_to_the_checkers():
    from convcheck import checker

    assert timeout_of(CheckSpec("c", TINY)) == checker.DEFAULT_TIMEOUT
    assert timeout_of(CheckSpec("c", TINY, timeout=2.5)) == 2.5
    assert describe_failure(CheckTimeout(2.5)).startswith("timed out after 2.5 s")


def test_fail_fast_stops_after_the_first_check_that_does_not_pass():
    outcome = run_batch(fakes("pass:", "fail:", "pass:b"), fail_fast=True, check=fake_check)
    assert [r.name for r in outcome.results] == ["pass:", "fail:"]
    assert outcome.stopped_early and outcome.not_run == ("pass:b",)


def test_keyboard_interrupt_returns_the_results_so_far():
    seen = []
    outcome = run_batch(
        fakes("pass:", "interrupt:", "pass:b"), on_result=lambda i, r: seen.append((i, r.name)), check=fake_check
    )
    assert outcome.interrupted and [r.name for r in outcome.results] == ["pass:"]
    assert outcome.not_run == ("interrupt:", "pass:b")
    assert seen == [(0, "pass:")]


def test_user_prints_go_to_stderr(capfd):
    run_batch(fakes("print:"), check=fake_check)
    captured = capfd.readouterr()
    assert "debug output" in captured.err and "debug output" not in captured.out


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        run_batch(fakes("pass:"), jobs=0, check=fake_check)
    with pytest.raises(ValueError, match="module-level function"):
        run_batch(fakes("pass:", "pass:b"), jobs=2, check=lambda spec: fake_check(spec))


# -- worker processes ---------------------------------------------------------------------------------------


def test_workers_survive_crashes_and_hangs_and_agree_with_in_process():
    names = ("pass:", "raise:", "crash:", "hang:", "block:", "segfault:", "memory:", "env:", "fail:", "pass:b")
    # Only the two that never return get the short timeout: the others must finish on a loaded machine too,
    # where a worker's start alone can take longer than 0.5 s.
    specs = [spec if spec.name in ("hang:", "block:") else spec.with_overrides(timeout=60.0) for spec in fakes(*names)]
    seen = []
    start = time.monotonic()
    outcome = run_batch(specs, jobs=2, on_result=lambda i, r: seen.append(i), check=fake_check)
    assert time.monotonic() - start < 50  # "block:" sleeps 60 s and "hang:" forever: both were killed
    assert sorted(seen) == list(range(len(names)))
    assert [r.name for r in outcome.results] == list(names)
    by_name = {r.name: r for r in outcome.results}
    assert by_name["crash:"].error.startswith("the implementation crashed the worker process (exit code 3)")
    assert "killed by SIGSEGV" in by_name["segfault:"].error
    assert by_name["block:"].error.startswith("timed out after 0.5 s")  # killed from outside
    assert by_name["env:"].notes == ("1", "1")  # one BLAS thread per worker
    assert by_name["pass:b"].status is Status.PASS
    # the checks a single process survives give the same rows in process
    survivable = [name for name in names if name.split(":")[0] not in ("crash", "block", "segfault", "env")]
    here = run_batch(fakes(*survivable), jobs=1, check=fake_check)
    assert rows(here) == [row for row in rows(outcome) if row[0] in survivable]
    assert multiprocessing.active_children() == []


def test_fail_fast_with_workers_gives_the_same_results_as_in_process():
    names = ("sleep:0.3", "pass:", "fail:", "pass:b", "raise:", "pass:c")
    parallel = run_batch(fakes(*names), jobs=2, fail_fast=True, check=fake_check)
    serial = run_batch(fakes(*names), jobs=1, fail_fast=True, check=fake_check)
    assert rows(parallel) == rows(serial)
    assert [r.name for r in parallel.results] == ["sleep:0.3", "pass:", "fail:"]
    assert parallel.stopped_early and parallel.not_run == ("pass:b", "raise:", "pass:c")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_stops_the_workers_and_returns_the_results_so_far():
    timers = []

    def press_ctrl_c_soon(index, result):  # once the first result is in, while the others sleep
        timers.append(threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)))
        timers[-1].start()

    try:
        outcome = run_batch(
            fakes("pass:", "sleep:30", "sleep:30", timeout=60), jobs=2, on_result=press_ctrl_c_soon, check=fake_check
        )
    finally:
        for timer in timers:
            timer.cancel()
    assert outcome.interrupted
    assert [r.name for r in outcome.results] == ["pass:"]
    assert multiprocessing.active_children() == []


# -- real checks ------------------------------------------------------------------------------------------------

SHAPE = ConvShape(batch=2, in_height=5, in_width=6, in_depth=2, out_depth=3, filter_size=3, stride=1, padding=1)
CS231N = {"forward": "conv_forward_naive", "backward": "conv_backward_naive", "signature": Signature.CS231N}


def real(module: str, *, name: str | None = None, timeout: float = 20.0, **options: object) -> CheckSpec:
    ref = {key: options.pop(key) for key in ("forward", "backward", "signature") if key in options}
    impl = ImplRef(module, base_dir=FIXTURES, **ref)  # type: ignore[arg-type]
    return CheckSpec(name or module, SHAPE, impl=impl, timeout=timeout, **options)  # type: ignore[arg-type]


REAL = [
    real("good_nhwc.py"),
    real("good_nchw.py", layout=Layout.NCHW),
    real("good_cs231n.py", activation=Activation.NONE, **CS231N),
    real("raises_backward.py"),
    real("wrong_db_keepdims.py"),
    real("nan_backward.py"),
    real("mutates_input.py"),
    real("global_state.py"),
    real("accumulates.py"),
    real("hangs.py", timeout=1.0),
    real("import_error.py"),
    real("flipped_kernel.py"),
]
EXPECTED = {
    "good_nhwc.py": ("pass", None),
    "good_nchw.py": ("pass", None),
    "good_cs231n.py": ("pass", None),
    "raises_backward.py": ("error", "the implementation's backward raised ValueError"),
    "wrong_db_keepdims.py": ("fail", None),
    "nan_backward.py": ("fail", None),
    "mutates_input.py": ("fail", None),
    "global_state.py": ("fail", None),
    "accumulates.py": ("fail", None),
    "hangs.py": ("error", "timed out after 1 s"),
    "import_error.py": ("error", "cannot load implementation"),
    "flipped_kernel.py": ("fail", None),
    "crash_exit.py": ("error", "the implementation crashed the worker process (exit code 3)"),
    "hangs_uninterruptible.py": ("error", "timed out after 1 s"),
    "after": ("pass", None),
}


def assert_expected(outcome: BatchOutcome) -> None:
    for result in outcome.results:
        status, error = EXPECTED[result.name]
        assert result.status.value == status, (result.name, result.error, result.contract)
        if error is not None:
            assert result.error.startswith(error), (result.name, result.error)


def test_real_checks_in_process():
    outcome = run_batch(REAL)
    assert [r.name for r in outcome.results] == [s.name for s in REAL]
    assert_expected(outcome)
    by_name = {r.name: r for r in outcome.results}
    assert any("keepdims=True" in str(p) for p in by_name["wrong_db_keepdims.py"].contract)
    assert any("NaN" in str(p) for p in by_name["nan_backward.py"].contract)
    assert any("modified its argument x" in str(p) for p in by_name["mutates_input.py"].contract)
    assert any("keeps state outside the cache" in str(p) for p in by_name["global_state.py"].contract)
    assert any("accumulate" in str(p) for p in by_name["accumulates.py"].contract)
    flipped = by_name["flipped_kernel.py"]  # its gradients are right for its own (wrong) forward
    assert flipped.forward is not None and not flipped.forward.ok and not flipped.contract
    assert all(g.passed for g in flipped.gradients)


def test_real_checks_in_workers_match_in_process_and_survive_crashes():
    crashes = [real("crash_exit.py"), real("hangs_uninterruptible.py", timeout=1.0), real("good_nhwc.py", name="after")]
    parallel = run_batch([*REAL, *crashes], jobs=2)
    assert [r.name for r in parallel.results] == [s.name for s in [*REAL, *crashes]]
    assert_expected(parallel)
    serial = run_batch(REAL, jobs=1)
    assert rows(serial) == rows(parallel)[: len(REAL)]
    # A module is loaded once per process, so a buggy module's global state carries over from earlier checks
    # in that process: the wording of a contract finding may differ, the findings themselves do not.
    assert [len(r.contract) for r in serial.results] == [len(r.contract) for r in parallel.results[: len(REAL)]]


def test_examples_give_their_documented_verdicts():
    load = load_configs(sorted(EXAMPLES.glob("*.yaml")))  # examples/frameworks/: tests/test_frameworks.py
    assert load.ok, load.errors
    outcome = run_batch(load.specs)
    verdicts = {r.name: r for r in outcome.results}
    assert set(verdicts) == {"cs231n-naive", "im2col-nhwc", "buggy-col2im"}
    assert verdicts["cs231n-naive"].passed and verdicts["im2col-nhwc"].passed
    buggy = verdicts["buggy-col2im"]
    assert buggy.status is Status.FAIL and buggy.forward.ok and not buggy.contract
    assert [g.name for g in buggy.gradients if not g.passed] == ["input"]


def test_every_check_of_a_user_layer_gets_a_fresh_process_and_no_worker_loads_user_code():
    tells = [real(str(Path(__file__).parent / "fixtures" / "hostile" / "tells_pid.py"), name=f"t{i}") for i in range(3)]
    for jobs in (1, 2):
        outcome = run_batch(tells, jobs=jobs, isolate=True)
        told = [
            dict(part.split("=") for part in r.error.split(": ", 2)[-1].split(" at ")[0].split())
            for r in outcome.results
        ]
        assert [t["calls"] for t in told] == ["1", "1", "1"]  # no state from an earlier check
        assert len({t["pid"] for t in told}) == 3  # a process per check
        assert os.getpid() not in {int(t["parent"]) for t in told}  # forked by a worker, not by this process
