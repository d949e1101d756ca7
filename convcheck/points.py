"""The forward, audited where it was not inspected: a random sample of every point a user's layer was called at.

The forward check compares the layer with the reference convolution at the check's point. A layer can be
honest there and nowhere else: one that returns ``f(θ₀) + 2·(conv(θ) − conv(θ₀))`` passes that comparison, and
its gradients, twice the truth, agree with the differences of its own forward. So every forward call of a user's
layer is offered to a ``PointSample``, which keeps a seeded uniform sample of ``AUDIT_POINTS`` calls (reservoir
sampling: every call equally likely, whatever their number, without knowing it in advance), and the check
compares the layer's outputs at those points with the reference as well. The layer cannot tell which calls are
kept; a forward wrong at a fraction ``f`` of its calls escapes with probability about ``(1 − f)^AUDIT_POINTS``.
"""

from __future__ import annotations

import numpy as np

from convcheck.spec import CheckSpec

__all__ = ["AUDIT_POINTS", "Point", "PointSample"]

AUDIT_POINTS = 3  # forward calls compared with the reference per check (each costs one reference convolution)
_STREAM = 0x5EED_A0D1  # mixed with the check's seed: the sample's own random stream


class Point:
    """One kept forward call: its arguments and output (NHWC copies) and its number among the calls (from 1)."""

    def __init__(self, number: int, x: np.ndarray, w: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        self.number = number
        self.x, self.w, self.b, self.out = (np.array(a, copy=True) for a in (x, w, b, out))


class PointSample:
    """A seeded reservoir of ``size`` forward calls (see the module docstring)."""

    def __init__(self, spec: CheckSpec, size: int = AUDIT_POINTS) -> None:
        self.rng = np.random.default_rng([_STREAM, spec.seed])
        self.size = size
        self.calls = 0
        self.points: list[Point] = []

    def offer(self, x: np.ndarray, w: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        slot = self.take()
        if slot is not None:
            self.keep(slot, x, w, b, out)

    def take(self) -> int | None:
        """Count one call and draw whether it is kept: the slot to ``keep`` it in, or None. (``offer`` in two
        steps, for a caller that builds a call's arrays only when they are kept.)"""
        self.calls += 1
        if len(self.points) < self.size:
            return len(self.points)
        slot = int(self.rng.integers(self.calls))
        return slot if slot < self.size else None

    def keep(self, slot: int, x: np.ndarray, w: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        """Keep the call ``take`` just counted (copies of its arrays) in ``slot``."""
        point = Point(self.calls, x, w, b, out)
        if slot == len(self.points):
            self.points.append(point)
        else:
            self.points[slot] = point
