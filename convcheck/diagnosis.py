"""Diagnosis hints: read a failed check's error pattern and name the likely bug. (Being written.)"""

from __future__ import annotations

from convcheck.results import CheckResult


def diagnose(result: CheckResult) -> tuple[str, ...]:
    """Short hints, each naming a likely cause with its evidence; empty for a passing check."""
    del result
    return ()
