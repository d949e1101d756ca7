"""Shared test settings.

Hypothesis profiles: ``ci`` (the default) is derandomized, so every run tries the same examples and a red build
is reproducible; ``dev`` draws fresh examples each run (``HYPOTHESIS_PROFILE=dev pytest``) to hunt for new
counterexamples, which then get pinned with ``@example``. Neither has a deadline: a check's time depends on the
drawn geometry, not on a regression.
"""

from __future__ import annotations

import os

import pytest
from clocks import SteppingClock
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def deterministic_auto_clock(monkeypatch):
    """``auto`` chooses its method from timed forward calls; in tests each call takes 1 ms, so the choice depends
    on the geometry only, never on the machine's load."""
    from convcheck import methods

    monkeypatch.setattr(methods, "CLOCK", SteppingClock(1e-3))
