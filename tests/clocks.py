"""Clocks for tests of code that times itself (the ``auto`` method's cost estimate)."""

from __future__ import annotations


class SteppingClock:
    """A clock that advances by ``step`` seconds each time it is read: every timed forward call "takes" exactly
    ``step``, whatever the machine is doing."""

    def __init__(self, step: float) -> None:
        self.step, self.now = step, 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now
