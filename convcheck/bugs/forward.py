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
    """Forward is a true convolution (kernel rotated 180°), and backward is its exact gradient.

    The gradients match the layer's own forward perfectly; only comparing the forward with a reference
    cross-correlation shows that the layer computes the wrong function.
    """

    def forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, MatrixCache]:
        return super().forward(x, np.ascontiguousarray(w[::-1, ::-1]), b)

    def backward(self, dout: np.ndarray, cache: MatrixCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dx, dw_flipped, db = super().backward(dout, cache)
        return dx, np.ascontiguousarray(dw_flipped[::-1, ::-1]), db


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
