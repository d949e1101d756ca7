"""Run a batch of checks so that no check can take the batch down.

Every check runs under a guard (``run_one``): whatever it raises (a user's exception, a broken import,
``MemoryError``, a bug in convcheck) becomes that check's ``error`` row with a one-paragraph message, and a
check that runs past its timeout (``spec.timeout``, else ``checker.DEFAULT_TIMEOUT``) is stopped and reported
as "timed out after N s". The batch goes on.

Isolation depends on ``jobs``:

``jobs=1`` (in-process). The timeout is a ``SIGALRM`` timer (main thread, POSIX only) whose handler raises
``CheckTimeout`` (a ``BaseException``, so a user's ``except Exception`` cannot swallow it). It interrupts
Python code, including loops in the user's code; code that never returns to the interpreter (a C extension
spinning, SIGALRM blocked) cannot be interrupted, and a crash (segfault, ``os._exit``) ends the whole run.

``jobs>=2`` (worker processes, ``spawn`` context). Each worker runs checks one after another under the same
guard, so results are identical to ``jobs=1``. In addition the parent watches every worker: one that is still
busy ``KILL_GRACE`` after its timeout is killed (and its check reported as timed out); one that dies
(segfault, ``os._exit``, the kernel's OOM killer) becomes one ``error`` row, "the implementation crashed the
worker process (exit code …)", and a fresh worker takes its place. Workers get ``OPENBLAS_NUM_THREADS``,
``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` = 1 before numpy loads in them: ``jobs`` processes each with one
BLAS thread use the cores without oversubscribing them.

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from convcheck import checker
from convcheck.checker import run_check
from convcheck.results import CheckResult, Status
from convcheck.spec import CheckSpec
from convcheck.user.errors import describe_exception

__all__ = [
    "BLAS_THREAD_VARIABLES",
    "KILL_GRACE",
    "BatchOutcome",
    "CheckFunction",
    "CheckTimeout",
    "ResultCallback",
    "describe_failure",
    "error_result",
    "run_batch",
    "run_one",
    "timeout_of",
]

CheckFunction = Callable[[CheckSpec], CheckResult]
ResultCallback = Callable[[int, CheckResult], None]  # (index of the spec, its result), in completion order

BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
KILL_GRACE = 1.0  # seconds a worker may overrun its check's timeout before it is killed
_START_ALLOWANCE = 120.0  # seconds a worker may take to start up and begin its first check
_ENV_LOCK = threading.Lock()


class CheckTimeout(BaseException):  # noqa: N818 - it is an interruption, not an error a caller handles
    """Raised inside a check that ran past its timeout (by the SIGALRM handler of ``run_one``).

    Derives from ``BaseException`` so that a user's ``except Exception`` cannot swallow it; convcheck code
    must not catch ``BaseException`` either.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


@dataclass(frozen=True)
class BatchOutcome:
    """The results of a batch, in spec order.

    ``results`` holds one result per check that ran. All checks ran unless ``interrupted`` (KeyboardInterrupt:
    the results so far) or ``stopped_early`` (``fail_fast``: every check up to the first one, in spec order,
    that did not pass; the same set whatever ``jobs`` is). ``not_run`` names the checks that did not run.
    """

    results: tuple[CheckResult, ...]
    interrupted: bool = False
    stopped_early: bool = False
    not_run: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """True when every check ran and passed."""
        return not self.interrupted and not self.not_run and all(r.status is Status.PASS for r in self.results)


def timeout_of(spec: CheckSpec) -> float:
    """Seconds allowed for ``spec``: its ``timeout``, else ``checker.DEFAULT_TIMEOUT``; ``inf`` for no limit."""
    seconds = spec.timeout if spec.timeout is not None else checker.DEFAULT_TIMEOUT
    return math.inf if seconds <= 0 else float(seconds)


def error_result(spec: CheckSpec, message: str, seconds: float = 0.0) -> CheckResult:
    """A result with status ``error`` for a check that could not run to its end."""
    return CheckResult(name=spec.name, status=Status.ERROR, spec=spec, seconds=seconds, error=message)


def describe_failure(exc: BaseException) -> str:
    """One paragraph for a check that raised: the user's fault as its own message, anything else as what it is
    and where it happened (never a traceback)."""
    if isinstance(exc, CheckTimeout):
        return _timeout_message(exc.seconds)
    return describe_exception(exc, located=True)


def _timeout_message(seconds: float) -> str:
    return (
        f"timed out after {seconds:g} s: the implementation did not finish within the check's timeout "
        "(raise it with timeout: in the config)"
    )


# ----------------------------------------------------------------------------------------------------------------
# One check, in this process


def run_one(spec: CheckSpec, check: CheckFunction = run_check) -> CheckResult:
    """Run ``check(spec)`` under the guard: never raises except ``KeyboardInterrupt``.

    Exceptions become an ``error`` result (``describe_failure``); the check is interrupted after
    ``timeout_of(spec)`` seconds when this runs in the main thread of a POSIX process (elsewhere the timeout is
    not enforced, and the result says so in its notes). The user's ``print`` goes to stderr meanwhile.
    """
    start = time.perf_counter()
    seconds = timeout_of(spec)
    enforced = True
    try:
        with contextlib.redirect_stdout(sys.stderr), _alarm(seconds) as enforced:
            result = check(spec)
    except KeyboardInterrupt:
        raise
    except CheckTimeout:
        return error_result(spec, _timeout_message(seconds), time.perf_counter() - start)
    except BaseException as exc:  # noqa: BLE001 - the guard: anything a check raises becomes its error row
        return error_result(spec, describe_failure(exc), time.perf_counter() - start)
    if not isinstance(result, CheckResult):
        return error_result(
            spec, f"the check returned {type(result).__name__}, not a CheckResult", time.perf_counter() - start
        )
    if not enforced and math.isfinite(seconds):
        result = replace(
            result, notes=(*result.notes, "timeout not enforced: not in the main thread of a POSIX process")
        )
    return result


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[bool]:
    """Raise ``CheckTimeout`` in the main thread after ``seconds``; yields whether the timer could be set."""
    usable = (
        math.isfinite(seconds)
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield False
        return
    armed = True

    def on_alarm(signum: int, frame: Any) -> None:
        if armed:
            raise CheckTimeout(seconds)

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_timer = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield True
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_timer[0] > 0:  # someone else's timer was running: give it back what is left of it
            signal.setitimer(signal.ITIMER_REAL, max(previous_timer[0] - (time.monotonic() - started), 1e-3))


# ----------------------------------------------------------------------------------------------------------------
# A batch


def run_batch(
    specs: Sequence[CheckSpec],
    *,
    jobs: int = 1,
    fail_fast: bool = False,
    on_result: ResultCallback | None = None,
    check: CheckFunction = run_check,
    isolate: bool = False,
) -> BatchOutcome:
    """Run every check in ``specs``; see the module docstring for isolation and timeouts.

    Args:
        specs: the checks, in the order results are returned.
        jobs: 1 runs the checks in this process; N >= 2 runs them in N worker processes (at most one per
            check). Results (and so the exit code) do not depend on it, only the wall time does.
        fail_fast: stop after the first check, in spec order, that does not pass.
        on_result: called with ``(index, result)`` as each check finishes (completion order), e.g. for a
            progress display. An exception from it stops the batch and propagates (workers are cleaned up).
        check: the function that runs one check. With ``jobs >= 2`` it must be picklable (a module-level
            function): workers import it by name.
        isolate: run in worker processes even when ``jobs`` is 1 (one worker), so that code that kills its
            process (a segfault, ``os._exit``) is one error row. The CLI sets it for user implementations.
    Returns:
        A ``BatchOutcome``: results in spec order; ``interrupted`` after a KeyboardInterrupt.
    Raises:
        ValueError: ``jobs < 1``, or ``check`` cannot be sent to worker processes.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    specs = list(specs)
    if not specs or (not isolate and (jobs == 1 or len(specs) <= 1)):
        return _run_here(specs, fail_fast, on_result, check)
    try:
        pickle.dumps(check)
    except Exception as exc:  # noqa: BLE001 - any pickling failure means the same thing
        raise ValueError(f"check must be a module-level function to run in worker processes: {exc}") from exc
    return _Pool(specs, min(jobs, len(specs)), fail_fast, on_result, check).run()


def _run_here(
    specs: list[CheckSpec], fail_fast: bool, on_result: ResultCallback | None, check: CheckFunction
) -> BatchOutcome:
    results: list[CheckResult] = []
    try:
        for index, spec in enumerate(specs):
            result = run_one(spec, check)
            results.append(result)
            if on_result is not None:
                on_result(index, result)
            if fail_fast and result.status is not Status.PASS:
                break
    except KeyboardInterrupt:
        return _outcome(specs, dict(enumerate(results)), interrupted=True, stopped_early=False)
    stopped = len(results) < len(specs)
    return _outcome(specs, dict(enumerate(results)), interrupted=False, stopped_early=stopped)


def _outcome(
    specs: list[CheckSpec], results: dict[int, CheckResult], *, interrupted: bool, stopped_early: bool
) -> BatchOutcome:
    return BatchOutcome(
        results=tuple(results[i] for i in sorted(results)),
        interrupted=interrupted,
        stopped_early=stopped_early,
        not_run=tuple(spec.name for i, spec in enumerate(specs) if i not in results),
    )


# ----------------------------------------------------------------------------------------------------------------
# Worker processes


def _worker_main(conn: multiprocessing.connection.Connection) -> None:
    """A worker: run the checks the parent sends, one at a time, until it sends None or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    with contextlib.suppress(OSError):
        sys.stdout.flush()
        os.dup2(2, 1)  # the user's prints, even from C, never reach the parent's stdout
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, spec, check = message
        conn.send(("start", index))
        result = run_one(spec, check)
        try:
            conn.send(("done", index, result))
        except Exception as exc:  # noqa: BLE001 - e.g. a result that does not pickle
            conn.send(("done", index, error_result(spec, f"the result could not be sent back: {exc}", result.seconds)))


@contextlib.contextmanager
def _worker_environment() -> Iterator[None]:
    """One BLAS/OpenMP thread per worker: set while a worker starts (it inherits the environment)."""
    with _ENV_LOCK:
        saved = {name: os.environ.get(name) for name in BLAS_THREAD_VARIABLES}
        os.environ.update(dict.fromkeys(BLAS_THREAD_VARIABLES, "1"))
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


class _Worker:
    """A worker process, its end of the pipe, and the check it is running."""

    def __init__(self, context: Any) -> None:
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(target=_worker_main, args=(child,), name="convcheck-worker")
        with _worker_environment():
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

    def release(self) -> None:
        self.index, self.spec, self.deadline = None, None, math.inf

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
        self.process.join(2)
        if self.process.is_alive():
            self.kill()
        else:
            self.conn.close()


class _Pool:
    """The parent's side of ``run_batch`` with worker processes (started once, reused across checks)."""

    def __init__(
        self,
        specs: list[CheckSpec],
        workers: int,
        fail_fast: bool,
        on_result: ResultCallback | None,
        check: CheckFunction,
    ) -> None:
        self.specs = specs
        self.size = workers
        self.fail_fast = fail_fast
        self.on_result = on_result
        self.check = check
        self.context = multiprocessing.get_context("spawn")
        self.pending: deque[int] = deque(range(len(specs)))
        self.results: dict[int, CheckResult] = {}
        self.workers: list[_Worker] = []
        self.first_failure: int | None = None  # fail_fast: the smallest index that did not pass

    def run(self) -> BatchOutcome:
        interrupted = False
        try:
            self._loop()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            for worker in self.workers:
                if worker.index is None:
                    worker.stop()
                else:
                    worker.kill()
            self.workers.clear()
        results = self.results
        if self.first_failure is not None:
            results = {i: r for i, r in results.items() if i <= self.first_failure}
        stopped = not interrupted and self.first_failure is not None and len(results) < len(self.specs)
        return _outcome(self.specs, results, interrupted=interrupted, stopped_early=stopped)

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
                idle = _Worker(self.context)
                self.workers.append(idle)
            index = self.pending.popleft()
            try:
                idle.assign(index, self.specs[index], self.check)
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
            self._record(index, error_result(spec, _crash_message(exitcode), _elapsed(worker)))
        elif time.monotonic() >= worker.deadline:
            self._replace(worker)
            self._record(index, error_result(spec, _timeout_message(timeout_of(spec)), _elapsed(worker)))

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
        self.results[index] = result
        if self.on_result is not None:
            self.on_result(index, result)
        if self.fail_fast and result.status is not Status.PASS:
            if self.first_failure is None or index < self.first_failure:
                self.first_failure = index
            # Checks after the first failure are not needed; earlier ones still run, so that the results are
            # the same as with jobs=1.
            self.pending = deque(i for i in self.pending if i < self.first_failure)
            for other in list(self.workers):
                if other.index is not None and other.index > self.first_failure:
                    self._replace(other)


def _elapsed(worker: _Worker) -> float:
    return time.monotonic() - worker.started if worker.started else 0.0


def _crash_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        cause = f"killed by {name}, exit code {exitcode}"
        if name == "SIGKILL":
            cause += "; out of memory?"
    else:
        cause = f"exit code {exitcode}"
    return (
        f"the implementation crashed the worker process ({cause}); the check ran in its own process, so the "
        "other checks were not affected"
    )
