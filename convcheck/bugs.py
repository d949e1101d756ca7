"""A catalogue of planted bugs: realistic mistakes in the matrix convolution layer, each a small diff from it.

A gradient checker is only worth running if a fail means "wrong"; the way to prove that is to feed it layers
that are wrong in the ways people actually get them wrong, and show every one is caught, in the right tensor.
Each entry below is such a layer. They all start from ``StepwiseLayer``, the built-in ``MatrixConvLayer``
with its backward split into the seed's steps (dout → matrix, activation mask, ``dW``, ``db``, ``dM``, col2im
and crop); a bug overrides exactly the step it gets wrong, so its class body *is* the mistake.

Every entry also records

- ``tensors``: what the mistake corrupts — ``"forward"`` (the output itself), ``"input"`` (dx),
  ``"weights"`` (dw), ``"bias"`` (db) — on the layers that expose it;
- ``hint``: the keyword the diagnosis rules (issue 6) should name for it;
- ``exposed_by`` / ``exposes(shape, activation)``: which geometry makes the bug visible, in words and as a
  predicate (``col2im-assign`` is harmless when windows never overlap, ``padding-crop-seed`` only bites at
  ``padding = 0``, …). Tests prove the predicate: a bug changes its tensors exactly on the layers it names.

Shapes follow ``convcheck.spec``: ``x: (N, H, W, C_in)``, ``w: (k, k, C_in, C_out)``, ``b: (C_out,)``,
``out: (N, OH, OW, C_out)``; the im2col matrix ``M`` is ``(R, k·k·C_in)`` with ``R = N·OH·OW`` rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convcheck import activation as act
from convcheck.layer import MatrixCache, MatrixConvLayer, col2im
from convcheck.spec import Activation, ConvShape, output_size

#: The tensors a planted bug can corrupt, in display order.
TENSOR_ORDER = ("forward", "input", "weights", "bias")

#: Rows per block in ``dx-chunk-remainder-dropped`` (a memory-saving backward that processes dM in blocks).
CHUNK_ROWS = 16


# ----------------------------------------------------------------------------------------------------
# The correct layer, one overridable method per step of the seed's backward pass.
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepwiseLayer(MatrixConvLayer):
    """``MatrixConvLayer`` with its backward split into the seed's steps; exactly as correct as the original.

    The steps, with ``R = N·OH·OW`` rows and ``K = k·k·C_in``:

    1. ``dout_matrix``: ``dout: (N, OH, OW, C_out)`` → ``dA: (R, C_out)`` (inverse of the forward's reshape);
    2. ``through_activation``: ``dZ = dA ⊙ act'(Z)``;
    3. ``weights_grad``: ``dW = Mᵀ·dZ`` reshaped to ``(k, k, C_in, C_out)``;
    4. ``bias_grad``: ``db = Σ_rows dZ``, ``(C_out,)``;
    5. ``cols_grad``: ``dM = dZ·Wᵀ``, ``(R, K)``;
    6. ``fold``: col2im (accumulating where windows overlap) and the padding crop → ``dx: (N, H, W, C_in)``.
    """

    def backward(self, dout: np.ndarray, cache: MatrixCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``dout: (N, OH, OW, C_out)`` → ``(dx, dw, db)`` shaped like ``(x, w, b)``."""
        dz = self.through_activation(self.dout_matrix(dout, cache), cache)
        return (
            self.fold(self.cols_grad(dz, cache), cache),
            self.weights_grad(dz, cache),
            self.bias_grad(dz, cache),
        )

    def dout_matrix(self, dout: np.ndarray, cache: MatrixCache) -> np.ndarray:
        """``(N, OH, OW, C_out)`` → ``(R, C_out)``, row ``(n·OH + oh)·OW + ow`` like the rows of ``M``."""
        return dout.reshape(-1, cache.weights.shape[1])

    def through_activation(self, da: np.ndarray, cache: MatrixCache) -> np.ndarray:
        """``dZ = dA ⊙ act'(Z)``, ``(R, C_out)``."""
        slope = act.derivative(self.activation, cache.pre_activation, cache.activated)
        return da if slope is None else da * slope

    def weights_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        """``dW = Mᵀ·dZ``: ``(K, C_out)`` viewed as ``(k, k, C_in, C_out)``."""
        return (cache.cols.T @ dz).reshape(cache.w_shape)

    def bias_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        """``db = Σ_rows dZ``: every output position adds the bias once."""
        return dz.sum(axis=0)

    def cols_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        """``dM = dZ·Wᵀ``, ``(R, K)``: one row per window."""
        return dz @ cache.weights.T

    def fold(self, dcols: np.ndarray, cache: MatrixCache) -> np.ndarray:
        """col2im with accumulation, then the padding crop: ``(R, K)`` → ``(N, H, W, C_in)``."""
        return col2im(dcols, cache.x_shape, cache.w_shape[0], self.stride, self.padding)


def _fold_uncropped(dcols: np.ndarray, cache: MatrixCache, stride: int, padding: int) -> np.ndarray:
    """col2im without the crop: ``(R, K)`` → the padded gradient ``(N, H + 2p, W + 2p, C_in)``.

    Reuses ``col2im`` by telling it the padded input is the input and there is no padding (the windows, and
    so ``OH``/``OW``, are the same); the bugs that get only the crop wrong start from this.
    """
    n, h, w, c = cache.x_shape
    return col2im(dcols, (n, h + 2 * padding, w + 2 * padding, c), cache.w_shape[0], stride, 0)


def _fold_by_window(
    dcols: np.ndarray, cache: MatrixCache, stride: int, padding: int, *, place_stride: int, accumulate: bool
) -> np.ndarray:
    """col2im as in ``convcheck.layer``, with the two knobs people get wrong exposed.

    ``place_stride`` is the step between neighbouring windows' corners (correct: the layer's stride);
    ``accumulate=False`` writes ``=`` instead of ``+=``, so where windows overlap the last one wins.
    Returns the cropped ``(N, H, W, C_in)`` gradient.
    """
    n, h, w, c = cache.x_shape
    k = cache.w_shape[0]
    oh, ow = output_size(h, k, stride, padding), output_size(w, k, stride, padding)
    d6 = dcols.reshape(n, oh, ow, k, k, c)
    dpadded = np.zeros((n, h + 2 * padding, w + 2 * padding, c), dtype=dcols.dtype)
    for kh in range(k):
        rows = slice(kh, kh + place_stride * (oh - 1) + 1, place_stride)
        for kw in range(k):
            cols = slice(kw, kw + place_stride * (ow - 1) + 1, place_stride)
            if accumulate:
                dpadded[:, rows, cols, :] += d6[:, :, :, kh, kw, :]
            else:
                dpadded[:, rows, cols, :] = d6[:, :, :, kh, kw, :]
    return np.ascontiguousarray(dpadded[:, padding : padding + h, padding : padding + w, :])


# ----------------------------------------------------------------------------------------------------
# Activation mistakes
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReluMaskMissing(StepwiseLayer):
    """Forgets the seed's ``dfilter_data[filter_data <= 0] = 0``: dout flows through the ReLU unmasked."""

    def through_activation(self, da: np.ndarray, cache: MatrixCache) -> np.ndarray:
        if self.activation is not Activation.RELU:
            return super().through_activation(da, cache)
        return da


@dataclass(frozen=True)
class ReluMaskFromDout(StepwiseLayer):
    """Masks by the sign of the incoming gradient (``dA[dA <= 0] = 0``) instead of the unit's output."""

    def through_activation(self, da: np.ndarray, cache: MatrixCache) -> np.ndarray:
        if self.activation is not Activation.RELU:
            return super().through_activation(da, cache)
        return da * (da > 0)


@dataclass(frozen=True)
class ReluMaskFromInput(StepwiseLayer):
    """Applies the ReLU mask on the wrong side of the layer: ``dM[M <= 0] = 0`` on the input matrix."""

    def through_activation(self, da: np.ndarray, cache: MatrixCache) -> np.ndarray:
        if self.activation is not Activation.RELU:
            return super().through_activation(da, cache)
        return da

    def cols_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        dcols = super().cols_grad(dz, cache)
        if self.activation is not Activation.RELU:
            return dcols
        return dcols * (cache.cols > 0)


@dataclass(frozen=True)
class ReluMaskInverted(StepwiseLayer):
    """The seed's mask with the comparison typed backwards: ``dfilter_data[filter_data > 0] = 0``."""

    def through_activation(self, da: np.ndarray, cache: MatrixCache) -> np.ndarray:
        if self.activation is not Activation.RELU:
            return super().through_activation(da, cache)
        return da * (cache.activated <= 0)


@dataclass(frozen=True)
class ActivationAfterParams(StepwiseLayer):
    """Computes ``dW`` and ``db`` from ``dA`` before the activation's derivative; only dx goes through it."""

    def backward(self, dout: np.ndarray, cache: MatrixCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        da = self.dout_matrix(dout, cache)
        dz = self.through_activation(da, cache)
        return (
            self.fold(self.cols_grad(dz, cache), cache),
            self.weights_grad(da, cache),
            self.bias_grad(da, cache),
        )


@dataclass(frozen=True)
class LeakySlopeForgotten(StepwiseLayer):
    """Leaky ReLU back-propagated as plain ReLU: the 0.01 slope on the negative side becomes 0."""

    def through_activation(self, da: np.ndarray, cache: MatrixCache) -> np.ndarray:
        if self.activation is not Activation.LEAKY_RELU:
            return super().through_activation(da, cache)
        return da * (cache.pre_activation > 0)


# ----------------------------------------------------------------------------------------------------
# col2im and crop mistakes (input gradient only)
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Col2imAssign(StepwiseLayer):
    """col2im writes ``=`` instead of ``+=``: where windows overlap, the last window's gradient wins."""

    def fold(self, dcols: np.ndarray, cache: MatrixCache) -> np.ndarray:
        return _fold_by_window(dcols, cache, self.stride, self.padding, place_stride=self.stride, accumulate=False)


@dataclass(frozen=True)
class Col2imIgnoresStride(StepwiseLayer):
    """col2im places window ``i`` at row ``i`` rather than ``i·stride`` (written and tested with stride 1)."""

    def fold(self, dcols: np.ndarray, cache: MatrixCache) -> np.ndarray:
        return _fold_by_window(dcols, cache, self.stride, self.padding, place_stride=1, accumulate=True)


@dataclass(frozen=True)
class Col2imRowOrder(StepwiseLayer):
    """Backward reads each row of dM as (c_in, kh, kw), PyTorch's order, not im2col's (kh, kw, c_in)."""

    def fold(self, dcols: np.ndarray, cache: MatrixCache) -> np.ndarray:
        k, _, c_in, _ = cache.w_shape
        as_read = dcols.reshape(-1, c_in, k, k).transpose(0, 2, 3, 1).reshape(dcols.shape)
        return super().fold(as_read, cache)


@dataclass(frozen=True)
class Col2imLastWindowDropped(StepwiseLayer):
    """col2im loops over ``(H + 2p − k) // s`` window rows and columns, forgetting the ``+ 1``."""

    def fold(self, dcols: np.ndarray, cache: MatrixCache) -> np.ndarray:
        n, h, w, _ = cache.x_shape
        k = cache.w_shape[0]
        oh, ow = output_size(h, k, self.stride, self.padding), output_size(w, k, self.stride, self.padding)
        kept = dcols.reshape(n, oh, ow, -1).copy()
        kept[:, oh - 1, :, :] = 0
        kept[:, :, ow - 1, :] = 0
        return super().fold(kept.reshape(dcols.shape), cache)


@dataclass(frozen=True)
class PaddingCropOffByOne(StepwiseLayer):
    """Crops ``dpad[:, p - 1 : p - 1 + H]`` (likewise W): keeps a padded row and column, drops the last."""

    def fold(self, dcols: np.ndarray, cache: MatrixCache) -> np.ndarray:
        if self.padding == 0:
            return super().fold(dcols, cache)
        _, h, w, _ = cache.x_shape
        start = self.padding - 1
        dpadded = _fold_uncropped(dcols, cache, self.stride, self.padding)
        return np.ascontiguousarray(dpadded[:, start : start + h, start : start + w, :])


@dataclass(frozen=True)
class PaddingCropSeed(StepwiseLayer):
    """The seed's crop ``dpad[:, p:-p, p:-p]`` without its ``if padding:`` guard: at p = 0 dx is empty."""

    def fold(self, dcols: np.ndarray, cache: MatrixCache) -> np.ndarray:
        p = self.padding
        return _fold_uncropped(dcols, cache, self.stride, p)[:, p:-p, p:-p, :]


@dataclass(frozen=True)
class KernelFlippedBackward(StepwiseLayer):
    """dx computed as a true convolution: ``dM = dZ·W_flippedᵀ`` with the kernel rotated 180°."""

    def cols_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        flipped = cache.weights.reshape(cache.w_shape)[::-1, ::-1].reshape(cache.weights.shape)
        return dz @ flipped.T


@dataclass(frozen=True)
class ChunkRemainderDropped(StepwiseLayer):
    """Computes ``dM`` in blocks of ``CHUNK_ROWS`` rows to save memory and drops the last, partial block."""

    def cols_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        rows = dz.shape[0]
        dcols = np.zeros((rows, cache.weights.shape[0]), dtype=dz.dtype)
        for start in range(0, rows - rows % CHUNK_ROWS, CHUNK_ROWS):
            dcols[start : start + CHUNK_ROWS] = dz[start : start + CHUNK_ROWS] @ cache.weights.T
        return dcols


@dataclass(frozen=True)
class DoutTransposed(StepwiseLayer):
    """Turns dout into matrix form by walking ``(n, ow, oh)``: rows no longer line up with ``M``'s windows."""

    def dout_matrix(self, dout: np.ndarray, cache: MatrixCache) -> np.ndarray:
        return dout.transpose(0, 2, 1, 3).reshape(-1, cache.weights.shape[1])


# ----------------------------------------------------------------------------------------------------
# Weight and bias gradient mistakes
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightsRowOrder(StepwiseLayer):
    """Reads ``dW: (K, C_out)`` as ``(c_in, kh, kw, C_out)`` (PyTorch's order) though M's columns are not."""

    def weights_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        k, _, c_in, c_out = cache.w_shape
        return (cache.cols.T @ dz).reshape(c_in, k, k, c_out).transpose(1, 2, 0, 3).copy()


@dataclass(frozen=True)
class WeightsChannelsSwapped(StepwiseLayer):
    """Swaps ``dw``'s channel axes to ``(C_out, C_in)`` and reshapes back to ``w``'s shape, scrambling it."""

    def weights_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        return super().weights_grad(dz, cache).swapaxes(2, 3).reshape(cache.w_shape)


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


# ----------------------------------------------------------------------------------------------------
# Forward mistakes: backward consistent with its own wrong forward, so only the forward check can see them
# ----------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------
# The catalogue
# ----------------------------------------------------------------------------------------------------

Exposure = Callable[[ConvShape, Activation], bool]


@dataclass(frozen=True)
class PlantedBug:
    """One realistic mistake: what it is, what it corrupts, what should be diagnosed, and how to build it.

    ``tensors`` lists, in ``TENSOR_ORDER``, everything the bug corrupts on the layers that expose it (the
    union over geometries; on one layer a bug may show in fewer). ``breaks_contract`` marks a bug whose wrong
    tensor cannot be compared entry by entry: it comes back with the wrong shape (``padding-crop-seed``), or
    the first ``backward`` is right and a second call on the same cache is not (``weights-accumulate``); a
    checker sees a contract violation rather than wrong numbers.
    """

    id: str
    description: str
    tensors: tuple[str, ...]
    hint: str
    exposed_by: str
    exposes: Exposure
    layer: type[StepwiseLayer]
    breaks_contract: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.tensors) - set(TENSOR_ORDER)
        ordered = tuple(t for t in TENSOR_ORDER if t in self.tensors)
        if unknown or not self.tensors or ordered != self.tensors:
            raise ValueError(f"{self.id}: tensors must be a non-empty subset of {TENSOR_ORDER}, in that order")

    def make(self, stride: int, padding: int, activation: Activation) -> StepwiseLayer:
        """A fresh instance of the buggy layer (fresh state for the stateful ones) with the geometry bound."""
        return self.layer(stride=stride, padding=padding, activation=activation)


def _last_window_touches_input(shape: ConvShape) -> bool:
    """Whether the last row or column of windows covers any real (unpadded) input entry."""
    s, k, p = shape.stride, shape.filter_size, shape.padding
    last_row = (shape.out_height - 1) * s
    last_col = (shape.out_width - 1) * s
    return (last_row + k > p and last_row < p + shape.in_height) or (last_col + k > p and last_col < p + shape.in_width)


def _relu(shape: ConvShape, activation: Activation) -> bool:
    return activation is Activation.RELU


def _always(shape: ConvShape, activation: Activation) -> bool:
    return True


CATALOGUE: tuple[PlantedBug, ...] = (
    PlantedBug(
        "relu-mask-missing",
        "ReLU backward forgotten: dout passes through where the unit was off",
        ("input", "weights", "bias"),
        "activation mask",
        "activation relu",
        _relu,
        ReluMaskMissing,
    ),
    PlantedBug(
        "relu-mask-from-dout",
        "ReLU mask taken from the sign of dout instead of the unit's output",
        ("input", "weights", "bias"),
        "activation mask",
        "activation relu",
        _relu,
        ReluMaskFromDout,
    ),
    PlantedBug(
        "relu-mask-from-input",
        "ReLU mask applied to dM from the input matrix M (M <= 0) instead of to dZ",
        ("input", "weights", "bias"),
        "activation mask",
        "activation relu",
        _relu,
        ReluMaskFromInput,
    ),
    PlantedBug(
        "relu-mask-inverted",
        "ReLU mask with the comparison reversed: gradient kept where the unit was off",
        ("input", "weights", "bias"),
        "activation mask",
        "activation relu",
        _relu,
        ReluMaskInverted,
    ),
    PlantedBug(
        "activation-after-params",
        "dW and db computed from dout before the activation mask; only dx goes through it",
        ("weights", "bias"),
        "activation mask",
        "any activation but none",
        lambda shape, activation: activation is not Activation.NONE,
        ActivationAfterParams,
    ),
    PlantedBug(
        "leaky-slope-forgotten",
        "leaky ReLU back-propagated as ReLU: the negative-side slope becomes 0",
        ("input", "weights", "bias"),
        "activation mask",
        "activation leaky_relu",
        lambda shape, activation: activation is Activation.LEAKY_RELU,
        LeakySlopeForgotten,
    ),
    PlantedBug(
        "col2im-assign",
        "col2im assigns (=) instead of accumulating (+=) where windows overlap",
        ("input",),
        "col2im accumulate",
        "stride < filter_size (overlapping windows)",
        lambda shape, activation: shape.stride < shape.filter_size,
        Col2imAssign,
    ),
    PlantedBug(
        "col2im-ignores-stride",
        "col2im places window i at row i instead of i·stride",
        ("input",),
        "stride",
        "stride > 1 and more than one window along an axis",
        lambda shape, activation: shape.stride > 1 and max(shape.out_height, shape.out_width) > 1,
        Col2imIgnoresStride,
    ),
    PlantedBug(
        "col2im-row-order",
        "backward reads each row of dM as (c_in, kh, kw) though im2col wrote (kh, kw, c_in)",
        ("input",),
        "row order",
        "filter_size > 1 and in_depth > 1",
        lambda shape, activation: shape.filter_size > 1 and shape.in_depth > 1,
        Col2imRowOrder,
    ),
    PlantedBug(
        "col2im-last-window-dropped",
        "col2im loops over (H + 2p - k) // s windows, forgetting the + 1: the last row and column are lost",
        ("input",),
        "border",
        "the last window row or column covers real input (all but huge padding)",
        lambda shape, activation: _last_window_touches_input(shape),
        Col2imLastWindowDropped,
    ),
    PlantedBug(
        "padding-crop-off-by-one",
        "padding crop starts at p - 1: dx keeps a padded row and column and loses its last ones",
        ("input",),
        "padding",
        "padding >= 1",
        lambda shape, activation: shape.padding >= 1,
        PaddingCropOffByOne,
    ),
    PlantedBug(
        "padding-crop-seed",
        "the seed's crop [p:-p] used without its `if padding` guard: at p = 0 dx is empty",
        ("input",),
        "padding",
        "padding == 0",
        lambda shape, activation: shape.padding == 0,
        PaddingCropSeed,
        breaks_contract=True,
    ),
    PlantedBug(
        "kernel-flipped-backward",
        "dx computed by true convolution: the kernel rotated 180° in dM = dZ·Wᵀ",
        ("input",),
        "flipped kernel",
        "filter_size > 1",
        lambda shape, activation: shape.filter_size > 1,
        KernelFlippedBackward,
    ),
    PlantedBug(
        "dx-chunk-remainder-dropped",
        f"dM computed in blocks of {CHUNK_ROWS} rows; the last partial block is never written",
        ("input",),
        "never written",
        f"N·OH·OW not a multiple of {CHUNK_ROWS}",
        lambda shape, activation: (shape.batch * shape.out_height * shape.out_width) % CHUNK_ROWS != 0,
        ChunkRemainderDropped,
    ),
    PlantedBug(
        "dout-transposed",
        "dout turned into matrix form in (n, ow, oh) order: rows misaligned with the windows",
        ("input", "weights", "bias"),
        "transposed",
        "out_height > 1 and out_width > 1 (bias only with a nonlinear activation)",
        lambda shape, activation: shape.out_height > 1 and shape.out_width > 1,
        DoutTransposed,
    ),
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
        _always,
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
    PlantedBug(
        "forward-missing-bias",
        "forward forgets + b; backward still returns db = Σ dZ",
        ("forward", "bias"),
        "forward bias",
        "any layer (nonzero bias)",
        _always,
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

#: The diagnosis keywords the catalogue expects (issue 6: each bug's failure should name its ``hint``).
HINTS: tuple[str, ...] = tuple(sorted({bug.hint for bug in CATALOGUE}))

_BY_ID = {bug.id: bug for bug in CATALOGUE}
if len(_BY_ID) != len(CATALOGUE):  # pragma: no cover - a duplicate id is a programming error
    raise RuntimeError("duplicate planted-bug ids")


def get(bug_id: str) -> PlantedBug:
    """The catalogue entry with this id.

    Raises:
        KeyError: no such bug; the message lists the known ids.
    """
    try:
        return _BY_ID[bug_id]
    except KeyError:
        raise KeyError(f"unknown planted bug {bug_id!r}; known: {', '.join(_BY_ID)}") from None


def ids() -> tuple[str, ...]:
    """Every bug id, in catalogue order."""
    return tuple(bug.id for bug in CATALOGUE)
