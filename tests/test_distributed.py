"""``--scheduler``: checks on a Dask cluster give the results, order and exit codes of a local run.

A two-worker ``LocalCluster`` (processes, one thread each, as the docs recommend) serves the whole module; the
tests that need it are skipped when Dask distributed is not installed. The last test needs no Dask: without it,
``--scheduler`` exits 2 and says which extra to install.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convcheck.batch import dask as convcheck_distributed
from convcheck.batch.guard import CheckTimeout
from convcheck.batch.local import run_batch
from convcheck.batch.outcome import BatchOutcome
from convcheck.cli import app
from convcheck.config import load_configs
from convcheck.exitcodes import ExitCode
from convcheck.results import CheckResult, Status
from convcheck.spec import CheckSpec, ConvShape, ImplRef

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "impls"
ENV = {"NO_COLOR": "1", "COLUMNS": "160", "GITHUB_ACTIONS": "false"}
SHAPE = ConvShape(batch=2, in_height=5, in_width=6, in_depth=2, out_depth=3, filter_size=3, stride=1, padding=1)


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """The address of a two-worker cluster. A check that kills its worker is given up after two deaths, and a
    worker holds only the check it runs (saturation 1.0), so that a crash never takes an innocent check along.
    A result on a worker that has just died is asked for during 5 s, not Dask's 30 s, before Dask computes it
    again elsewhere."""
    pytest.importorskip("distributed")
    import dask
    from distributed import LocalCluster

    settings = {
        "distributed.scheduler.allowed-failures": 1,
        "distributed.scheduler.worker-saturation": 1.0,
        "distributed.comm.timeouts.connect": "5s",
    }
    with dask.config.set(settings):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
        try:
            yield cluster.scheduler_address
        finally:
            cluster.close()


def fixture_impl(module: str, *, name: str | None = None, timeout: float = 20.0) -> CheckSpec:
    return CheckSpec(name or module, SHAPE, impl=ImplRef(module, base_dir=FIXTURES), timeout=timeout)


def loaded(path: Path) -> list[CheckSpec]:
    load = load_configs([path])
    assert load.ok, load.errors
    return list(load.specs)


SMOKE = loaded(ROOT / "configs" / "smoke.yaml")[:3]
BUGGY = loaded(ROOT / "examples" / "buggy_col2im.yaml")  # dx wrong: fails
RAISES = fixture_impl("raises_backward.py")  # an error row with the user's file:line
HANGS = fixture_impl("hangs.py", timeout=1.0)  # a Python loop: stopped by the timeout on the worker too


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env=ENV)


def masked(note: str) -> str:
    """A note without the time estimate of ``method: auto`` (measured where the check ran)."""
    return re.sub(r"\([\d.e+-]+ ms per forward", "(… ms per forward", re.sub(r"about [\d.]+ s", "about … s", str(note)))


def rows(outcome: BatchOutcome) -> list[tuple[object, ...]]:
    """What must not depend on where a check ran (not its seconds; the auto method's time estimate masked)."""
    return [
        (
            r.name,
            r.status,
            tuple((g.name, g.passed, g.over_tolerance) for g in r.gradients),
            r.forward.ok if r.forward else None,
            len(r.contract),
            r.error,
            tuple(masked(str(note)) for note in r.notes),
        )
        for r in outcome.results
    ]


def test_the_worker_timeout_never_goes_off_after_the_check(monkeypatch):
    """Checks that end just before, at and after their timeout: each either returns or is stopped inside the
    guard, and nothing is left pending to go off in the caller's code later (Dask's code, on a worker)."""
    timeout = 0.01  # the timer needs the GIL, which the busy check gives up every 5 ms (sys.getswitchinterval)

    def busy(spec: CheckSpec) -> CheckResult:
        end = time.perf_counter() + timeout * (0.5 + (int(spec.name) % 20) / 10)  # 0.5 to 2.4 timeouts
        while time.perf_counter() < end:
            pass
        return CheckResult(spec.name, Status.PASS, spec, 0.0)

    monkeypatch.setattr(convcheck_distributed, "check", busy)
    outcomes: list[str] = []

    def in_a_worker_thread() -> None:
        for n in range(60):
            try:
                convcheck_distributed._Watched(timeout)(CheckSpec(str(n), SHAPE))
                outcomes.append("returned")
            except CheckTimeout:
                outcomes.append("stopped")
            end = time.perf_counter() + 2 * timeout  # where a stray exception would go off
            while time.perf_counter() < end:
                pass
        outcomes.append("clean")

    thread = threading.Thread(target=in_a_worker_thread)
    thread.start()
    thread.join(30)
    assert outcomes[-1] == "clean" and len(outcomes) == 61
    assert {"returned", "stopped"} <= set(outcomes)


# Before the cluster starts: this test hides the distributed module from the whole process for a moment.
def test_without_dask_the_scheduler_option_exits_2_and_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` now raises ImportError
    result = invoke("run", str(ROOT / "configs" / "smoke.yaml"), "--scheduler", "tcp://127.0.0.1:8786")
    assert result.exit_code == ExitCode.INVALID
    message = " ".join(result.stderr.split())
    assert "Dask distributed is not installed" in message
    assert "pip install 'convcheck[dask]'" in message
    assert result.stdout == ""


def test_results_match_a_local_run_in_spec_order(scheduler):
    specs = [*SMOKE, *BUGGY, RAISES, HANGS]
    seen: list[int] = []
    remote = convcheck_distributed.run_distributed(specs, scheduler, on_result=lambda i, r: seen.append(i))
    local = run_batch(specs, jobs=1)
    assert sorted(seen) == list(range(len(specs)))
    assert all(isinstance(r, CheckResult) for r in remote.results)
    assert rows(remote) == rows(local)
    assert [r.status for r in remote.results] == [Status.PASS] * 3 + [Status.FAIL, Status.ERROR, Status.ERROR]
    assert remote.results[-1].error.startswith("timed out after 1 s")
    assert not remote.interrupted and not remote.stopped_early and not remote.not_run


def test_a_layer_that_kills_its_process_is_one_error_row_and_no_dask_worker_dies(scheduler):
    from distributed import Client

    with Client(scheduler, set_as_default=False) as client:
        before = set(client.scheduler_info()["workers"])
    specs = [fixture_impl("crash_exit.py"), fixture_impl("good_nhwc.py", name="after")]
    outcome = convcheck_distributed.run_distributed(specs, scheduler)
    crash, after = outcome.results
    assert crash.status is Status.ERROR
    assert crash.error.startswith("the implementation crashed the worker process (")
    assert "the check ran in its own process" in crash.error
    assert after.status is Status.PASS
    with Client(scheduler, set_as_default=False) as client:
        assert set(client.scheduler_info()["workers"]) == before  # the same two workers, none restarted


def test_a_layer_stuck_where_python_cannot_interrupt_it_is_stopped_at_its_timeout(scheduler):
    """On a Dask worker the timeout is an exception raised in the task's thread; the layer's own process is
    killed, so even a layer that never returns to the interpreter cannot keep the worker busy."""
    specs = [fixture_impl("hangs_uninterruptible.py", timeout=1.0), fixture_impl("good_nhwc.py", name="after")]
    stuck, after = convcheck_distributed.run_distributed(specs, scheduler).results  # returns: the task returned
    assert stuck.status is Status.ERROR and stuck.error.startswith("timed out after 1 s")
    assert after.status is Status.PASS


HOSTILE = ROOT / "tests" / "fixtures" / "hostile"


def hostile(module: str, folder: Path = HOSTILE) -> CheckSpec:
    return CheckSpec(module, SHAPE, impl=ImplRef(module, base_dir=folder), timeout=30.0)


def test_hostile_layers_buy_no_pass_on_a_dask_worker(scheduler):
    """Each layer runs in a process forked for its check from the Dask worker, which computes the verdict: a
    layer that patches convcheck's judge or guard, forges a result on its channel, or is honest only at the first
    point it is called at, fails; the checks after it on the same workers are judged as if it never ran."""
    specs = [
        hostile("patches_judge.py"),
        hostile("patches_run_one.py"),
        hostile("fake_done.py"),
        hostile("first_point_only.py"),
        hostile("exits_zero.py"),
        *(hostile("wrong_db_keepdims.py", folder=FIXTURES) for _ in range(2)),  # after the patches, on both workers
        *(hostile("good.py") for _ in range(2)),
    ]
    results = convcheck_distributed.run_distributed(specs, scheduler).results
    statuses = [r.status for r in results]
    assert statuses[:5] == [Status.FAIL, Status.FAIL, Status.ERROR, Status.FAIL, Status.ERROR], [
        (r.name, r.status, r.error) for r in results
    ]
    assert statuses[5:] == [Status.FAIL, Status.FAIL, Status.PASS, Status.PASS]
    judged = results[0]
    assert {g.name for g in judged.gradients if not g.passed} == {"input", "weights", "bias"}
    local = run_batch(specs, jobs=1, isolate=True)
    assert rows(convcheck_distributed.run_distributed(specs, scheduler)) == rows(local)


def test_fail_fast_keeps_exactly_the_checks_up_to_the_first_failure(scheduler):
    specs = [*SMOKE[:2], *BUGGY, SMOKE[2], RAISES]
    remote = convcheck_distributed.run_distributed(specs, scheduler, fail_fast=True)
    local = run_batch(specs, jobs=1, fail_fast=True)
    assert rows(remote) == rows(local)
    assert [r.name for r in remote.results] == [s.name for s in specs[:3]]
    assert remote.stopped_early and remote.not_run == (SMOKE[2].name, RAISES.name)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_cancels_the_rest_and_returns_the_results_so_far(scheduler):
    timers = []

    def press_ctrl_c_soon(index, result):  # once the first result is in, while the hangs still run
        timers.append(threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)))
        timers[-1].start()

    specs = [SMOKE[0], *(fixture_impl("hangs.py", name=f"slow-{i}", timeout=2.0) for i in (1, 2))]
    try:
        outcome = convcheck_distributed.run_distributed(specs, scheduler, on_result=press_ctrl_c_soon)
    finally:
        for timer in timers:
            timer.cancel()
    assert outcome.interrupted
    assert [r.name for r in outcome.results] == [SMOKE[0].name]
    assert outcome.not_run == ("slow-1", "slow-2")


# -- the command ------------------------------------------------------------------------------------------------


def verdicts(document: dict) -> list[tuple[object, ...]]:
    """What the JSON says of each check, short of its timings and the floating-point values of its errors."""
    return [
        (
            check["name"],
            check["status"],
            check["error"],
            check["method"],
            check["forward_passes"],
            {
                name: (g["passed"], g["checked"], g["over_tolerance"], g["kinks"])
                for name, g in check["gradients"].items()
            },
            check["diagnosis"],
            [masked(note) for note in check["notes"]],
        )
        for check in document["checks"]
    ]


@pytest.mark.parametrize(
    ("config", "exit_code"),
    [(ROOT / "configs" / "smoke.yaml", ExitCode.OK), (ROOT / "examples" / "buggy_col2im.yaml", ExitCode.FAILED)],
)
def test_cli_json_and_exit_code_are_those_of_a_local_run(scheduler, config, exit_code):
    remote = invoke("run", str(config), "--scheduler", scheduler, "--json", "-")
    local = invoke("run", str(config), "--json", "-")
    assert (remote.exit_code, local.exit_code) == (exit_code, exit_code), remote.stderr
    remote_document, local_document = json.loads(remote.stdout), json.loads(local.stdout)
    assert verdicts(remote_document) == verdicts(local_document)
    assert remote_document["summary"] == local_document["summary"]


@pytest.mark.parametrize(
    ("address", "expected"),
    [("tcp://127.0.0.1:1", "could not reach the Dask scheduler at tcp://127.0.0.1:1 within 0.5 s"),
     ("no port here", "'no port here' is not a Dask scheduler address")],
)  # fmt: skip
def test_an_unreachable_scheduler_exits_2_naming_the_address(monkeypatch, address, expected):
    pytest.importorskip("distributed")
    monkeypatch.setattr(convcheck_distributed, "CONNECT_TIMEOUT", 0.5)
    result = invoke("run", str(ROOT / "configs" / "smoke.yaml"), "--scheduler", address, "--json", "-")
    assert result.exit_code == ExitCode.INVALID
    assert expected in " ".join(result.stderr.split())
    assert result.stdout == "" and "Traceback" not in result.stderr
