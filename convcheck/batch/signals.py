"""SIGINT, SIGTERM and SIGHUP during a run: stop the checks once, never the printing or writing of their results.

Ctrl-C, a CI job's cancel (SIGTERM) and a closed terminal (SIGHUP) all mean "stop and keep what you have". By
default Python turns only SIGINT into ``KeyboardInterrupt``, and SIGTERM and SIGHUP end the process on the spot:
no JSON, no JUnit, and workers left behind. Within ``handled()`` the three are alike:

- while checks run (in ``interrupting(batch)``), the first one raises ``KeyboardInterrupt`` where the run is (the
  executors turn it into a ``BatchOutcome`` with ``interrupted`` set, after stopping their workers);
- at any other moment (configs loading, results printing, files being written) it is only recorded, so the
  outputs are complete; a signal recorded before the checks start stops them as soon as they would;
- later signals are recorded only, so that stopping the workers is never interrupted in turn.

The caller exits with ``ExitCode.INTERRUPTED`` when ``received`` is set. Outside the main thread (where Python
cannot set handlers) nothing changes.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from convcheck.batch.outcome import BatchOutcome
from convcheck.spec import CheckSpec

__all__ = ["HANDLED", "Signals", "handled"]

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Signals:
    """What ``handled()`` yields: the first signal received (``received``) and the mode of the handler."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._raising = False
        self._raised = False

    @property
    def name(self) -> str:
        """``SIGTERM`` and so on; empty when nothing was received."""
        return self.received.name if self.received is not None else ""

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)
        if self._raising and not self._raised:
            self._raised = True
            raise KeyboardInterrupt

    def interrupting(self, batch: Callable[[], BatchOutcome], specs: Sequence[CheckSpec]) -> BatchOutcome:
        """``batch()`` with the first signal raising ``KeyboardInterrupt`` inside it (the executors turn that into
        an interrupted ``BatchOutcome``). A signal received before it started means no check runs; one that
        escapes it (arriving before or after the executor could catch it) is an interrupted outcome too, without
        results: the outputs are written either way."""
        unrun = BatchOutcome(results=(), interrupted=True, not_run=tuple(spec.name for spec in specs))
        if self.received is not None:
            return unrun
        self._raising = True
        try:
            return batch()
        except KeyboardInterrupt:
            return unrun
        finally:
            self._raising = False


@contextmanager
def handled() -> Iterator[Signals]:
    """Handle SIGINT, SIGTERM and SIGHUP as the module docstring says; the previous handlers come back after."""
    signals = Signals()
    if threading.current_thread() is not threading.main_thread():
        yield signals
        return
    previous = {signum: signal.signal(signum, signals.handle) for signum in HANDLED}
    try:
        yield signals
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
