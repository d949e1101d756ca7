"""Run a batch of checks on this machine so that no check can take the batch down.

Every check runs under the guard (``guard.run_one``): its exceptions become its ``error`` row, its timeout is
enforced, and the batch goes on. Isolation depends on ``jobs``:

``jobs=1`` (in-process). The checks run one after another in this process. A crash (segfault, ``os._exit``)
ends the whole run, and code that never returns to the interpreter cannot be interrupted.

``jobs>=2`` or ``isolate`` (worker processes). Each worker runs checks one after another
under the same guard, so results are identical to ``jobs=1``. A worker never imports a user's code: it is the
fork server of ``convcheck.isolation``, which runs each check of a user's layer with the layer in a fresh process
forked for that check alone, and the verdict computed in the worker from the raw arrays the layer returns. The
parent watches every worker: one that is still busy ``KILL_GRACE`` after its timeout is killed (and its check
reported as timed out); one that dies becomes one ``error`` row, "the implementation crashed the worker process
(exit code …)", and a fresh worker takes its place. Workers ignore SIGINT, SIGTERM and SIGHUP (the parent stops
them) and die with the parent. They run with one BLAS thread (``parallel.one_blas_thread_environment``, and
``parallel.hold_one_blas_thread`` in a forked worker whose BLAS was loaded by the parent): ``jobs`` processes each
with one BLAS thread use the cores without oversubscribing them.

Workers are forked from this process where that is safe (``start_method``: Linux, and this process runs no other
thread, whose locks a fork would copy held), so that they start with convcheck and numpy already imported (a
spawned worker spends about a quarter of a second importing them); elsewhere they are spawned (a fresh
interpreter). Either way a worker has never run a user's code, nor has this process (``--impl`` is probed in a
process of its own). ``start_workers`` starts them before a batch, e.g. before a progress display's thread starts.

In both modes the user's writes to ``sys.stdout`` go to stderr while a check runs (in workers, file
descriptor 1 itself points at stderr), so that stdout carries results only (``--json -``).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from convcheck import parallel
from convcheck.batch import guard
from convcheck.batch.guard import run_one, timeout_of
from convcheck.batch.outcome import (
    BatchOutcome,
    CheckFunction,
    ResultCallback,
    Tally,
    crash_message,
    error_result,
    timeout_message,
)
from convcheck.checker import run_check
from convcheck.isolation.check import isolated_check
from convcheck.results import CheckResult
from convcheck.spec import CheckSpec

__all__ = ["KILL_GRACE", "Workers", "run_batch", "start_method", "start_workers"]

KILL_GRACE = 1.0  # seconds a worker may overrun its check's timeout before it is killed
_START_ALLOWANCE = 120.0  # seconds a worker may take to start up and begin its first check


def run_batch(
    specs: Sequence[CheckSpec],
    *,
    jobs: int = 1,
    fail_fast: bool = False,
    on_result: ResultCallback | None = None,
    check: CheckFunction | Sequence[CheckFunction] = run_check,
    isolate: bool = False,
    workers: Workers | None = None,
) -> BatchOutcome:
    """Run every check in ``specs``; see the module docstring for isolation and timeouts.

    Args:
        specs: the checks, in the order results are returned.
        jobs: 1 runs the checks in this process; N >= 2 runs them in N worker processes (at most one per
            check). Results (and so the exit code) do not depend on it, only the wall time does.
        fail_fast: stop after the first check, in spec order, that does not pass.
        on_result: called with ``(index, result)`` as each check finishes (completion order), e.g. for a
            progress display. An exception from it stops the batch and propagates (workers are cleaned up).
        check: the function that runs one check, or one such function per spec. With ``jobs >= 2`` it must be
            picklable (a module-level function, or an instance of a module-level class): workers import it by name.
        isolate: run in worker processes even when ``jobs`` is 1 (one worker), so that code that kills its
            process (a segfault, ``os._exit``) is one error row. The CLI sets it for user implementations.
        workers: worker processes already started for this batch (``start_workers``); those it does not use,
            and any it needs beyond them, are started and stopped as without it.
    Returns:
        A ``BatchOutcome``: results in spec order; ``interrupted`` after a KeyboardInterrupt.
    Raises:
        ValueError: ``jobs < 1``, ``check`` is a sequence of another length than ``specs``, or it cannot be
            sent to worker processes.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    specs = list(specs)
    checks = [check] * len(specs) if callable(check) else list(check)
    if len(checks) != len(specs):
        raise ValueError(f"one check function per spec: got {len(checks)} for {len(specs)} specs")
    if isolate or jobs > 1:  # a user's code in a fresh process per check, forked by the workers (``isolation``)
        checks = [isolated_check if c is run_check else c for c in checks]
    tally = Tally(specs, fail_fast, on_result)
    size = _pool_size(len(specs), jobs, isolate)
    if size == 0:
        return _run_here(tally, checks)
    for distinct in {id(c): c for c in checks}.values():
        try:
            pickle.dumps(distinct)
        except Exception as exc:  # noqa: BLE001 - any pickling failure means the same thing
            raise ValueError(f"check must be a module-level function to run in worker processes: {exc}") from exc
    started = workers.take(size) if workers is not None else []
    return _Pool(tally, checks, size, started).run()


def _pool_size(count: int, jobs: int, isolate: bool) -> int:
    """Worker processes for ``count`` checks (0: they run in this process)."""
    if count == 0 or (not isolate and (jobs == 1 or count <= 1)):
        return 0
    return min(jobs, count)


class Workers:
    """Worker processes started ahead of a batch (``start_workers``), each used by ``run_batch`` at most once."""

    def __init__(self, started: list[_Worker]) -> None:
        self._idle = started

    def take(self, count: int) -> list[_Worker]:
        """Up to ``count`` of the workers, still alive and of the share of cores a pool of ``count`` gives each;
        the others are stopped."""
        cores = _cores_each(count)
        taken = [w for w in self._idle if w.cores == cores and w.process.is_alive()][:count]
        self.stop(keep=taken)
        return taken

    def stop(self, keep: list[_Worker] | None = None) -> None:
        _stop_all([w for w in self._idle if w not in (keep or [])])
        self._idle = []


@contextmanager
def start_workers(count: int, *, jobs: int = 1, isolate: bool = False) -> Iterator[Workers]:
    """Start now the worker processes that ``run_batch`` of ``count`` checks with these ``jobs`` and ``isolate``
    will use (none if it runs them in this process), and stop any it left unused when the block ends.

    Starting them here rather than inside ``run_batch`` lets a caller fork them while this process still runs
    one thread (before a progress display starts its own; see ``start_method``)."""
    size = _pool_size(count, jobs, isolate)
    workers = Workers([_Worker(_cores_each(size)) for _ in range(size)])
    try:
        yield workers
    finally:
        workers.stop()


def start_method() -> str:
    """``fork`` where forking this process is safe, else ``spawn``.

    A fork copies only the thread that calls it: a lock another thread held at that moment (a stream's buffer, a
    progress display's) stays held in the child for ever, and the child would hang at its first write. So
    ``fork`` only on Linux (elsewhere system libraries are not fork-safe, and Python defaults to ``spawn``) and
    only while this process runs one thread. BLAS's own threads are not Python's: OpenBLAS stops them around a
    fork, and a forked worker holds BLAS to one thread itself."""
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return "fork"
    return "spawn"


def _cores_each(workers: int) -> int:
    return max(1, parallel.available_cores() // max(1, workers))


def _stop_all(workers: list[_Worker]) -> None:
    """Stop idle workers: every one is told first, so that they exit together rather than one after another."""
    for worker in workers:
        worker.tell_stop()
    for worker in workers:
        worker.stop()


def _run_here(tally: Tally, checks: list[CheckFunction]) -> BatchOutcome:
    try:
        for index, (spec, check) in enumerate(zip(tally.specs, checks, strict=True)):
            tally.record(index, run_one(spec, check))
            if tally.first_failure is not None:
                break
    except KeyboardInterrupt:
        return tally.outcome(interrupted=True)
    return tally.outcome(interrupted=False)


# ----------------------------------------------------------------------------------------------------------------
# Worker processes


def _worker_main(conn: multiprocessing.connection.Connection) -> None:
    """A worker: run the checks the parent sends, one at a time, until it sends None or goes away.

    Signals are the parent's to handle (it stops the workers); a worker dies with its parent, and a parent gone
    away ends it quietly.
    """
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    guard.die_with_parent()
    if "numpy" in sys.modules:  # forked from a parent that loaded BLAS with every core's threads
        parallel.hold_one_blas_thread()
    with contextlib.suppress(OSError):
        sys.stdout.flush()
        os.dup2(2, 1)  # the user's prints, even from C, never reach the parent's stdout
    with contextlib.suppress(EOFError, OSError):
        _serve(conn)


def _serve(conn: multiprocessing.connection.Connection) -> None:
    while True:
        message = conn.recv()
        if message is None:
            return
        index, spec, check = message
        conn.send(("start", index))
        result = run_one(spec, check)
        try:
            conn.send(("done", index, result))
        except (OSError, EOFError):
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a result that does not pickle
            unsent = error_result(spec, result.seconds, f"the result could not be sent back: {exc}")
            conn.send(("done", index, unsent))


class _Worker:
    """A worker process, its end of the pipe, and the check it is running."""

    def __init__(self, cores: int = 1) -> None:
        context: Any = multiprocessing.get_context(start_method())  # fork or spawn: the same Process API
        self.cores = cores
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(target=_worker_main, args=(child,), name="convcheck-worker")
        with parallel.one_blas_thread_environment(cores):  # the child inherits it (a spawned one before numpy loads)
            self.process.start()
        child.close()
        self.index: int | None = None
        self.spec: CheckSpec | None = None
        self.deadline = math.inf
        self.started = 0.0

    def assign(self, index: int, spec: CheckSpec, check: CheckFunction) -> None:
        self.conn.send((index, spec, check))
        self.index, self.spec = index, spec
        self.started = time.monotonic()
        self.deadline = self.started + _START_ALLOWANCE + timeout_of(spec) + KILL_GRACE

    def began(self) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + timeout_of(self.spec) + KILL_GRACE if self.spec else math.inf

    def elapsed(self) -> float:
        return time.monotonic() - self.started if self.started else 0.0

    def release(self) -> None:
        self.index, self.spec, self.deadline = None, None, math.inf

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()

    def tell_stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)

    def stop(self) -> None:
        self.tell_stop()  # a second None is harmless: the worker has returned at the first
        self.process.join(2)
        if self.process.is_alive():
            self.kill()
        else:
            self.conn.close()


class _Pool:
    """The parent's side of ``run_batch`` with worker processes (started once, reused across checks)."""

    def __init__(self, tally: Tally, checks: list[CheckFunction], workers: int, started: list[_Worker]) -> None:
        self.tally = tally
        self.checks = checks
        self.size = workers
        self.pending: deque[int] = deque(range(len(tally.specs)))
        self.workers: list[_Worker] = list(started)

    def run(self) -> BatchOutcome:
        interrupted = False
        try:
            self._loop()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            for worker in self.workers:
                if worker.index is not None:
                    worker.kill()
            _stop_all([w for w in self.workers if w.index is None])
            self.workers.clear()
        return self.tally.outcome(interrupted=interrupted)

    def _loop(self) -> None:
        while True:
            self._dispatch()
            busy = [w for w in self.workers if w.index is not None]
            if not busy:
                return
            wait = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            multiprocessing.connection.wait(
                [w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=min(wait, 3600.0)
            )
            for worker in busy:
                self._poll(worker)

    def _dispatch(self) -> None:
        while self.pending:
            idle = next((w for w in self.workers if w.index is None), None)
            if idle is None:
                if len(self.workers) >= self.size:
                    return
                idle = _Worker(_cores_each(self.size))
                self.workers.append(idle)
            index = self.pending.popleft()
            try:
                idle.assign(index, self.tally.specs[index], self.checks[index])
            except OSError:  # the idle worker died since its last check: replace it, try again
                self.pending.appendleft(index)
                self._replace(idle)

    def _poll(self, worker: _Worker) -> None:
        """Take what ``worker`` sent; report it as crashed when it died, as timed out when it overran."""
        index, spec = worker.index, worker.spec
        if index is None or spec is None:  # released meanwhile (fail_fast)
            return
        while worker.index is not None and self._readable(worker):
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                break
            if message[0] == "start":
                worker.began()
            else:
                worker.release()
                self._record(message[1], message[2])
        if worker.index is None:
            return
        if not worker.process.is_alive():
            worker.process.join(5)
            exitcode = worker.process.exitcode
            self._replace(worker)
            self._record(index, error_result(spec, worker.elapsed(), crash_message(_cause(exitcode), own_process=True)))
        elif time.monotonic() >= worker.deadline:
            self._replace(worker)
            self._record(index, error_result(spec, worker.elapsed(), timeout_message(timeout_of(spec))))

    @staticmethod
    def _readable(worker: _Worker) -> bool:
        try:
            return worker.conn.poll()
        except (EOFError, OSError):
            return False

    def _replace(self, worker: _Worker) -> None:
        """Drop a dead or hung worker; ``_dispatch`` starts a new one if checks remain."""
        worker.kill()
        worker.release()
        self.workers.remove(worker)

    def _record(self, index: int, result: CheckResult) -> None:
        if not self.tally.record(index, result):
            return
        self.pending = deque(i for i in self.pending if self.tally.wanted(i))
        for other in list(self.workers):
            if other.index is not None and not self.tally.wanted(other.index):
                self._replace(other)


def _cause(exitcode: int | None) -> str:
    """How a worker process ended, from its exit code (negative: the signal that killed it)."""
    if exitcode is None or exitcode >= 0:
        return f"exit code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    cause = f"killed by {name}, exit code {exitcode}"
    return cause + "; out of memory?" if name == "SIGKILL" else cause
