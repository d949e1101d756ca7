"""One check under the guard: whatever it raises becomes its error row, and it is stopped at its timeout.

``run_one`` runs ``check(spec)`` so that nothing a check does can take the batch down: a user's exception, a
broken import, ``MemoryError`` or a bug in convcheck becomes that check's ``error`` row with a one-paragraph
message (``describe_failure``), and a check that runs past its timeout (``spec.timeout``, else
``checker.DEFAULT_TIMEOUT``) is stopped and reported as "timed out after N s".

The timeout is a ``SIGALRM`` timer (main thread, POSIX only) whose handler raises ``CheckTimeout`` (a
``BaseException``, so a user's ``except Exception`` cannot swallow it). It interrupts Python code, including
loops in the user's code; code that never returns to the interpreter (a C extension spinning, SIGALRM blocked)
cannot be interrupted. Elsewhere (another thread) the timeout is not enforced, and the result carries a
``NoteKind.TIMEOUT_NOT_ENFORCED`` note saying so (the Dask executor, which enforces it its own way, removes it).

The user's writes to ``sys.stdout`` go to stderr while a check runs, so that stdout carries results only.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from convcheck import checker
from convcheck.batch.outcome import CheckFunction, error_result, timeout_message
from convcheck.checker import run_check
from convcheck.results import CheckResult, Note, NoteKind
from convcheck.spec import CheckSpec
from convcheck.user.errors import describe_exception

__all__ = [
    "UNENFORCED",
    "CheckTimeout",
    "describe_failure",
    "die_with_parent",
    "non_dumpable",
    "run_one",
    "timeout_of",
]

_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE = 1, 4  # prctl options (Linux)

#: The note of a check whose timeout could not be enforced where it ran.
UNENFORCED = Note(NoteKind.TIMEOUT_NOT_ENFORCED, "timeout not enforced: not in the main thread of a POSIX process")


class CheckTimeout(BaseException):  # noqa: N818 - it is an interruption, not an error a caller handles
    """Raised inside a check that ran past its timeout (by the SIGALRM handler of ``run_one``).

    Derives from ``BaseException`` so that a user's ``except Exception`` cannot swallow it; convcheck code
    must not catch ``BaseException`` either.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


def timeout_of(spec: CheckSpec) -> float:
    """Seconds allowed for ``spec``: its ``timeout``, else ``checker.DEFAULT_TIMEOUT``; ``inf`` for no limit."""
    seconds = spec.timeout if spec.timeout is not None else checker.DEFAULT_TIMEOUT
    return math.inf if seconds <= 0 else float(seconds)


def die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies (Linux; elsewhere nothing), so that no worker
    outlives a run that was killed; and make it non-dumpable, so that the user's code in the processes it forks
    cannot read or write its memory through ``/proc`` or attach a debugger to it (same user, no privileges)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    non_dumpable()


def non_dumpable() -> None:
    """Make this process non-dumpable (Linux; elsewhere nothing): the user's code in the processes it forks
    cannot read or write its memory through ``/proc`` or attach a debugger to it (same user, no privileges)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0)


def describe_failure(exc: BaseException) -> str:
    """One paragraph for a check that raised: the user's fault as its own message, anything else as what it is
    and where it happened (never a traceback)."""
    if isinstance(exc, CheckTimeout):
        return timeout_message(exc.seconds)
    return describe_exception(exc, located=True)


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
        return error_result(spec, time.perf_counter() - start, timeout_message(seconds))
    except BaseException as exc:  # noqa: BLE001 - the guard: anything a check raises becomes its error row
        return error_result(spec, time.perf_counter() - start, describe_failure(exc))
    if not isinstance(result, CheckResult):
        message = f"the check returned {type(result).__name__}, not a CheckResult"
        return error_result(spec, time.perf_counter() - start, message)
    if not enforced and math.isfinite(seconds):
        result = replace(result, notes=(*result.notes, UNENFORCED))
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
