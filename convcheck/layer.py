"""The built-in matrix convolution layer: the seed's algorithm, vectorized, for every geometry ``ConvShape`` covers.

Forward (seed steps 1-3): zero-pad ``x`` (per axis and side), unfold it into the im2col matrix ``M`` (one row per
output position, each window laid out as ``(*kernel, c_in)``, its taps ``dilation`` apart), ``Z = M @ W + b`` with
``W = w.reshape(∏k·C_in, C_out)``, apply the activation, reshape to ``(N, *spatial_out, C_out)``. With ``groups``
g > 1, output group γ sees only input group γ: the channels are unfolded group by group into ``M: (g, rows,
∏k·C_in/g)`` and multiplied by each group's ``W_γ: (∏k·C_in/g, C_out/g)``, one product per group (a batched matrix
product, not a block-diagonal ``W`` full of zeros). A layer without a bias gets ``b`` of shape ``(0,)`` (no entries,
as ``ConvShape.b_shape`` says) and nothing is added.

Backward: ``dout`` to matrix form ``dA``; through the activation ``dZ = dA ⊙ act'(Z)``; ``dW = Mᵀ·dZ``,
``db = Σ_rows dZ`` (``(0,)`` without a bias), ``dM = dZ·Wᵀ`` (per group); col2im adds every row of ``dM`` back onto its
window (windows overlap when ``s < d·(k − 1) + 1``, so gradients accumulate); crop the padding. Padded rows that no
window reaches (remainders of the stride, the gaps between dilated taps) receive zero gradient.

im2col and col2im are ``convcheck.windows``' (``unfold``, ``fold``): no Python loop runs over output positions.

Speed (``benchmarks/``). The forward is what a full check repeats hundreds of times: pad, one copy, one matrix
product, the bias and the activation, nothing else; what it keeps between those calls is ``convcheck.reuse``'s. For
the seed's geometry (2-D, square kernel, stride 1, one padding, no dilation, one group), the backward's input
gradient computes the same products ``dZ·Wᵀ`` transposed (``W·dZᵀ``) over ``dZ`` laid on the padded
``(H + 2p) × (W + 2p)`` grid (zeros where no window starts). On that grid, kernel offset ``(kh, kw)`` sends each
row of ``dM`` a constant ``kh·(W + 2p) + kw`` rows further, so col2im becomes ``k·k`` shifted additions of long
contiguous runs instead of ``k·k`` slabs of ``C``-wide pieces: the same sums in the same order, at a fraction of the
memory traffic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from convcheck import activation as act
from convcheck import reuse
from convcheck.geometry import PaddingMode, Window
from convcheck.reuse import Point
from convcheck.spec import Activation, ConvShape
from convcheck.windows import fold, plan, seed_window

# A sweep of small layers ran 8-11 % less CPU a check with 16 MiB and 64 groups than with 4 MiB and 32 (a third of
# the calls; benchmarks/RESULTS.md), and no faster with more: the stack then outgrows the caches.
STACK_BYTES = 16 << 20  # stacked arrays per ``MatrixConvLayer.outputs`` call (``stacked_groups``)
STACK_MAX_COLS = 1 << 20  # the largest im2col matrix whose points are stacked
STACK_GROUPS = 64  # at most this many groups per call
FOLD_BLOCK = 131072  # entries per block of the stride-1 fold (1 MiB of float64: stays in cache across the k·k adds)


def _padded_grid_is_small(x_shape: tuple[int, ...], filter_size: int, padding: int) -> bool:
    """True when the padded grid has at most twice as many positions as the output (stride 1): then the shifted
    additions of ``_input_gradient_stride_one`` cost less than ``col2im``'s slabs, extra products included."""
    _, h, w, _ = x_shape
    hp, wp = h + 2 * padding, w + 2 * padding
    return hp * wp <= 2 * (hp - filter_size + 1) * (wp - filter_size + 1)


def _input_gradient_stride_one(
    dz: np.ndarray, weights: np.ndarray, x_shape: tuple[int, ...], filter_size: int, padding: int
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


@dataclass(frozen=True)
class MatrixCache:
    """What backward needs from forward (the seed's ``matric_data`` and ``filter_data``).

    With g > 1 groups, ``cols`` and ``weights`` hold one matrix per group: ``(g, R, ∏k·C_in/g)`` and
    ``(g, ∏k·C_in/g, C_out/g)``.
    """

    cols: np.ndarray  # M: (R = N·∏O, ∏k·C_in), the seed's matric_data
    weights: np.ndarray  # W: (∏k·C_in, C_out)
    pre_activation: np.ndarray  # Z: (R, C_out)
    activated: np.ndarray  # A = act(Z): (R, C_out), the seed's filter_data
    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    bias: bool = True  # False: the forward had no bias (b of shape (0,)), and backward's db has no entries


@dataclass(frozen=True)
class MatrixConvLayer:
    """convcheck's own layer. Arrays are channels-last; see ``convcheck.spec`` for the shape vocabulary.

    ``stride`` and ``padding`` are the seed's: one value for every axis and side. ``window``, when given, is the
    general geometry (per-axis strides, dilation, per-side or ``same`` padding, groups) and replaces them; the
    number of spatial axes is read from the arrays.
    """

    stride: int = 1
    padding: int = 0
    activation: Activation = Activation.RELU
    window: Window | None = None

    def __post_init__(self) -> None:
        if self.window is not None and (self.stride, self.padding) != (1, 0):
            raise ValueError("give either stride and padding or a window, not both")

    @classmethod
    def for_shape(cls, shape: ConvShape, activation: Activation = Activation.RELU) -> MatrixConvLayer:
        """The layer of ``shape``'s geometry: the seed's ints where they describe it, else its window."""
        window = shape.window
        seed = window.uniform(shape.spatial_in, shape.kernel) if window.mode is PaddingMode.EXPLICIT else None
        if seed is not None:
            return cls(seed[0], seed[1], activation)
        return cls(activation=activation, window=window)

    def geometry(self, dims: int) -> Window:
        """The window of a layer with ``dims`` spatial axes."""
        return self.window if self.window is not None else seed_window(self.stride, self.padding, dims)

    def forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, MatrixCache]:
        """``x: (N, *S, C_in)``, ``w: (*kernel, C_in/g, C_out)``, ``b: (C_out,)`` or ``(0,)`` (no bias) →
        ``out: (N, *O, C_out)``."""
        window = self.geometry(x.ndim - 2)
        kernel, c_out, groups = tuple(w.shape[:-2]), w.shape[-1], window.groups
        pads, out_sizes, _ = plan(window, x.shape[1:-1], kernel)
        cols = reuse.cached_unfold(x, kernel, window, pads, out_sizes)
        if groups == 1:
            weights = w.reshape(-1, c_out)
            z = cols @ weights
        else:  # W_γ: the rows of group γ's output channels, (g, ∏k·C_in/g, C_out/g)
            weights = np.ascontiguousarray(w.reshape(-1, groups, c_out // groups).transpose(1, 0, 2))
            z = np.matmul(cols, weights).transpose(1, 0, 2).reshape(-1, c_out)
        has_bias = b.size > 0
        if has_bias:
            z += b
        a = z if self.activation is Activation.NONE else act.apply(self.activation, z)
        cache = MatrixCache(cols, weights, z, a, x.shape, w.shape, has_bias)
        return a.reshape(x.shape[0], *out_sizes, c_out), cache

    def output(self, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``forward(x, w, b)[0]``, bit for bit, without the cache, from buffers this thread keeps between calls
        (``reuse.output``): what a finite-difference engine calls hundreds of times."""
        return reuse.output(self, x, w, b)

    def outputs(self, params: Sequence[np.ndarray], points: Sequence[Point]) -> np.ndarray | None:
        """``output`` at each of ``points`` (changes of the base ``params = (x, w, b)``, all of one argument), bit
        for bit, from one pipeline (``reuse.outputs``); None when it does not apply (call ``output`` then).

        Returns ``(len(points), N, *O, C_out)``: the outputs in the order of ``points``.
        """
        return reuse.outputs(self, params, points)

    def backward(self, dout: np.ndarray, cache: MatrixCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``dout: (N, *O, C_out)`` → ``(dx, dw, db)`` shaped like ``(x, w, b)``."""
        c_out = cache.w_shape[-1]
        dz = dout.reshape(-1, c_out)
        if self.activation is Activation.RELU:  # act' is 0 or 1: multiply by the mask itself (one pass fewer)
            z = cache.pre_activation
            dz = np.multiply(dz, z > 0, dtype=np.result_type(dz, z))
        else:
            slope = act.derivative(self.activation, cache.pre_activation, cache.activated)
            if slope is not None:
                dz = dz * slope
        window = self.geometry(len(cache.x_shape) - 2)
        if window.groups == 1:
            dweights = cache.cols.T @ dz
        else:  # per group: dW_γ = M_γᵀ·dZ_γ, laid back as (∏k·C_in/g, γ, C_out/g)
            dz_groups = dz.reshape(-1, window.groups, c_out // window.groups).transpose(1, 0, 2)
            dweights = (cache.cols.transpose(0, 2, 1) @ dz_groups).transpose(1, 0, 2)
        dbias = np.ones(dz.shape[0], dtype=dz.dtype) @ dz if cache.bias else np.zeros(0, dz.dtype)  # Σ_rows dZ
        return self._input_gradient(dz, cache, window), dweights.reshape(cache.w_shape), dbias

    def _input_gradient(self, dz: np.ndarray, cache: MatrixCache, window: Window) -> np.ndarray:
        """``dx = fold(dZ·Wᵀ)`` (per group), by shifted additions for the seed's geometry at stride 1."""
        kernel = tuple(cache.w_shape[:-2])
        seed = plan(window, cache.x_shape[1:-1], kernel)[2]
        square = len(set(kernel)) == 1
        if seed is not None and seed[0] == 1 and square and _padded_grid_is_small(cache.x_shape, kernel[0], seed[1]):
            return _input_gradient_stride_one(dz, cache.weights, cache.x_shape, kernel[0], seed[1])
        if window.groups == 1:
            return fold(dz @ cache.weights.T, cache.x_shape, kernel, window)
        dz_groups = dz.reshape(-1, window.groups, cache.w_shape[-1] // window.groups).transpose(1, 0, 2)
        return fold(dz_groups @ cache.weights.transpose(0, 2, 1), cache.x_shape, kernel, window)


def stacked_groups(shape: ConvShape) -> int:
    """Perturbation groups (two points each) per ``MatrixConvLayer.outputs`` call for a layer of ``shape``: as many
    as ``STACK_BYTES`` of stacked inputs, im2col matrices and outputs hold, at most ``STACK_GROUPS``; 0 for a
    layer whose im2col matrix alone exceeds ``STACK_MAX_COLS`` bytes (its forward outweighs a call's overhead, and
    it keeps the memory of one point at a time)."""
    point = _stacked_point_bytes(shape)
    return 0 if point is None else _groups_per_call(point)


def stacked_bytes(shape: ConvShape) -> int:
    """Bytes the stacked calls of a check of ``shape`` may hold at once, at most: one call's stacked arrays and the
    two stacks of padded inputs and im2col matrices its workspace keeps for the next calls (0 when not stacked;
    ``reuse.outputs`` takes a layer of one group's points a chunk at a time, and keeps chunks, not stacks)."""
    point = _stacked_point_bytes(shape)
    return 0 if point is None else 3 * 2 * _groups_per_call(point) * point


def _groups_per_call(point: int) -> int:
    """Groups (two points of ``point`` bytes each) that ``STACK_BYTES`` holds, at most ``STACK_GROUPS``."""
    return max(0, min(STACK_GROUPS, STACK_BYTES // (2 * point)))


def _stacked_point_bytes(shape: ConvShape) -> int | None:
    """One stacked point's padded input, im2col matrix and output in float64 (the engine differences in float64
    whenever the layer computes in it), or None when its im2col matrix exceeds ``STACK_MAX_COLS``."""
    itemsize = 8
    pads, out_sizes, _ = plan(shape.window, shape.spatial_in, shape.kernel)
    rows = shape.batch * math.prod(out_sizes)
    cols = rows * math.prod(shape.kernel) * shape.in_depth * itemsize
    if cols > STACK_MAX_COLS:
        return None
    padded = math.prod(s + lo + hi for s, (lo, hi) in zip(shape.spatial_in, pads, strict=True))
    return cols + (rows * shape.out_depth + shape.batch * padded * shape.in_depth) * itemsize


def output_function(layer: object) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None:
    """``layer.output`` when ``layer`` is a ``MatrixConvLayer`` whose ``forward`` is the built-in one (its output is
    then ``forward``'s, bit for bit), else None: a subclass with its own forward is differenced through that."""
    if isinstance(layer, MatrixConvLayer) and type(layer).forward is MatrixConvLayer.forward:
        return layer.output
    return None
