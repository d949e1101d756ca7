"""Run a batch of checks on a Dask distributed cluster (``convcheck run --scheduler ADDRESS``).

One Dask task per check. Each task calls ``guard.run_one(spec, isolated_check)`` on a worker, as a ``--jobs``
worker does, so a check's result there is the result it gets locally: exceptions become the same ``error`` rows
with the same messages, timeouts give the same "timed out after N s", verdicts and diagnoses are identical, and so
is the exit code. The results come back in spec order, ``on_result`` sees them as they finish, and ``fail_fast``
keeps exactly the checks up to the first one (in spec order) that did not pass: the same ``BatchOutcome`` as
``local.run_batch`` (both use ``outcome.Tally``).

Isolation. The Dask worker process is the fork server of ``convcheck.isolation``: a user's layer runs in a fresh
process forked from it for that check alone, and the verdict is computed in the worker from the raw arrays the
layer returns, so a layer cannot patch convcheck, forge a result or leave state behind for the next task on that
worker. The worker is made non-dumpable (``guard.non_dumpable``), so the layer's process cannot reach its memory
through ``/proc``. A layer that ends its own process (``os._exit``, a segfault, its memory limit) is that check's
``error`` row, "the implementation crashed the worker process (…)", and the Dask worker lives on.

Timeouts on a worker. Dask runs tasks on executor threads, where ``run_one``'s ``SIGALRM`` timer cannot be set
(signals go to the main thread). The task therefore arms its own timer: a ``threading.Timer`` that, when the
check overruns, raises ``CheckTimeout`` in the task's thread through CPython's ``PyThreadState_SetAsyncExc``.
While a user's layer computes in its own process, the task's thread only waits for it, in short waits
(``isolation.session.WAKE_SECONDS``), so the exception is raised within a tenth of a second whatever the layer
does (a Python loop, ``time.sleep``, native code that never returns), and the layer's process is killed. Only
convcheck's own built-in layer runs in the task's thread, where a long BLAS call delays the exception until it
returns. (Without ``ctypes.pythonapi``, e.g. on PyPy, the timeout is not enforced and the result's notes say so,
as ``run_one`` does off the main thread.)

Crashes. A check that kills the worker process itself (convcheck's own layer running out of memory, the OOM
killer) is rescheduled by Dask onto another worker, up to the scheduler's ``distributed.scheduler.allowed-failures``
times (3 by default); then Dask gives up with ``KilledWorker``, which becomes that check's ``error`` row, "the
implementation crashed the worker process (…)", as with ``--jobs N``. The exit code is the same.

BLAS threads. Like ``--jobs N`` workers, a worker runs each check with one BLAS/OpenMP thread (Dask's nanny
already sets ``OPENBLAS_NUM_THREADS=1`` and friends before a worker starts; the task makes sure of it for workers
started otherwise, with ``parallel.hold_one_blas_thread``): parallelism comes from running many checks, one per
worker thread, not from threads inside a check. Run workers with ``--nthreads 1`` (one process per core): checks
then never share a process, as with ``--jobs N``.

Workers need convcheck (and numpy) installed, and every implementation a config names must be importable, or
its ``.py`` file present, at the same path, on every worker (a shared file system, or the same checkout).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import math
import threading
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from convcheck import parallel
from convcheck.batch.guard import CheckTimeout, describe_failure, non_dumpable, run_one, timeout_of
from convcheck.batch.outcome import BatchOutcome, ResultCallback, Tally, crash_message, error_result
from convcheck.isolation.check import isolated_check
from convcheck.results import CheckResult, NoteKind
from convcheck.spec import CheckSpec

if TYPE_CHECKING:
    from distributed import Client, Future

__all__ = ["CONNECT_TIMEOUT", "DistributedUnavailable", "run_distributed"]

#: Seconds to wait for the scheduler to answer before giving up (``run_distributed(connect_timeout=None)``).
CONNECT_TIMEOUT = 10.0


class DistributedUnavailable(Exception):  # noqa: N818 - "unavailable" says it; the CLI maps it to exit code 2
    """The checks cannot be sent to a Dask cluster: the ``dask`` extra is missing or the scheduler is unreachable.

    Raised before any check runs; its message is one paragraph for the user.
    """


# ----------------------------------------------------------------------------------------------------------------
# The client's side


def run_distributed(
    specs: Sequence[CheckSpec],
    address: str,
    *,
    fail_fast: bool = False,
    on_result: ResultCallback | None = None,
    connect_timeout: float | None = None,
) -> BatchOutcome:
    """Run every check in ``specs`` on the Dask cluster whose scheduler is at ``address``.

    The same contract as ``local.run_batch``: identical results, in spec order; see the module docstring for
    timeouts, crashes and what the workers need.

    Args:
        specs: the checks, in the order results are returned.
        address: the scheduler's address, e.g. ``tcp://10.0.0.5:8786`` or ``10.0.0.5:8786``.
        fail_fast: stop after the first check, in spec order, that does not pass (the checks after it are
            cancelled; the ones before it still run, so the results do not depend on the order of completion).
        on_result: called with ``(index, result)`` as each check finishes (completion order). An exception from it
            cancels the remaining checks and propagates.
        connect_timeout: seconds to wait for the scheduler; ``None`` means ``CONNECT_TIMEOUT``. Workers are not
            waited for: checks queue until workers join (an adaptive cluster starts them on demand).
    Returns:
        A ``BatchOutcome``: results in spec order; ``interrupted`` after a KeyboardInterrupt (the checks still
        queued are cancelled), ``stopped_early`` and ``not_run`` after ``fail_fast`` stopped the batch.
    Raises:
        DistributedUnavailable: Dask distributed is not installed, the address is invalid, or the scheduler did
            not answer within ``connect_timeout`` seconds. Nothing has run then.
    """
    specs = list(specs)
    client = _connect(address, CONNECT_TIMEOUT if connect_timeout is None else connect_timeout)
    try:
        return _Batch(client, Tally(specs, fail_fast, on_result)).run()
    finally:
        with contextlib.suppress(Exception):
            client.close(timeout=5)


def _connect(address: str, timeout: float) -> Client:
    try:
        from distributed import Client
    except ImportError as exc:
        raise DistributedUnavailable(
            f"--scheduler runs checks on a Dask distributed cluster, but Dask distributed is not installed here "
            f"({exc}); install the extra: pip install 'convcheck[dask]' (or run on this machine with --jobs N)."
        ) from None
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except ValueError as exc:
        raise DistributedUnavailable(
            f"{address!r} is not a Dask scheduler address ({exc}); give one like tcp://HOST:8786 "
            "(what `dask scheduler` prints as 'Scheduler at:')."
        ) from None
    except OSError as exc:  # connection refused or timed out: dask retries until the timeout, then says so
        raise DistributedUnavailable(
            f"could not reach the Dask scheduler at {address} within {timeout:g} s ({' '.join(str(exc).split())}); "
            "is `dask scheduler` running there, and is its port open from this machine? Nothing was run."
        ) from None


class _Batch:
    """The futures of one batch; what comes back goes to the ``Tally`` (the fail-fast rule of every executor)."""

    def __init__(self, client: Client, tally: Tally) -> None:
        self.client = client
        self.tally = tally
        self.specs = tally.specs
        self.futures: dict[int, Future] = {}  # the checks still wanted and not yet collected
        self.index_of: dict[Any, int] = {}  # a future's key -> the index of its spec

    def run(self) -> BatchOutcome:
        from distributed import as_completed

        interrupted = False
        try:
            if self.specs:
                self._submit()
                for future in as_completed(list(self.futures.values()), loop=self.client.loop):
                    self._collect(future)
                    if not self.futures:
                        break
        except KeyboardInterrupt:
            interrupted = True
        finally:
            self._cancel(list(self.futures))
        return self.tally.outcome(interrupted=interrupted)

    def _submit(self) -> None:
        batch = uuid.uuid4().hex[:12]  # keys unique on a scheduler shared by several runs and users
        keys = [f"convcheck-check-{batch}-{index}" for index in range(len(self.specs))]
        # Earlier checks first (higher priority): with fail_fast the checks before a failure are the ones needed.
        futures = [
            self.client.submit(_check_on_worker, spec, key=key, pure=False, priority=len(self.specs) - index)
            for index, (spec, key) in enumerate(zip(self.specs, keys, strict=True))
        ]
        self.futures = dict(enumerate(futures))
        self.index_of = {key: index for index, key in enumerate(keys)}

    def _collect(self, future: Future) -> None:
        index = self.index_of[future.key]
        if self.futures.pop(index, None) is None:  # cancelled by fail_fast since
            return
        result = _result_of(future, self.specs[index])
        future.release()  # the worker may drop its copy
        if self.tally.record(index, result):
            self._cancel([i for i in self.futures if not self.tally.wanted(i)])

    def _cancel(self, indices: list[int]) -> None:
        futures = [self.futures.pop(i) for i in indices]
        if futures:
            with contextlib.suppress(Exception):  # best effort: closing the client releases them anyway
                self.client.cancel(futures)


def _result_of(future: Future, spec: CheckSpec) -> CheckResult:
    """The check's result, or an ``error`` row for a worker that died running it or could not run it."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker as exc:
        deaths = getattr(exc, "allowed_failures", 0) + 1
        who = "the Dask worker running it died" if deaths == 1 else f"{deaths} Dask workers died running it in turn"
        return error_result(
            spec, 0.0, crash_message(f"{who}: a segfault, os._exit or out of memory?", own_process=False)
        )
    except concurrent.futures.CancelledError as exc:  # not by us: we never collect what we cancelled
        return error_result(spec, 0.0, f"the Dask cluster cancelled the check ({exc}); was it restarted meanwhile?")
    except Exception as exc:  # noqa: BLE001 - e.g. convcheck missing on the worker: that check's error row
        hint = " (is convcheck installed on every worker?)" if isinstance(exc, ImportError) else ""
        return error_result(spec, 0.0, f"the Dask worker could not run the check{hint}: {describe_failure(exc)}")


# ----------------------------------------------------------------------------------------------------------------
# The worker's side


def _check_on_worker(spec: CheckSpec) -> CheckResult:
    """A Dask task: ``guard.run_one(spec, isolated_check)`` with one BLAS thread and the check's timeout enforced."""
    parallel.hold_one_blas_thread()  # as in --jobs workers; once per worker process, for good
    non_dumpable()  # before the first fork: the layer's process must not reach this one's memory
    watched = threading.current_thread() is not threading.main_thread() and _ASYNC_EXC is not None
    try:
        result = run_one(spec, _Watched(timeout_of(spec)) if watched else check)
    except KeyboardInterrupt:  # run_one lets it through; on a worker it is this check's doing
        return error_result(spec, 0.0, "the check raised KeyboardInterrupt on the Dask worker")
    if watched:  # the task's own timer enforced the timeout that run_one could not
        notes = tuple(note for note in result.notes if note.kind is not NoteKind.TIMEOUT_NOT_ENFORCED)
        result = replace(result, notes=notes)
    return result


def _async_exc() -> Any:
    try:
        function = ctypes.pythonapi.PyThreadState_SetAsyncExc
    except (AttributeError, ValueError):  # pragma: no cover - no CPython C API (PyPy)
        return None
    function.restype = ctypes.c_int
    return function


_ASYNC_EXC = _async_exc()


class _Overrun(CheckTimeout):
    """Raised asynchronously in a task's thread when its check overruns (``run_one`` reports the timeout)."""

    def __init__(self) -> None:  # the C API raises the class itself: no arguments
        super().__init__(math.nan)


check = isolated_check  # what a task runs (a name of this module, so that a test may replace it)


class _Watched:
    """``check`` with a timer that raises ``_Overrun`` in the calling thread after ``seconds``.

    The timer sets the exception only while the check runs (under a lock), and whatever it set and was not yet
    raised is cleared before this returns, so that the exception can never go off in Dask's code afterwards.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, spec: CheckSpec) -> CheckResult:
        if not math.isfinite(self.seconds):
            return check(spec)
        thread = threading.get_ident()
        lock = threading.Lock()
        state = {"running": True, "fired": False}

        def fire() -> None:
            with lock:
                if state["running"]:
                    _ASYNC_EXC(ctypes.c_ulong(thread), ctypes.py_object(_Overrun))
                    state["fired"] = True

        timer = threading.Timer(self.seconds, fire)
        timer.daemon = True
        timer.start()
        try:
            return check(spec)
        finally:
            # If _Overrun goes off in here, it propagates to run_one as the timeout it is; either way nothing
            # is left pending once this block is done.
            timer.cancel()
            with lock:
                state["running"] = False
                if state["fired"]:
                    _ASYNC_EXC(ctypes.c_ulong(thread), None)  # clear it if not raised yet
