"""Forward mistakes: backward consistent with its own wrong forward, so only the forward check can see them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convcheck.bugs.planted import PlantedBug, always
from convcheck.bugs.stepwise import StepwiseLayer
from convcheck.layer import MatrixCache


@dataclass(frozen=True)
class ForwardMissingBias(StepwiseLayer):
    """Forgets ``+ b`` in the forward pass; backward still returns ``db = Σ dZ`` as the seed does."""

    def forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, MatrixCache]:
        return super().forward(x, w, np.zeros_like(b))


@dataclass(frozen=True)
class ForwardFlippedKernel(StepwiseLayer):
    """Forward is a true convolution (kernel rotated 180°: reversed along every spatial axis), and backward is
    its exact gradient.

    The gradients match the layer's own forward perfectly; only comparing the forward with a reference
    cross-correlation shows that the layer computes the wrong function.
    """

    def forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, MatrixCache]:
        return super().forward(x, _flipped(w), b)

    def backward(self, dout: np.ndarray, cache: MatrixCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dx, dw_flipped, db = super().backward(dout, cache)
        return dx, _flipped(dw_flipped), db


def _flipped(w: np.ndarray) -> np.ndarray:
    """``w: (*k, C_in/g, C_out)`` reversed along its spatial axes (``w[::-1, ::-1]`` on a 2-D layer)."""
    return np.ascontiguousarray(w[(slice(None, None, -1),) * (w.ndim - 2)])


#: The forward family, in catalogue order.
BUGS: tuple[PlantedBug, ...] = (
    PlantedBug(
        "forward-missing-bias",
        "forward forgets + b; backward still returns db = Σ dZ",
        ("forward", "bias"),
        "forward bias",
        "any layer (nonzero bias)",
        always,
        ForwardMissingBias,
    ),
    PlantedBug(
        "forward-flipped-kernel",
        "forward is a true convolution (kernel rotated 180°) with a backward consistent with it",
        ("forward",),
        "flipped kernel",
        "filter_size > 1",
        lambda shape, activation: shape.filter_size > 1,
        ForwardFlippedKernel,
    ),
)
