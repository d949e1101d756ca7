"""What a planted bug is: the mistake, the tensors it corrupts, the hint it should get, and its layer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from convcheck.bugs.stepwise import StepwiseLayer
from convcheck.spec import Activation, ConvShape

#: The tensors a planted bug can corrupt, in display order.
TENSOR_ORDER = ("forward", "input", "weights", "bias")

Exposure = Callable[[ConvShape, Activation], bool]


@dataclass(frozen=True)
class PlantedBug:
    """One realistic mistake: what it is, what it corrupts, what should be diagnosed, and how to build it.

    ``tensors`` lists, in ``TENSOR_ORDER``, everything the bug corrupts on the layers that expose it (the
    union over geometries; on one layer a bug may show in fewer). ``breaks_contract`` marks a bug whose wrong
    tensor cannot be compared entry by entry: it comes back with the wrong shape (``padding-crop-unguarded``), or
    the first ``backward`` is right and a second call on the same cache is not (``weights-accumulate``); a
    checker sees a contract violation rather than wrong numbers. ``any_geometry`` marks a mistake defined on the
    whole N-d space (built with ``make_for``; its ``exposes`` reads the per-axis values); the others are mistakes
    in the seed's 2-D layer (built with ``make``; ``exposes`` reads the int attributes, which only a
    ``ConvShape.is_basic`` geometry has).
    """

    id: str
    description: str
    tensors: tuple[str, ...]
    hint: str
    exposed_by: str
    exposes: Exposure
    layer: type[StepwiseLayer]
    breaks_contract: bool = False
    any_geometry: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.tensors) - set(TENSOR_ORDER)
        ordered = tuple(t for t in TENSOR_ORDER if t in self.tensors)
        if unknown or not self.tensors or ordered != self.tensors:
            raise ValueError(f"{self.id}: tensors must be a non-empty subset of {TENSOR_ORDER}, in that order")

    def make(self, stride: int, padding: int, activation: Activation) -> StepwiseLayer:
        """A fresh instance of the buggy layer (fresh state for the stateful ones) with the geometry bound."""
        return self.layer(stride=stride, padding=padding, activation=activation)

    def make_for(self, shape: ConvShape, activation: Activation) -> StepwiseLayer:
        """A fresh instance of the buggy layer bound to ``shape``'s geometry (any that ``ConvShape`` covers)."""
        return self.layer.stepwise_for(shape, activation)


def relu(shape: ConvShape, activation: Activation) -> bool:
    return activation is Activation.RELU


def always(shape: ConvShape, activation: Activation) -> bool:
    return True
