"""``--in-process``: the layer runs in convcheck's own process, so it is trusted; a process it ends is no green run.

In one process the layer can change any result and end the process at any moment (``os._exit(0)``: exit code 0,
no output). ``trusting`` says so, then forks: the child goes on with the run (same terminal, so a debugger works
as usual), and the parent only waits. After its summary, the child reports the exit code it chose over a pipe, and
the parent exits with that code; if the child ends without reporting one, the parent says that the run ended
before its summary and exits ``ExitCode.FAILED``. Signals sent to the parent are passed on to the child.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from convcheck.exitcodes import ExitCode

__all__ = ["TRUST_WARNING", "trusting"]

_NORMAL_EXIT = 0xFF

TRUST_WARNING = (
    "--in-process: the implementation runs inside convcheck's own process and is trusted: it can change any "
    "result or end the run. Use it to debug a layer, not to judge one."
)


def trusting(warn: Callable[[str], None]) -> Callable[[int], None]:
    """Warn (``warn(TRUST_WARNING)``), fork, and in the child return ``report(code)``: call it with the exit code
    just before exiting, once the summary is out. The parent never returns (it exits with the child's code).
    Where ``fork`` is missing, ``report`` does nothing."""
    warn(TRUST_WARNING)
    if not hasattr(os, "fork"):  # pragma: no cover - non-POSIX systems
        return lambda code: None
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        reporter = _Reporter(write_end)
        atexit.register(reporter.exiting)
        return reporter.report
    os.close(write_end)
    _wait(child, read_end)


class _Reporter:
    """The child's end of the pipe: the exit code after the summary, or ``_NORMAL_EXIT`` at interpreter exit
    (an exit through ``sys.exit``, whose status the parent then takes as it is)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.done = False

    def report(self, code: int) -> None:
        self._send(int(code) & 0x7F)

    def exiting(self) -> None:
        self._send(_NORMAL_EXIT)

    def _send(self, value: int) -> None:
        if self.done:
            return
        self.done = True
        with contextlib.suppress(OSError):
            os.write(self.fd, bytes([value]))
            os.close(self.fd)


def _wait(child: int, fd: int) -> NoReturn:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda number, _frame: _pass_on(child, number))
    reported = b""
    while True:
        try:
            data = os.read(fd, 16)
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
            continue
        if not data:
            break
        reported += data
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except ChildProcessError:
            status = 0
            break
    if reported and reported[0] != _NORMAL_EXIT:
        os._exit(reported[0])
    if reported and os.WIFEXITED(status):
        os._exit(os.WEXITSTATUS(status))
    how = f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit code {status >> 8}"
    sys.stderr.write(
        f"convcheck: the run ended before its summary ({how}): with --in-process the implementation runs in "
        "convcheck's own process, and it ended that process; the results are incomplete (run without "
        "--in-process to check the layer in a process of its own)\n"
    )
    sys.stderr.flush()
    os._exit(ExitCode.FAILED)


def _pass_on(child: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, signum)
