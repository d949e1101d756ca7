"""Weight and bias gradient mistakes: dW's layout, a buffer that accumulates, db's reduction, a batch mean."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convcheck.bugs.planted import PlantedBug, always
from convcheck.bugs.row_order import dw_read_channels_first
from convcheck.bugs.stepwise import StepwiseLayer
from convcheck.layer import MatrixCache


@dataclass(frozen=True)
class WeightsRowOrder(StepwiseLayer):
    """Reads ``dW: (K, C_out)`` as ``(c_in, kh, kw, C_out)`` (PyTorch's order) though M's columns are not."""

    def weights_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        return dw_read_channels_first(cache.cols.T @ dz, cache.w_shape).copy()


@dataclass(frozen=True)
class WeightsChannelsSwapped(StepwiseLayer):
    """Swaps ``dw``'s channel axes to ``(C_out, C_in)`` and reshapes back to ``w``'s shape, scrambling it."""

    def weights_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        return super().weights_grad(dz, cache).swapaxes(-2, -1).reshape(cache.w_shape)


@dataclass(frozen=True)
class WeightsProductTransposed(StepwiseLayer):
    """Computes ``dZᵀ·M``, ``(C_out, K)``, and reshapes it to ``w``'s shape without transposing it back."""

    def weights_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        return (dz.T @ cache.cols).reshape(cache.w_shape)


@dataclass(frozen=True)
class WeightsAccumulate(StepwiseLayer):
    """Keeps dw in a buffer that ``+=`` adds into and nothing zeroes: each backward call adds another copy.

    The first call is right; a second call on the same cache (or any later check) returns a multiple.
    """

    buffers: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def weights_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        fresh = super().weights_grad(dz, cache)
        held = self.buffers.get("dw")
        if held is None or held.shape != fresh.shape or held.dtype != fresh.dtype:
            held = self.buffers["dw"] = np.zeros_like(fresh)
        held += fresh
        return held.copy()


@dataclass(frozen=True)
class BiasMean(StepwiseLayer):
    """``db = mean`` over the ``N·OH·OW`` rows instead of the sum (the bias is added at every position)."""

    def bias_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        return dz.mean(axis=0)


@dataclass(frozen=True)
class BiasOneSample(StepwiseLayer):
    """``db`` summed over the first sample's ``OH·OW`` rows only (a per-image loop that kept one image)."""

    def bias_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        n = cache.x_shape[0]
        return dz.reshape(n, -1, dz.shape[1])[0].sum(axis=0)


@dataclass(frozen=True)
class ScaledByBatch(StepwiseLayer):
    """Divides dx and dw by N as if the loss were a mean over the batch (the loss here is a plain sum)."""

    def backward(self, dout: np.ndarray, cache: MatrixCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dx, dw, db = super().backward(dout, cache)
        n = cache.x_shape[0]
        return dx / n, dw / n, db


#: The weight and bias family, in catalogue order.
BUGS: tuple[PlantedBug, ...] = (
    PlantedBug(
        "weights-row-order",
        "dW rows read as (c_in, kh, kw) though im2col's columns are (kh, kw, c_in)",
        ("weights",),
        "row order",
        "filter_size > 1 and in_depth > 1",
        lambda shape, activation: shape.filter_size > 1 and shape.in_depth > 1,
        WeightsRowOrder,
    ),
    PlantedBug(
        "weights-channels-swapped",
        "dw's channel axes swapped to (C_out, C_in), then reshaped back to w's shape",
        ("weights",),
        "channel order",
        "in_depth > 1 and out_depth > 1",
        lambda shape, activation: shape.in_depth > 1 and shape.out_depth > 1,
        WeightsChannelsSwapped,
    ),
    PlantedBug(
        "weights-product-transposed",
        "dW computed as dZᵀ·M, (C_out, K), and reshaped without transposing back",
        ("weights",),
        "transposed",
        "out_depth > 1 and k·k·in_depth > 1",
        lambda shape, activation: shape.out_depth > 1 and shape.filter_size**2 * shape.in_depth > 1,
        WeightsProductTransposed,
    ),
    PlantedBug(
        "weights-accumulate",
        "dw accumulated in a buffer that is never zeroed: a second backward call returns 2·dw",
        ("weights",),
        "repeatability",
        "any layer, from the second backward call on",
        always,
        WeightsAccumulate,
        breaks_contract=True,
    ),
    PlantedBug(
        "bias-grad-mean",
        "db averaged over the N·OH·OW rows instead of summed",
        ("bias",),
        "bias reduction",
        "N·OH·OW > 1",
        lambda shape, activation: shape.batch * shape.out_height * shape.out_width > 1,
        BiasMean,
    ),
    PlantedBug(
        "bias-grad-one-sample",
        "db summed over the first sample's rows only",
        ("bias",),
        "bias reduction",
        "batch > 1",
        lambda shape, activation: shape.batch > 1,
        BiasOneSample,
    ),
    PlantedBug(
        "grads-scaled-by-batch",
        "dx and dw divided by the batch size (mean-loss confusion)",
        ("input", "weights"),
        "scaling",
        "batch > 1",
        lambda shape, activation: shape.batch > 1,
        ScaledByBatch,
    ),
)
