"""Input-gradient mistakes: dM, col2im and the padding crop (they corrupt dx; dout-transposed all three)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from convcheck.bugs.fold import (
    crop_off_by_one,
    flipped_weights,
    fold_assigning,
    fold_variant,
    last_windows_dropped,
)
from convcheck.bugs.planted import PlantedBug
from convcheck.bugs.row_order import dm_read_channels_first
from convcheck.bugs.stepwise import StepwiseLayer, fold_uncropped
from convcheck.layer import MatrixCache
from convcheck.spec import ConvShape

#: Rows per block in ``dx-chunk-remainder-dropped`` (a memory-saving backward that processes dM in blocks).
CHUNK_ROWS = 16


@dataclass(frozen=True)
class Col2imAssign(StepwiseLayer):
    """col2im writes ``=`` instead of ``+=``: where windows overlap, the last window's gradient wins (any
    geometry: the kernel offsets are visited in row-major order, as the seed's loop does)."""

    def fold(self, dcols: np.ndarray, cache: MatrixCache) -> np.ndarray:
        return fold_assigning(dcols, cache.x_shape, cache.w_shape[:-2], self.window_of(cache))


@dataclass(frozen=True)
class Col2imIgnoresStride(StepwiseLayer):
    """col2im places window ``i`` at row ``i`` rather than ``i·stride`` (written and tested with stride 1), along
    every axis."""

    def fold(self, dcols: np.ndarray, cache: MatrixCache) -> np.ndarray:
        kernel = cache.w_shape[:-2]
        return fold_variant(dcols, cache.x_shape, kernel, self.window_of(cache), starts=(1,) * len(kernel))


@dataclass(frozen=True)
class Col2imRowOrder(StepwiseLayer):
    """Backward reads each row of dM as (c_in, kh, kw), PyTorch's order, not im2col's (kh, kw, c_in)."""

    def fold(self, dcols: np.ndarray, cache: MatrixCache) -> np.ndarray:
        *kernel, c_in, _ = cache.w_shape
        return super().fold(dm_read_channels_first(dcols, kernel, c_in), cache)


@dataclass(frozen=True)
class Col2imLastWindowDropped(StepwiseLayer):
    """col2im loops over ``(H + 2p − k) // s`` window rows and columns, forgetting the ``+ 1`` (along every axis)."""

    def fold(self, dcols: np.ndarray, cache: MatrixCache) -> np.ndarray:
        outs = self.window_of(cache).output_sizes(cache.x_shape[1:-1], cache.w_shape[:-2])
        kept = last_windows_dropped(dcols, cache.x_shape[0], outs, range(len(outs)))
        return super().fold(kept, cache)


@dataclass(frozen=True)
class PaddingCropOffByOne(StepwiseLayer):
    """Crops ``dpad[:, p - 1 : p - 1 + H]`` (likewise W): keeps a padded row and column, drops the last (any
    geometry: one row early along every axis with padding before; axes without it are cropped right)."""

    def fold(self, dcols: np.ndarray, cache: MatrixCache) -> np.ndarray:
        window, kernel = self.window_of(cache), cache.w_shape[:-2]
        crop = crop_off_by_one(window, cache.x_shape[1:-1], kernel)
        return fold_variant(dcols, cache.x_shape, kernel, window, crop=crop)


@dataclass(frozen=True)
class PaddingCropSeed(StepwiseLayer):
    """The seed's crop ``dpad[:, p:-p, p:-p]`` without its ``if padding:`` guard: at p = 0 dx is empty."""

    def fold(self, dcols: np.ndarray, cache: MatrixCache) -> np.ndarray:
        p = self.padding
        return fold_uncropped(dcols, cache, self.stride, p)[:, p:-p, p:-p, :]


@dataclass(frozen=True)
class KernelFlippedBackward(StepwiseLayer):
    """dx computed as a true convolution: ``dM = dZ·W_flippedᵀ`` with the kernel rotated 180° (every spatial
    axis reversed; per group with groups)."""

    def cols_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        flipped = flipped_weights(cache.weights, cache.w_shape, self.window_of(cache).groups)
        return super().cols_grad(dz, replace(cache, weights=flipped))


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
        return dout.transpose(0, 2, 1, 3).reshape(-1, cache.w_shape[-1])


def _last_window_touches_input(shape: ConvShape) -> bool:
    """Whether the last row or column of windows covers any real (unpadded) input entry."""
    s, k, p = shape.stride, shape.filter_size, shape.padding
    last_row = (shape.out_height - 1) * s
    last_col = (shape.out_width - 1) * s
    return (last_row + k > p and last_row < p + shape.in_height) or (last_col + k > p and last_col < p + shape.in_width)


#: The input-gradient family, in catalogue order.
BUGS: tuple[PlantedBug, ...] = (
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
        "padding-crop-unguarded",
        "the textbook crop [p:-p] used without its `if padding` guard: at p = 0 dx is empty",
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
)
