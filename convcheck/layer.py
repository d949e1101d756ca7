"""The built-in matrix convolution layer: the seed's algorithm, vectorized.

Forward (seed steps 1-3): zero-pad ``x``, unfold it into the im2col matrix ``M`` (one row per output position,
each window laid out as ``(kh, kw, c_in)``), ``Z = M @ W + b`` with ``W = w.reshape(k·k·C_in, C_out)``, apply the
activation, reshape to ``(N, OH, OW, C_out)``.

Backward: ``dout`` to matrix form ``dA``; through the activation ``dZ = dA ⊙ act'(Z)``; ``dW = Mᵀ·dZ``,
``db = Σ_rows dZ``, ``dM = dZ·Wᵀ``; col2im adds every row of ``dM`` back onto its window (windows overlap when
``s < k``, so gradients accumulate); crop the padding. Padded rows and columns that no window reaches (when
``H + 2p − k`` is not a multiple of ``s``) receive zero gradient.

No Python loop runs over output positions. im2col is one strided copy (a window *view* of the padded input,
``(N, OH, OW, k, k, C)``, copied into ``M``); col2im loops over the ``k·k`` kernel offsets, each iteration adding a
strided slab of the whole batch.

Speed (``benchmarks/``). The forward is what a full check repeats hundreds of times: pad, one copy, one matrix
product, the bias and the activation, nothing else. The backward's input gradient, for stride 1, computes the same
products ``dZ·Wᵀ`` transposed (``W·dZᵀ``) over ``dZ`` laid on the padded ``(H + 2p) × (W + 2p)`` grid (zeros where no
window starts). On that grid, kernel offset ``(kh, kw)`` sends each row of ``dM`` a constant ``kh·(W + 2p) + kw`` rows
further, so col2im becomes ``k·k`` shifted additions of long contiguous runs instead of ``k·k`` slabs of ``C``-wide
pieces: the same sums in the same order, at a fraction of the memory traffic.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from convcheck import activation as act
from convcheck.spec import Activation, output_size

FOLD_BLOCK = 131072  # entries per block of the stride-1 fold (1 MiB of float64: stays in cache across the k·k adds)


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

    Raises:
        ValueError: a window would reach past the padded input (``(OH − 1)·s + k > Hp``, likewise for the width).
    """
    n, hp, wp, c = x_padded.shape
    k = filter_size
    if (
        min(out_height, out_width, k, stride) < 1
        or (out_height - 1) * stride + k > hp
        or (out_width - 1) * stride + k > wp
    ):
        raise ValueError(
            f"{out_height}×{out_width} windows of {k}×{k} at stride {stride} do not fit a padded input of {hp}×{wp}"
        )
    sn, sh, sw, sc = x_padded.strides
    # A read-only view of every window: (n, oh, ow) steps between windows, (kh, kw, c) within one.
    windows = as_strided(
        x_padded,
        shape=(n, out_height, out_width, k, k, c),
        strides=(sn, sh * stride, sw * stride, sh, sw, sc),
        writeable=False,
    )
    cols = np.empty((n * out_height * out_width, k * k * c), dtype=x_padded.dtype)
    np.copyto(cols.reshape(windows.shape), windows)
    return cols


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


def _padded_grid_is_small(x_shape: tuple[int, int, int, int], filter_size: int, padding: int) -> bool:
    """True when the padded grid has at most twice as many positions as the output (stride 1): then the shifted
    additions of ``_input_gradient_stride_one`` cost less than ``col2im``'s slabs, extra products included."""
    _, h, w, _ = x_shape
    hp, wp = h + 2 * padding, w + 2 * padding
    return hp * wp <= 2 * (hp - filter_size + 1) * (wp - filter_size + 1)


def _input_gradient_stride_one(
    dz: np.ndarray, weights: np.ndarray, x_shape: tuple[int, int, int, int], filter_size: int, padding: int
) -> np.ndarray:
    """``col2im(dz @ weights.T, x_shape, k, 1, p)`` for stride 1, by shifted additions on the padded grid.

    ``dz: (N·OH·OW, C_out)`` is laid on the padded grid ``(N, Hp, Wp)`` (window start ``(oh, ow)`` at row
    ``(n·Hp + oh)·Wp + ow``, zeros elsewhere) behind ``lead = (k−1)·Wp + (k−1)`` zero rows. ``dMᵀ = W·dZᵀ`` then
    holds, for offset ``(kh, kw)``, a ``(C, ·)`` block whose column ``j`` belongs to padded entry
    ``j − lead + kh·Wp + kw``: each offset is one shifted slice, added over whole rows of ``N·Hp·Wp`` entries.
    Contributions land in the order ``(kh, kw)`` = (0, 0), (0, 1), … as in ``col2im``.

    Returns ``dx: (N, H, W, C)``.
    """
    n, h, w, c = x_shape
    k = filter_size
    hp, wp = h + 2 * padding, w + 2 * padding
    oh, ow = hp - k + 1, wp - k + 1
    c_out = dz.shape[1]
    lead = (k - 1) * wp + (k - 1)
    size = n * hp * wp
    grid = np.empty((lead + size, c_out), dtype=dz.dtype)
    grid[:lead] = 0
    on_grid = grid[lead:].reshape(n, hp, wp, c_out)
    on_grid[:, oh:] = 0  # rows and columns where no window starts
    on_grid[:, :oh, ow:] = 0
    on_grid[:, :oh, :ow] = dz.reshape(n, oh, ow, c_out)
    blocks = (weights @ grid.T).reshape(k * k, c, lead + size)  # (kh·k + kw, c, lead + padded entry)
    dpadded = np.empty((c, size), dtype=blocks.dtype)  # rows: channels, columns: padded entries
    step = max(1, FOLD_BLOCK // c)  # columns at a time, so the k·k additions reuse a cached block
    for start in range(0, size, step):
        stop = min(size, start + step)
        target = dpadded[:, start:stop]
        np.copyto(target, blocks[0, :, lead + start : lead + stop])  # offset (0, 0)
        for offset in range(1, k * k):
            shift = lead - (offset // k) * wp - offset % k
            target += blocks[offset, :, shift + start : shift + stop]
    cropped = dpadded.reshape(c, n, hp, wp)[:, :, padding : padding + h, padding : padding + w]
    return np.ascontiguousarray(cropped.transpose(1, 2, 3, 0))


# The last unfolding made on each thread: thread id → (key, the input's bits, its read-only im2col matrix), most
# recently used last. At most one per core is kept, so threads that stopped unfolding (the main thread while
# worker threads run a check's groups) lose theirs first.
_unfolded: OrderedDict[int, tuple[tuple, np.ndarray, np.ndarray]] = OrderedDict()
_unfolded_lock = threading.Lock()


def _unfold(x: np.ndarray, filter_size: int, stride: int, padding: int, out_height: int, out_width: int) -> np.ndarray:
    """``im2col(pad(x, padding), …)``, reused while ``x`` holds, bit for bit, the input of this thread's last call.

    A finite-difference check calls ``forward`` hundreds of times, and nearly half of those calls (every weight
    and bias perturbation) pass an unchanged ``x``: comparing its bits with a copy of the previous input (one pass
    over ``x``) costs a fraction of unfolding it again (``k²`` times as much memory). The matrix is returned
    read-only, since successive caches may share it.
    """
    size = x.dtype.itemsize
    if not x.flags.c_contiguous or size not in (1, 2, 4, 8):
        return im2col(pad(x, padding), filter_size, stride, out_height, out_width)
    bits = x.view(f"u{size}")  # compared as integers: -0.0 differs from 0.0, a NaN equals its own bits
    key = (x.shape, x.dtype.str, filter_size, stride, padding)
    thread = threading.get_ident()
    with _unfolded_lock:
        held = _unfolded.pop(thread, None)
    if held is None or held[0] != key or not np.array_equal(held[1], bits):
        held = None  # let the previous matrix go before the new one is made
        cols = im2col(pad(x, padding), filter_size, stride, out_height, out_width)
        cols.flags.writeable = False
        held = (key, bits.copy(), cols)
    with _unfolded_lock:
        _unfolded[thread] = held
        while len(_unfolded) > _KEEP_UNFOLDED:
            _unfolded.popitem(last=False)
    return held[2]


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)


_KEEP_UNFOLDED = _cores()


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
        cols = _unfold(x, k, self.stride, self.padding, oh, ow)
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
        if self.activation is Activation.RELU:  # act' is 0 or 1: multiply by the mask itself (one pass fewer)
            z = cache.pre_activation
            dz = np.multiply(dz, z > 0, dtype=np.result_type(dz, z))
        else:
            slope = act.derivative(self.activation, cache.pre_activation, cache.activated)
            if slope is not None:
                dz = dz * slope
        dweights = cache.cols.T @ dz
        dbias = np.ones(dz.shape[0], dtype=dz.dtype) @ dz  # Σ_rows dZ as one matrix-vector product
        k = cache.w_shape[0]
        if self.stride == 1 and _padded_grid_is_small(cache.x_shape, k, self.padding):
            dx = _input_gradient_stride_one(dz, cache.weights, cache.x_shape, k, self.padding)
        else:
            dcols = dz @ cache.weights.T
            dx = col2im(dcols, cache.x_shape, k, self.stride, self.padding)
        return dx, dweights.reshape(cache.w_shape), dbias
