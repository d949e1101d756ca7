"""Exit codes of the ``convcheck`` command (a contract: CI scripts branch on them)."""

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
    INTERRUPTED = 130  # SIGINT (Ctrl-C), SIGTERM or SIGHUP: the results so far were printed and written

    @classmethod
    def for_results(cls, results: Sequence[CheckResult]) -> ExitCode:
        return cls.OK if all(r.passed for r in results) else cls.FAILED
