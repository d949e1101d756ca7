"""Exit codes of the ``convcheck`` command (a contract: CI scripts branch on them).

4 and 5 are 0 and 1 with a report missing: the checks ran and have a verdict, but a file asked for (``--json``,
``--junit``, ``--plot``) could not be written. The verdict stays readable from the code (``code & 1`` is "a
check failed" for 0, 1, 4 and 5), and a CI step that only tests for 0 still fails, as it must without its report.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from convcheck.results import CheckResult


class ExitCode(IntEnum):
    OK = 0  # every check passed
    FAILED = 1  # at least one check failed, or its implementation raised / crashed / timed out
    INVALID = 2  # the command line or a config is invalid; nothing was run
    INTERNAL = 3  # a bug in convcheck itself (never a problem of the user's layer or config)
    OK_NOT_WRITTEN = 4  # every check passed, but an output file could not be written
    FAILED_NOT_WRITTEN = 5  # at least one check failed, and an output file could not be written
    INTERRUPTED = 130  # SIGINT (Ctrl-C), SIGTERM or SIGHUP: the results so far were printed and written

    @classmethod
    def for_results(
        cls, results: Sequence[CheckResult], not_run: Sequence[str] = (), *, written: bool = True
    ) -> ExitCode:
        """The verdict of ``results``: ``OK`` when every check ran and passed (or was skipped as its config
        expects), else ``FAILED``; ``written=False``: an output file could not be written (4 or 5)."""
        passed = not not_run and all(r.status.ok for r in results)
        if written:
            return cls.OK if passed else cls.FAILED
        return cls.OK_NOT_WRITTEN if passed else cls.FAILED_NOT_WRITTEN
