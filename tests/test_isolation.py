"""No layer can buy a PASS: each attack found on the old design, shipped as a hostile layer, is a FAIL or an error.

The hostile layers live in ``tests/fixtures/hostile/``. Each check of a user's layer runs the layer in a fresh
process forked for it (``convcheck.isolation``); the verdict is computed outside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convcheck.batch.local import run_batch
from convcheck.checker import run_check
from convcheck.data import make_data
from convcheck.exitcodes import ExitCode
from convcheck.isolation.check import isolated_check
from convcheck.isolation.remote import RemoteLayer
from convcheck.points import PointSample
from convcheck.results import CheckResult, FindingKind, Status
from convcheck.spec import Activation, CheckSpec, ConvShape, DType, ImplRef, Layout, Method, Signature

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork, prctl and /proc: Linux")

HOSTILE = Path(__file__).parent / "fixtures" / "hostile"
IMPLS = Path(__file__).parent / "fixtures" / "impls"
SHAPE = ConvShape(batch=2, in_height=5, in_width=6, in_depth=2, out_depth=3, filter_size=3, stride=1, padding=1)


def hostile(module: str, *, name: str | None = None, folder: Path = HOSTILE, **options: object) -> CheckSpec:
    ref = {key: options.pop(key) for key in ("forward", "backward", "signature") if key in options}
    impl = ImplRef(module, base_dir=folder, **ref)  # type: ignore[arg-type]
    return CheckSpec(name or module, SHAPE, impl=impl, timeout=60.0, **options)  # type: ignore[arg-type]


def by_name(results: tuple[CheckResult, ...]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


# -- the attacks ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("jobs", [1, 2])
def test_patching_the_judge_or_the_guard_in_user_code_changes_no_verdict(jobs):
    specs = [
        hostile("patches_judge.py"),
        hostile("patches_run_one.py"),
        hostile("wrong_db_keepdims.py", folder=IMPLS),  # after the patch, in the same worker: still a FAIL
        hostile("raises_backward.py", folder=IMPLS),  # and still an error
        hostile("good.py"),
    ]
    outcome = run_batch(specs, jobs=jobs, isolate=True)
    results = by_name(outcome.results)
    judged = results["patches_judge.py"]
    assert judged.status is Status.FAIL
    assert {g.name for g in judged.gradients if not g.passed} == {"input", "weights", "bias"}
    assert results["patches_run_one.py"].status is Status.FAIL
    assert results["wrong_db_keepdims.py"].status is Status.FAIL
    assert results["raises_backward.py"].status is Status.ERROR
    assert results["good.py"].status is Status.PASS


def test_in_one_process_the_patched_judge_would_buy_the_pass(monkeypatch):
    """The attack is real: run where the verdict is computed, the layer's patch makes its wrong gradients pass."""
    import convcheck.checker

    monkeypatch.setattr(convcheck.checker, "judge", convcheck.checker.judge)  # undone after the test
    spec = hostile("patches_judge.py", name="in-process")
    assert run_check(spec).status is Status.PASS
    monkeypatch.undo()
    assert isolated_check(spec).status is Status.FAIL


def test_a_forged_done_message_is_no_pass_and_the_next_check_is_not_blamed():
    outcome = run_batch([hostile("fake_done.py"), hostile("good.py")], jobs=1, isolate=True)
    forged, after = outcome.results
    assert forged.status in (Status.FAIL, Status.ERROR)
    assert forged.status is Status.ERROR or not all(g.passed for g in forged.gradients)
    assert after.status is Status.PASS, after.error


def test_a_forward_honest_only_at_the_first_point_fails_its_forward():
    result = isolated_check(hostile("first_point_only.py"))
    assert result.status is Status.FAIL
    assert result.forward is not None and not result.forward.ok
    assert any("not at forward call" in str(note) for note in result.notes)


def test_a_forward_that_reuses_its_output_array_is_found_in_its_own_process_too():
    isolated = isolated_check(hostile("reuses_output.py", folder=IMPLS))
    in_process = run_check(hostile("reuses_output.py", folder=IMPLS))
    for result in (isolated, in_process):
        assert result.status is Status.FAIL
        assert [f.kind for f in result.contract] == [FindingKind.OUTPUT_REUSED], result.contract


def test_the_point_audit_also_works_in_process():
    result = run_check(hostile("first_point_only.py"))
    assert result.status is Status.FAIL and not result.forward.ok


def test_an_exit_with_code_zero_is_an_error_row():
    outcome = run_batch([hostile("exits_zero.py"), hostile("good.py")], isolate=True)
    ended, after = outcome.results
    assert ended.status is Status.ERROR
    assert "exit code 0" in ended.error and "forward" in ended.error
    assert after.status is Status.PASS


def test_a_keyboard_interrupt_from_user_code_is_the_users_error_with_its_line():
    result = isolated_check(hostile("raises_keyboard_interrupt.py"))
    assert result.status is Status.ERROR
    assert "forward raised KeyboardInterrupt" in result.error
    assert "raises_keyboard_interrupt.py:5" in result.error


def test_closing_the_descriptors_is_the_users_error_with_its_line():
    result = isolated_check(hostile("closes_fds.py"))
    assert result.status is Status.ERROR
    assert "closed the file descriptor" in result.error
    assert "closes_fds.py:7" in result.error


def test_a_layer_over_its_memory_limit_is_an_error_row():
    result = isolated_check(hostile("allocates.py", max_memory=512 * 2**20))
    assert result.status is Status.ERROR
    assert "MemoryError" in result.error or "memory" in result.error
    assert "allocates.py" in result.error or "max_memory" in result.error


def children() -> set[int]:
    """Processes whose parent is this one (zombies included), from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                found.add(int(entry.name))
    return found


def test_no_process_outlives_its_check():
    before = children()
    for module in ("good.py", "exits_zero.py", "raises_keyboard_interrupt.py", "closes_fds.py"):
        isolated_check(hostile(module))
    assert children() <= before


def test_in_process_says_it_trusts_the_layer_and_a_layer_ending_the_process_is_no_green_run(tmp_path):
    config = tmp_path / "dies.yaml"
    config.write_text(
        f"impl: {HOSTILE / 'exits_zero.py'}\nbatch: 2\nin_height: 5\nin_width: 6\nin_depth: 2\nout_depth: 3\n"
        "filter_size: 3\npadding: 1\n"
    )
    json_path = tmp_path / "out.json"
    command = [sys.executable, "-m", "convcheck", "run", str(config), "--in-process", "--json", str(json_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == ExitCode.FAILED, done.stderr
    assert "trusted" in done.stderr and "ended before its summary (exit code 0)" in done.stderr
    isolated = subprocess.run(command[:-3] + ["--json", str(json_path)], capture_output=True, text=True, timeout=120)
    assert isolated.returncode == ExitCode.FAILED
    assert "crashed the worker process (exit code 0)" in json_path.read_text()


def test_in_process_keeps_the_exit_code_of_a_complete_run(tmp_path):
    config = tmp_path / "good.yaml"
    config.write_text(
        f"impl: {HOSTILE / 'good.py'}\nbatch: 2\nin_height: 5\nin_width: 6\nin_depth: 2\nout_depth: 3\n"
        "filter_size: 3\npadding: 1\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "convcheck", "run", str(config), "--in-process", "-q"], capture_output=True, timeout=120
    )
    assert done.returncode == ExitCode.OK, done.stderr


# -- honest layers: the same numbers as in one process ------------------------------------------------------------

HONEST = [
    hostile("good_nhwc.py", folder=IMPLS),
    hostile("good_nchw.py", folder=IMPLS, layout=Layout.NCHW),
    hostile(
        "good_cs231n.py",
        folder=IMPLS,
        activation=Activation.NONE,
        forward="conv_forward_naive",
        backward="conv_backward_naive",
        signature=Signature.CS231N,
    ),
    hostile("good_nhwc.py", name="float32", folder=IMPLS, dtype=DType.FLOAT32),
    hostile("good_nhwc.py", name="auto", folder=IMPLS, method=Method.AUTO),
    hostile("float32_grads.py", folder=IMPLS),
    hostile("flipped_kernel.py", folder=IMPLS),
    hostile("mutates_input.py", folder=IMPLS),
    hostile("mutates_cached_x.py", folder=IMPLS),
    hostile("mutates_dout.py", folder=IMPLS),
    hostile("global_state.py", folder=IMPLS),
    hostile("wrong_out_shape.py", folder=IMPLS),
    hostile("not_a_tuple.py", folder=IMPLS),
    hostile("raises_forward.py", folder=IMPLS),
]


def fingerprint(result: CheckResult) -> tuple[object, ...]:
    grads = tuple((g.name, g.passed, g.max_abs_error, g.max_rel_error, g.checked, g.kinks) for g in result.gradients)
    forward = None if result.forward is None else (result.forward.ok, result.forward.max_abs_error)
    return result.status, result.error, grads, forward, tuple(str(p) for p in result.contract)


@pytest.mark.parametrize("spec", HONEST, ids=lambda s: s.name)
def test_results_are_bit_identical_to_checking_in_process(spec):
    assert fingerprint(isolated_check(spec)) == fingerprint(run_check(spec))


def test_a_remote_layer_returns_the_users_arrays_bit_for_bit():
    spec = hostile("good_nhwc.py", folder=IMPLS)
    data = make_data(spec)
    remote = RemoteLayer(spec, None)
    try:
        out, cache = remote.forward(data.x, data.w, data.b)
        grads = remote.backward(data.dout, cache)
    finally:
        remote.close()
    from convcheck.user.loader import load_layer

    local = load_layer(spec)
    out_here, cache_here = local.forward(data.x, data.w, data.b)
    assert np.array_equal(out, out_here)
    for there, here in zip(grads, local.backward(data.dout, cache_here), strict=True):
        assert np.array_equal(there, here)


def test_the_point_sample_is_uniform_and_seeded():
    spec = hostile("good.py")
    counts = np.zeros(40)
    for seed in range(300):
        sample = PointSample(CheckSpec("s", SHAPE, seed=seed), size=4)
        for _ in range(40):
            sample.offer(np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1))
        for point in sample.points:
            counts[point.number - 1] += 1
    assert counts.sum() == 1200
    assert counts.min() > 10 and counts.max() < 60  # each call kept 30 times on average
    again = PointSample(spec), PointSample(spec)
    for sample in again:
        for _ in range(50):
            sample.offer(np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1))
    assert [p.number for p in again[0].points] == [p.number for p in again[1].points]


def test_the_sample_taken_in_two_steps_keeps_the_calls_offer_keeps():
    """``take`` then ``keep`` (a batch's outputs, whose arrays are built only when kept) is ``offer``."""
    spec = CheckSpec("s", SHAPE, seed=11)
    offered, taken = PointSample(spec), PointSample(spec)
    for call in range(60):
        arrays = [np.full(2, float(call)) for _ in range(4)]
        offered.offer(*arrays)
        slot = taken.take()
        if slot is not None:
            taken.keep(slot, *arrays)
    assert offered.calls == taken.calls == 60
    assert [p.number for p in offered.points] == [p.number for p in taken.points]
    assert [p.x.tolist() for p in offered.points] == [p.x.tolist() for p in taken.points]
    assert [p.number for p in offered.points] != [1, 2, 3]  # later calls replaced the first ones


@pytest.mark.skipif(os.geteuid() == 0, reason="root may read and write any process's memory and descriptors")
def test_the_layers_process_cannot_reach_the_memory_or_descriptors_of_the_worker_that_judges_it():
    outcome = run_batch([hostile("reaches_parent.py"), hostile("good.py")], jobs=1, isolate=True)
    reached, after = outcome.results
    assert reached.status is Status.ERROR and "reached=nothing" in reached.error, reached.error
    assert after.status is Status.PASS
