"""The built-in matrix convolution layer: the seed's algorithm, vectorized.

Forward (seed steps 1-3): zero-pad ``x``, unfold it into the im2col matrix ``M`` (one row per output position,
each window laid out as ``(kh, kw, c_in)``), ``Z = M @ W + b`` with ``W = w.reshape(k·k·C_in, C_out)``, apply the
activation, reshape to ``(N, OH, OW, C_out)``.

Backward: ``dout`` to matrix form ``dA``; through the activation ``dZ = dA ⊙ act'(Z)``; ``dW = Mᵀ·dZ``,
``db = Σ_rows dZ``, ``dM = dZ·Wᵀ``; col2im adds every row of ``dM`` back onto its window (windows overlap when
``s < k``, so gradients accumulate); crop the padding. Padded rows and columns that no window reaches (when
``H + 2p − k`` is not a multiple of ``s``) receive zero gradient.

The only Python loops run over the ``k·k`` kernel offsets; each iteration moves a strided slab of the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convcheck import activation as act
from convcheck.spec import Activation


def output_size(size: int, filter_size: int, stride: int, padding: int) -> int:
    """``(size + 2·padding − filter_size) // stride + 1``: positions where a window fits."""
    return (size + 2 * padding - filter_size) // stride + 1


def _window_slices(offset: int, stride: int, count: int) -> slice:
    """Rows of the padded input that kernel offset ``offset`` touches across ``count`` output positions."""
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def pad(x: np.ndarray, padding: int) -> np.ndarray:
    """Zero-pad the two spatial axes of ``x: (N, H, W, C)`` to ``(N, H + 2p, W + 2p, C)``."""
    if padding == 0:
        return x
    n, h, w, c = x.shape
    padded = np.zeros((n, h + 2 * padding, w + 2 * padding, c), dtype=x.dtype)
    padded[:, padding : padding + h, padding : padding + w, :] = x
    return padded


def im2col(x_padded: np.ndarray, filter_size: int, stride: int, out_height: int, out_width: int) -> np.ndarray:
    """Unfold ``x_padded: (N, Hp, Wp, C)`` into ``M: (N·OH·OW, k·k·C)``.

    Row ``(n·OH + oh)·OW + ow`` holds the window whose top-left corner is ``(oh·s, ow·s)``, flattened in
    ``(kh, kw, c)`` order, the same order as the rows of the weight matrix.
    """
    n, _, _, c = x_padded.shape
    k = filter_size
    cols = np.empty((n, out_height, out_width, k, k, c), dtype=x_padded.dtype)
    for kh in range(k):
        rows = _window_slices(kh, stride, out_height)
        for kw in range(k):
            cols[:, :, :, kh, kw, :] = x_padded[:, rows, _window_slices(kw, stride, out_width), :]
    return cols.reshape(n * out_height * out_width, k * k * c)


def col2im(
    dcols: np.ndarray,
    x_shape: tuple[int, int, int, int],
    filter_size: int,
    stride: int,
    padding: int,
) -> np.ndarray:
    """Fold ``dcols: (N·OH·OW, k·k·C)`` back onto the input: the adjoint of ``im2col`` followed by the crop.

    Every window adds its row into the padded gradient (``+=``: overlapping windows share entries); the
    padding is then cropped away, giving ``dx: (N, H, W, C)``.
    """
    n, h, w, c = x_shape
    k = filter_size
    out_height = output_size(h, k, stride, padding)
    out_width = output_size(w, k, stride, padding)
    d6 = dcols.reshape(n, out_height, out_width, k, k, c)
    dpadded = np.zeros((n, h + 2 * padding, w + 2 * padding, c), dtype=dcols.dtype)
    for kh in range(k):
        rows = _window_slices(kh, stride, out_height)
        for kw in range(k):
            dpadded[:, rows, _window_slices(kw, stride, out_width), :] += d6[:, :, :, kh, kw, :]
    if padding == 0:
        return dpadded
    return np.ascontiguousarray(dpadded[:, padding : padding + h, padding : padding + w, :])


@dataclass(frozen=True)
class MatrixCache:
    """What backward needs from forward (the seed's ``matric_data`` and ``filter_data``)."""

    cols: np.ndarray  # M: (N·OH·OW, k·k·C_in), the seed's matric_data
    weights: np.ndarray  # W: (k·k·C_in, C_out)
    pre_activation: np.ndarray  # Z: (N·OH·OW, C_out)
    activated: np.ndarray  # A = act(Z): (N·OH·OW, C_out), the seed's filter_data
    x_shape: tuple[int, int, int, int]
    w_shape: tuple[int, int, int, int]


@dataclass(frozen=True)
class MatrixConvLayer:
    """convcheck's own layer. Arrays are NHWC; see ``convcheck.spec`` for the shape vocabulary."""

    stride: int = 1
    padding: int = 0
    activation: Activation = Activation.RELU

    def forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, MatrixCache]:
        """``x: (N, H, W, C_in)``, ``w: (k, k, C_in, C_out)``, ``b: (C_out,)`` → ``out: (N, OH, OW, C_out)``."""
        n, h, width, c_in = x.shape
        k, _, _, c_out = w.shape
        oh = output_size(h, k, self.stride, self.padding)
        ow = output_size(width, k, self.stride, self.padding)
        cols = im2col(pad(x, self.padding), k, self.stride, oh, ow)
        weights = w.reshape(k * k * c_in, c_out)
        z = cols @ weights
        z += b
        a = z if self.activation is Activation.NONE else act.apply(self.activation, z)
        cache = MatrixCache(cols, weights, z, a, x.shape, w.shape)
        return a.reshape(n, oh, ow, c_out), cache

    def backward(self, dout: np.ndarray, cache: MatrixCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``dout: (N, OH, OW, C_out)`` → ``(dx, dw, db)`` shaped like ``(x, w, b)``."""
        c_out = cache.weights.shape[1]
        dz = dout.reshape(-1, c_out)
        slope = act.derivative(self.activation, cache.pre_activation, cache.activated)
        if slope is not None:
            dz = dz * slope
        dweights = cache.cols.T @ dz
        dbias = dz.sum(axis=0)
        dcols = dz @ cache.weights.T
        dx = col2im(dcols, cache.x_shape, cache.w_shape[0], self.stride, self.padding)
        return dx, dweights.reshape(cache.w_shape), dbias
