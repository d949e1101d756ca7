"""How ``--jobs`` workers start: forked from a process that runs one thread (Linux), spawned otherwise, and
either way the same results, the same isolation (crashes, hangs, prints) and one BLAS thread each.

The fork path needs a single-threaded parent, which a test process may not be (pytest-xdist runs a thread of
its own), so those tests run their batch in a fresh interpreter (``in_fresh_process``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from convcheck.batch import local
from convcheck.exitcodes import ExitCode

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked on Linux only")

# Runs in a fresh interpreter: a batch of the fake checks of test_runner (every kind of fault) with --jobs 2, its
# workers started by the method named in argv[1] (``fork`` is only allowed there: one thread). Prints its rows.
BATCH = textwrap.dedent(
    """
    import json, sys
    from convcheck.batch import local
    from test_runner import fake_check, fakes, rows
    import test_runner
    test_runner.SET_IN_PARENT = "set before the workers started"  # a forked worker inherits it, a spawned one not
    method = sys.argv[1]
    local.start_method = lambda: method
    names = ["pass:a", "raise:", "crash:", "segfault:", "hang:", "print:", "fail:", "env:", "inherited:", "pass:b"]
    # Only the check that never returns gets a short timeout: a loaded machine must not time out the others.
    specs = [s if s.name == "hang:" else s.with_overrides(timeout=60.0) for s in fakes(*names, timeout=1.0)]
    outcome = local.run_batch(specs, jobs=2, check=fake_check)
    print(json.dumps({"rows": rows(outcome), "notes": [list(r.notes) for r in outcome.results]}))
    """
)


def in_fresh_process(method: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    done = subprocess.run(
        [sys.executable, "-c", BATCH, method], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@linux_only
def test_forked_workers_give_the_rows_spawned_ones_give_and_run_one_blas_thread():
    forked, spawned = in_fresh_process("fork"), in_fresh_process("spawn")
    assert forked["rows"] == spawned["rows"]
    statuses = [status for _, status, _ in forked["rows"]]
    assert statuses == ["pass", "error", "error", "error", "error", "pass", "fail", "pass", "pass", "pass"]
    by_name = {name: notes for (name, _, _), notes in zip(forked["rows"], forked["notes"], strict=True)}
    assert by_name["env:"] == ["1", "1"]  # BLAS variables of one thread, as in a spawned worker
    assert by_name["inherited:"][0] == "set before the workers started"  # these workers were forked
    assert spawned["notes"][8][0] == "not inherited"
    assert by_name["inherited:"][1] == "1"  # and BLAS loaded by the parent is held to one thread in them


def test_workers_are_spawned_while_another_thread_runs():
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert local.start_method() == "spawn"
    finally:
        stop.set()
        other.join()


@linux_only
def test_a_single_threaded_process_forks_its_workers():
    code = "from convcheck.batch import local; print(local.start_method())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "fork"


def test_workers_started_ahead_are_used_or_stopped():
    with local.start_workers(3, jobs=2) as workers:
        started = list(workers._idle)
        assert len(started) == 2 and all(w.process.is_alive() for w in started)
        taken = workers.take(2)
        assert taken == started  # the pool of 2 workers takes both
    assert all(w.process.is_alive() for w in taken)  # taken: run_batch stops them, not the block
    local._stop_all(taken)
    assert not any(w.process.is_alive() for w in taken)
    with local.start_workers(3, jobs=2) as workers:
        started = list(workers._idle)
        assert workers.take(1) == []  # a pool of one worker gives it every core: these have half each
    assert not any(w.process.is_alive() for w in started)
    with local.start_workers(1, jobs=2) as workers:  # one check runs in this process: no worker
        assert workers._idle == []


def test_a_sweeps_results_are_the_same_with_forked_workers_as_in_process(tmp_path):
    """``convcheck run`` (one thread when its workers start: forked) gives every number of ``--jobs 1``."""
    config = tmp_path / "sweep.yaml"
    config.write_text(
        "defaults: {method: full, seed: 3}\n"
        "checks:\n  - {name: s, batch: 2, in_height: 7, in_width: 6, in_depth: 2, out_depth: 3,\n"
        "     filter_size: [1, 3], stride: [1, 2], padding: 1, activation: [relu, tanh]}\n"
    )
    documents = []
    for jobs in ("1", "2"):
        command = [sys.executable, "-m", "convcheck", "run", str(config), "--json", "-", "--jobs", jobs]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
        assert done.returncode == ExitCode.OK, done.stderr[-2000:]
        documents.append(without_seconds(json.loads(done.stdout)))
    assert len(documents[0]["checks"]) == 8
    assert documents[0] == documents[1]


def without_seconds(value: object) -> object:
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_seconds(v) for v in value]
    return value
