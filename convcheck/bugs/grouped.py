"""Group and bias mistakes of the N-d space: channels mixed across groups, a grouped dw laid out in the wrong
order, a depthwise dx summed over channels, and a db for a layer that has no bias.

Shapes as in ``convcheck.layer``: with g groups ``dZ: (R, C_out)`` splits into ``(g, R, C_out/g)``, the per-group
``dM_γ: (g, R, ∏k·C_in/g)`` and ``dW_γ: (g, ∏k·C_in/g, C_out/g)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from convcheck.bugs.fold import grouped_dw_unordered, reads_input, split_groups_interleaved, summed_over_channels
from convcheck.bugs.planted import PlantedBug
from convcheck.bugs.stepwise import StepwiseLayer
from convcheck.layer import MatrixCache
from convcheck.spec import Activation, ConvShape


@dataclass(frozen=True)
class GroupsMixedInDx(StepwiseLayer):
    """dM splits dZ into groups with ``reshape(R, C_out/g, g)``: output channel ``co`` sent to group ``co % g``."""

    def cols_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        groups = self.window_of(cache).groups
        if groups == 1:
            return super().cols_grad(dz, cache)
        return split_groups_interleaved(dz, groups) @ cache.weights.transpose(0, 2, 1)


@dataclass(frozen=True)
class GroupedWeightsOrder(StepwiseLayer):
    """dW_γ ``(g, ∏k·C_in/g, C_out/g)`` reshaped straight to w's shape, without moving the group axis."""

    def weights_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        if self.window_of(cache).groups == 1:
            return super().weights_grad(dz, cache)
        return grouped_dw_unordered(self.weights_grad_per_group(dz, cache), cache.w_shape)


@dataclass(frozen=True)
class DepthwiseDxSummed(StepwiseLayer):
    """A depthwise dM summed over the channels (``keepdims``) and handed to every channel."""

    def cols_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        dcols = super().cols_grad(dz, cache)
        depthwise = self.window_of(cache).groups == cache.x_shape[-1] > 1
        return summed_over_channels(dcols) if depthwise else dcols


@dataclass(frozen=True)
class BiasGradWithoutBias(StepwiseLayer):
    """``db = Σ_rows dZ`` returned also when the layer has no bias (b has no entries, so db must have none)."""

    def bias_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        return dz.sum(axis=0)


def _mixes_groups(shape: ConvShape, activation: Activation) -> bool:
    return shape.groups > 1 and shape.out_depth > shape.groups and reads_input(shape)


def _reorders_dw(shape: ConvShape, activation: Activation) -> bool:
    """The unordered reshape moves some entry of dW that a real input entry reaches (the others are 0 both ways).

    Entry ``i`` of the wrong dw (flat, w's layout) is entry ``perm[i]`` of the right one; they differ exactly
    where ``perm[i] ≠ i`` and either entry can be nonzero (its tap reads real input in some window).
    """
    g = shape.groups
    if g == 1 or not reads_input(shape):
        return False
    rows, per_group = math.prod(shape.kernel) * (shape.in_depth // g), shape.out_depth // g
    flat = np.arange(math.prod(shape.w_shape))
    perm = grouped_dw_unordered(flat.reshape(rows, g, per_group).transpose(1, 0, 2), shape.w_shape).reshape(-1)
    live = np.broadcast_to(_real_taps(shape)[..., None, None], shape.w_shape).reshape(-1)
    return bool(np.any((perm != flat) & (live | live[perm])))


def _real_taps(shape: ConvShape) -> np.ndarray:
    """``(*kernel,)``: whether kernel tap ``(j, …)`` reads a real input entry in some window."""
    axes = [
        np.array([any(before <= o * s + j * d < before + size for o in range(count)) for j in range(k)])
        for size, k, s, d, (before, _), count in zip(
            shape.spatial_in, shape.kernel, shape.strides, shape.dilations, shape.pads, shape.spatial_out, strict=True
        )
    ]
    mask = axes[0]
    for axis in axes[1:]:
        mask = np.logical_and.outer(mask, axis)
    return mask


#: The grouped family, in catalogue order.
BUGS: tuple[PlantedBug, ...] = (
    PlantedBug(
        "groups-mixed-in-dx",
        "dx's dM splits dZ into groups as reshape(R, C_out/g, g): output channels sent to other groups",
        ("input",),
        "group channels",
        "groups > 1 and more than one output channel per group",
        _mixes_groups,
        GroupsMixedInDx,
        any_geometry=True,
    ),
    PlantedBug(
        "grouped-dw-channel-order",
        "a grouped layer's dW_γ (g, ∏k·C_in/g, C_out/g) reshaped to w's shape without moving the group axis",
        ("weights",),
        "group order",
        "groups > 1 and ∏k·C_in/g > 1",
        _reorders_dw,
        GroupedWeightsOrder,
        any_geometry=True,
    ),
    PlantedBug(
        "depthwise-dx-summed",
        "a depthwise layer's dM summed over the channels and handed to every channel",
        ("input",),
        "depthwise",
        "groups = in_depth > 1 (a depthwise layer)",
        lambda shape, activation: shape.groups == shape.in_depth > 1 and reads_input(shape),
        DepthwiseDxSummed,
        any_geometry=True,
    ),
    PlantedBug(
        "bias-grad-without-bias",
        "db = Σ dZ returned for a layer without a bias (db must have no entries)",
        ("bias",),
        "no bias",
        "bias: false",
        lambda shape, activation: not shape.bias,
        BiasGradWithoutBias,
        breaks_contract=True,
        any_geometry=True,
    ),
)
