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

No Python loop runs over output positions. im2col is one strided copy (a window *view* of the padded input,
``(g, N, *spatial_out, *kernel, C_in/g)``, copied into ``M``); col2im loops over the ``∏k`` kernel offsets, each
iteration adding a strided slab of the whole batch.

Speed (``benchmarks/``). The forward is what a full check repeats hundreds of times: pad, one copy, one matrix
product, the bias and the activation, nothing else. For the seed's geometry (2-D, square kernel, stride 1, one
padding, no dilation, one group), the backward's input gradient computes the same products ``dZ·Wᵀ`` transposed
(``W·dZᵀ``) over ``dZ`` laid on the padded ``(H + 2p) × (W + 2p)`` grid (zeros where no window starts). On that grid,
kernel offset ``(kh, kw)`` sends each row of ``dM`` a constant ``kh·(W + 2p) + kw`` rows further, so col2im becomes
``k·k`` shifted additions of long contiguous runs instead of ``k·k`` slabs of ``C``-wide pieces: the same sums in the
same order, at a fraction of the memory traffic.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.lib.stride_tricks import as_strided

from convcheck import activation as act
from convcheck.geometry import PaddingMode, Pads, Window
from convcheck.spec import Activation, ConvShape


class Point(Protocol):
    """A change of the base point (``numeric.fanout.Point``): ``values`` at flat positions ``where`` of x, w or b."""

    @property
    def tensor(self) -> int: ...
    @property
    def where(self) -> np.ndarray: ...
    @property
    def values(self) -> np.ndarray: ...


STACK_BYTES = 4 << 20  # stacked arrays per ``MatrixConvLayer.outputs`` call (``stacked_groups``)
STACK_MAX_COLS = 1 << 20  # the largest im2col matrix whose points are stacked
STACK_GROUPS = 32  # at most this many groups per call: beyond, a call's overhead is already a small share
FOLD_BLOCK = 131072  # entries per block of the stride-1 fold (1 MiB of float64: stays in cache across the k·k adds)


def _window_slices(offset: int, stride: int, count: int) -> slice:
    """Rows of the padded input that kernel offset ``offset`` touches across ``count`` output positions."""
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def pad(x: np.ndarray, padding: int | Pads) -> np.ndarray:
    """Zero-pad the spatial axes of ``x: (N, *S, C)``: ``padding`` rows on both sides of every axis, or
    ``(before, after)`` per axis. For the seed's ``(N, H, W, C)`` and ``p``: ``(N, H + 2p, W + 2p, C)``."""
    dims = x.ndim - 2
    pads = ((padding, padding),) * dims if isinstance(padding, int) else tuple(padding)
    if not any(before or after for before, after in pads):
        return x
    n, *sizes, c = x.shape
    padded = np.zeros(
        (n, *(size + before + after for size, (before, after) in zip(sizes, pads, strict=True)), c), x.dtype
    )
    inside = (slice(None), *_crop(sizes, pads), slice(None))
    padded[inside] = x
    return padded


def _crop(sizes: Sequence[int], pads: Pads) -> tuple[slice, ...]:
    """Per spatial axis, the slice of the padded array that holds the input."""
    return tuple(slice(before, before + size) for size, (before, _) in zip(sizes, pads, strict=True))


def unfold(
    x_padded: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    out_sizes: Sequence[int],
    groups: int = 1,
) -> np.ndarray:
    """Unfold ``x_padded: (N, *Sp, C)`` into ``M: (N·∏O, ∏k·C)`` (one group) or ``(g, N·∏O, ∏k·C/g)``.

    Row ``n·∏O + (flat output position)`` of group γ holds the window that starts at ``o·s`` along each axis, its
    taps ``d`` apart, flattened in ``(*kernel, c)`` order over group γ's channels ``γ·C/g …``: the order of the
    rows of the weight matrix.

    Raises:
        ValueError: a window would reach past the padded input (``(O − 1)·s + d·(k − 1) + 1 > Sp`` on some axis).
    """
    n, *padded, c = x_padded.shape
    reach = [(o - 1) * s + d * (k - 1) + 1 for o, s, d, k in zip(out_sizes, strides, dilations, kernel, strict=True)]
    if min(*out_sizes, *kernel, *strides, *dilations) < 1 or any(r > p for r, p in zip(reach, padded, strict=True)):
        raise ValueError(
            f"{_times(out_sizes)} windows of {_times(kernel)} at stride {_times(strides, 'x')}"
            + ("" if set(dilations) == {1} else f" and dilation {_times(dilations, 'x')}")
            + f" do not fit a padded input of {_times(padded)}"
        )
    sn, *steps, sc = x_padded.strides
    per_group = c // groups
    # A read-only view of every window: (γ, n, *o) steps between windows, (*k, c) within one.
    shape = (groups, n, *out_sizes, *kernel, per_group)
    window_strides = (
        sc * per_group,
        sn,
        *(step * s for step, s in zip(steps, strides, strict=True)),
        *(step * d for step, d in zip(steps, dilations, strict=True)),
        sc,
    )
    windows = _view(x_padded, shape, window_strides)
    cols = np.empty((groups, n * math.prod(out_sizes), math.prod(kernel) * per_group), dtype=x_padded.dtype)
    np.copyto(cols.reshape(windows.shape), windows)
    return cols[0] if groups == 1 else cols


def _view(array: np.ndarray, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
    """``as_strided(array, shape, strides, writeable=False)``, made directly when ``array`` is C-contiguous (numpy's
    ``as_strided`` costs ~30 µs a call, a tenth of a small layer's forward pass)."""
    if not array.flags.c_contiguous:
        return as_strided(array, shape=shape, strides=strides, writeable=False)
    view = np.ndarray(shape, array.dtype, buffer=array, offset=0, strides=strides)
    view.flags.writeable = False
    return view


def _times(values: Sequence[int], sign: str = "×") -> str:
    return sign.join(map(str, values)) if len(set(values)) > 1 or sign == "×" else str(values[0])


def im2col(x_padded: np.ndarray, filter_size: int, stride: int, out_height: int, out_width: int) -> np.ndarray:
    """The seed's unfolding: ``x_padded: (N, Hp, Wp, C)`` → ``M: (N·OH·OW, k·k·C)`` (``unfold`` of a square filter).

    Row ``(n·OH + oh)·OW + ow`` holds the window whose top-left corner is ``(oh·s, ow·s)``, flattened in
    ``(kh, kw, c)`` order, the same order as the rows of the weight matrix.
    """
    return unfold(x_padded, (filter_size,) * 2, (stride,) * 2, (1, 1), (out_height, out_width))


def fold(dcols: np.ndarray, x_shape: Sequence[int], kernel: Sequence[int], window: Window) -> np.ndarray:
    """Fold ``dcols`` (``unfold``'s layout) back onto the input: the adjoint of ``unfold`` after ``pad``.

    Every window adds its row into the padded gradient (``+=``: overlapping windows share entries) at its taps;
    the padding is then cropped away, giving ``dx: x_shape = (N, *S, C)``.
    """
    n, *sizes, c = x_shape
    pads, out_sizes, _ = _plan(window, tuple(sizes), tuple(kernel))
    padded = tuple(size + before + after for size, (before, after) in zip(sizes, pads, strict=True))
    dpadded = np.zeros((n, *padded, c), dtype=dcols.dtype)
    groups, every = window.groups, (slice(None),) * (1 + len(sizes))
    if groups == 1:
        windows = dcols.reshape(n, *out_sizes, *kernel, c)
        target = dpadded
    else:  # window rows per group → (n, *o, *k, γ, c/g), onto the channels γ·C/g … of the same group
        windows = np.moveaxis(dcols.reshape(groups, n, *out_sizes, *kernel, c // groups), 0, -2)
        target = dpadded.reshape(n, *padded, groups, c // groups)
    # Per axis, the rows of the padded input that tap j reaches across every window: slice(j·d, …, s).
    reach = [
        [_window_slices(j * d, s, count) for j in range(k)]
        for k, s, d, count in zip(kernel, window.strides, window.dilations, out_sizes, strict=True)
    ]
    for offset, where in zip(itertools.product(*map(range, kernel)), itertools.product(*reach), strict=True):
        tap: tuple[slice | int, ...] = (*every, *offset)
        slab = (slice(None), *where)
        target[slab] += windows[tap]
    if not any(before or after for before, after in pads):
        return dpadded
    inside = (slice(None), *_crop(sizes, pads), slice(None))
    return np.ascontiguousarray(dpadded[inside])


def col2im(
    dcols: np.ndarray,
    x_shape: tuple[int, ...],
    filter_size: int,
    stride: int,
    padding: int,
) -> np.ndarray:
    """The seed's fold: ``dcols: (N·OH·OW, k·k·C)`` → ``dx: (N, H, W, C)``, ``fold`` for a square filter."""
    return fold(dcols, x_shape, (filter_size,) * 2, _seed_window(stride, padding))


@functools.lru_cache(maxsize=256)
def _plan(
    window: Window, sizes: tuple[int, ...], kernel: tuple[int, ...]
) -> tuple[Pads, tuple[int, ...], tuple[int, int] | None]:
    """The padding, output sizes and seed ``(stride, padding)`` (``Window.uniform``) of ``window`` for inputs of
    ``sizes`` and a ``kernel`` filter, worked out once per geometry (a check calls the layer hundreds of times)."""
    return window.resolve_pads(sizes, kernel), window.output_sizes(sizes, kernel), window.uniform(sizes, kernel)


@functools.lru_cache(maxsize=64)
def _seed_window(stride: int, padding: int, dims: int = 2) -> Window:
    """``Window.of(dims, stride, padding)``, made once per geometry (a forward pass asks for it every call)."""
    return Window.of(dims, stride, padding)


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


# The last unfolding made on each thread: thread id → (key, the input's bits, its read-only im2col matrix), most
# recently used last. At most one per core is kept, so threads that stopped unfolding (the main thread while
# worker threads run a check's groups) lose theirs first.
_unfolded: OrderedDict[int, tuple[tuple, np.ndarray, np.ndarray]] = OrderedDict()
_unfolded_lock = threading.Lock()


def _unfold(
    x: np.ndarray, kernel: tuple[int, ...], window: Window, pads: Pads, out_sizes: tuple[int, ...]
) -> np.ndarray:
    """``unfold(pad(x, pads), …)``, reused while ``x`` holds, bit for bit, the input of this thread's last call.

    A finite-difference check calls ``forward`` hundreds of times, and nearly half of those calls (every weight
    and bias perturbation) pass an unchanged ``x``: comparing its bits with a copy of the previous input (one pass
    over ``x``) costs a fraction of unfolding it again (``∏k`` times as much memory). The matrix is returned
    read-only, since successive caches may share it.
    """

    def unfolded() -> np.ndarray:
        return unfold(pad(x, pads), kernel, window.strides, window.dilations, out_sizes, window.groups)

    size = x.dtype.itemsize
    if not x.flags.c_contiguous or size not in (1, 2, 4, 8):
        return unfolded()
    bits = x.view(f"u{size}")  # compared as integers: -0.0 differs from 0.0, a NaN equals its own bits
    key = (x.shape, x.dtype.str, kernel, window.strides, window.dilations, pads, window.groups)
    thread = threading.get_ident()
    with _unfolded_lock:
        held = _unfolded.pop(thread, None)
    if held is None or held[0] != key or not bool((held[1] == bits).all()):  # same key: same shape and dtype
        held = None  # let the previous matrix go before the new one is made
        cols = unfolded()
        cols.flags.writeable = False
        held = (key, bits.copy(), cols)
    with _unfolded_lock:
        _unfolded[thread] = held
        while len(_unfolded) > _KEEP_UNFOLDED:
            _unfolded.popitem(last=False)
    return held[2]


@dataclass
class _Workspace:
    """One thread's buffers for ``MatrixConvLayer.output`` of one layer at one shape: the padded input (its border
    zero for good), the window view of it, the im2col matrix unfolded from it and the input bits it holds, and
    what ``output`` works out per shape (so that a call for the same layer and shapes starts from it)."""

    layer: MatrixConvLayer
    shapes: tuple  # (x.shape, x.dtype, w.shape)
    padded: np.ndarray  # (N, *Sp, C), written only inside the padding
    inside: tuple[slice, ...]
    windows: np.ndarray  # read-only window view of ``padded``, ``unfold``'s layout
    cols: np.ndarray  # (g, R, ∏k·C/g): never handed out, rewritten when the input changes
    bits: np.ndarray  # the input's bits ``cols`` holds (``x.view(uint)``)
    out_shape: tuple[int, ...]  # (N, *O, C_out)
    groups: int
    # ``outputs``' own padded inputs and im2col matrices, ``(count, *padded.shape)`` and ``(count, *cols.shape)``,
    # for the last two numbers of input points asked for (a check asks for one batch size and its remainder):
    # kept, as ``padded`` and ``cols`` are, so that every call does not pay fresh pages for them.
    stacks: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


# Thread id → its workspace, oldest first. At most one per core is kept (as for ``_unfolded``, whose entry for the
# same thread a new workspace replaces): the main thread's goes once a check's worker threads have made theirs.
_workspaces: dict[int, _Workspace] = {}


def _workspace(layer: MatrixConvLayer, x: np.ndarray, w: np.ndarray) -> _Workspace:
    """This thread's workspace for ``layer`` at the shapes of ``x`` and ``w``, made anew when they change (its
    ``bits`` then match no input, so the first call unfolds)."""
    window = layer.geometry(x.ndim - 2)
    kernel = tuple(w.shape[:-2])
    pads, out_sizes, _ = _plan(window, x.shape[1:-1], kernel)
    thread = threading.get_ident()
    with _unfolded_lock:  # let this thread's previous buffers go first
        _workspaces.pop(thread, None)
        _unfolded.pop(thread, None)
    n, *sizes, c = x.shape
    padded = np.zeros((n, *(s + lo + hi for s, (lo, hi) in zip(sizes, pads, strict=True)), c), x.dtype)
    groups, per_group = window.groups, c // window.groups
    sn, *steps, sc = padded.strides
    shape = (groups, n, *out_sizes, *kernel, per_group)
    window_strides = (
        sc * per_group,
        sn,
        *(step * s for step, s in zip(steps, window.strides, strict=True)),
        *(step * d for step, d in zip(steps, window.dilations, strict=True)),
        sc,
    )
    cols = np.empty((groups, n * math.prod(out_sizes), math.prod(kernel) * per_group), x.dtype)
    bits = np.empty(x.shape, f"u{x.dtype.itemsize}")
    bits.flat[0] = ~x.view(bits.dtype).flat[0]  # differs from x: the first call unfolds
    held = _Workspace(
        layer,
        (x.shape, x.dtype, w.shape),
        padded,
        (slice(None), *_crop(sizes, pads), slice(None)),
        _view(padded, shape, window_strides),
        cols,
        bits,
        (n, *out_sizes, w.shape[-1]),
        groups,
    )
    with _unfolded_lock:
        _workspaces[thread] = held
        while len(_workspaces) > _KEEP_UNFOLDED:
            del _workspaces[next(iter(_workspaces))]
    return held


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)


_KEEP_UNFOLDED = _cores()


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
        return self.window if self.window is not None else _seed_window(self.stride, self.padding, dims)

    def forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, MatrixCache]:
        """``x: (N, *S, C_in)``, ``w: (*kernel, C_in/g, C_out)``, ``b: (C_out,)`` or ``(0,)`` (no bias) →
        ``out: (N, *O, C_out)``."""
        window = self.geometry(x.ndim - 2)
        kernel, c_out, groups = tuple(w.shape[:-2]), w.shape[-1], window.groups
        pads, out_sizes, _ = _plan(window, x.shape[1:-1], kernel)
        cols = _unfold(x, kernel, window, pads, out_sizes)
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
        """``forward(x, w, b)[0]``, bit for bit, without the cache: what a finite-difference engine calls hundreds of
        times. The padded input and its im2col matrix live in buffers this thread keeps between calls (the window
        copy made again only when ``x``'s bits changed), and the activation is applied in place: the same
        operations on the same values as ``forward``, minus its allocations and bookkeeping. Not for subclasses
        that change ``forward`` (``output_function`` checks)."""
        if not x.flags.c_contiguous or x.dtype.itemsize not in (1, 2, 4, 8) or x.size == 0:
            return self.forward(x, w, b)[0]
        space = self._unfolded(x, w)
        groups, c_out = space.groups, space.out_shape[-1]
        if groups == 1:
            z = space.cols[0] @ w.reshape(-1, c_out)
        else:
            weights = np.ascontiguousarray(w.reshape(-1, groups, c_out // groups).transpose(1, 0, 2))
            z = np.matmul(space.cols, weights).transpose(1, 0, 2).reshape(-1, c_out)
        if b.size > 0:
            z += b
        if self.activation is not Activation.NONE:
            act.apply(self.activation, z, out=z)
        return z.reshape(space.out_shape)

    def _unfolded(self, x: np.ndarray, w: np.ndarray) -> _Workspace:
        """This thread's workspace for ``x`` and ``w``'s shapes, its im2col matrix holding ``x`` (``x``: C-contiguous,
        not empty): unfolded again only when ``x``'s bits changed since the last call."""
        space = _workspaces.get(threading.get_ident())
        if space is None or space.layer is not self or space.shapes != (x.shape, x.dtype, w.shape):
            space = _workspace(self, x, w)
        bits = x.view(space.bits.dtype)
        if not bool((bits == space.bits).all()):
            space.padded[space.inside] = x
            np.copyto(space.cols.reshape(space.windows.shape), space.windows)
            np.copyto(space.bits, bits)
        return space

    def outputs(self, params: Sequence[np.ndarray], points: Sequence[Point]) -> np.ndarray | None:
        """``output`` at each of ``points`` (changes of the base ``params = (x, w, b)``, all of one argument), bit
        for bit, from one pipeline: the changed arguments stacked along a new leading axis, one unfolding of the
        stack (input points), one batched matrix product (one GEMM per point, of the same sizes as ``output``'s),
        the bias and the activation over the whole stack. ``points`` cost one call's Python and numpy overhead
        instead of one each: what a small layer's check is mostly made of. None when the points change more than
        one argument or the arrays are not what ``output`` unfolds in place (the caller then calls ``output``).

        Returns ``(len(points), N, *O, C_out)``: the outputs in the order of ``points``.
        """
        x, w, b = params
        tensors = {int(point.tensor) for point in points}
        if len(tensors) != 1 or not x.flags.c_contiguous or x.dtype.itemsize not in (1, 2, 4, 8) or x.size == 0:
            return None
        if w.dtype != x.dtype or (b.size > 0 and b.dtype != x.dtype):
            return None
        tensor, count = tensors.pop(), len(points)
        space = self._unfolded(x, w)
        changed = np.empty((count, *params[tensor].shape), params[tensor].dtype)
        changed[...] = params[tensor]
        flat = changed.reshape(count, -1)
        for row, point in zip(flat, points, strict=True):
            row[point.where] = point.values
        groups, out_shape = space.groups, space.out_shape
        c_out = out_shape[-1]
        if tensor == 0:  # the stack's own padded inputs and im2col matrices, laid out as the workspace's
            padded, cols = self._stack_buffers(space, count)
            padded[(slice(None),) + space.inside] = changed
            windows = _view(padded, (count, *space.windows.shape), (padded.strides[0], *space.windows.strides))
            np.copyto(cols.reshape(windows.shape), windows)
        else:
            cols = space.cols
        # (count, *kernel, C_in/g, C_out): one product per point, as ``output`` makes one per call
        weights = changed if tensor == 1 else np.broadcast_to(w, (count, *w.shape))
        if groups == 1:  # (count, R, C_out)
            z = np.matmul(cols[:, 0] if tensor == 0 else cols[0], weights.reshape(count, -1, c_out))
        else:  # W_γ per point: (count, g, ∏k·C_in/g, C_out/g), as ``output`` lays them out
            per_group = weights.reshape(count, -1, groups, c_out // groups).transpose(0, 2, 1, 3)
            product = np.matmul(cols, np.ascontiguousarray(per_group))  # (count, g, R, C_out/g)
            # Each point laid out as ``output``'s (a copy, or with C_out/g = 1 a view with the same strides): the
            # engine's reductions follow the layout, and so does the order they add in.
            z = product.transpose(0, 2, 1, 3).reshape(count, -1, c_out)
        if b.size > 0:
            z += changed[:, None, :] if tensor == 2 else b
        if self.activation is not Activation.NONE:
            act.apply(self.activation, z, out=z)
        return z.reshape(count, *out_shape)

    @staticmethod
    def _stack_buffers(space: _Workspace, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``space``'s padded inputs (border zero for good) and im2col matrices for ``count`` input points."""
        held = space.stacks.pop(count, None)
        if held is None:
            if len(space.stacks) >= 2:
                del space.stacks[next(iter(space.stacks))]
            dtype = space.padded.dtype
            held = (np.zeros((count, *space.padded.shape), dtype), np.empty((count, *space.cols.shape), dtype))
        space.stacks[count] = held  # most recently used last
        return held

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
        seed = _plan(window, cache.x_shape[1:-1], kernel)[2]
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
    itemsize = 8  # the engine differences in float64 whenever the layer computes in it
    window = shape.window
    pads, out_sizes, _ = _plan(window, shape.spatial_in, shape.kernel)
    rows = shape.batch * math.prod(out_sizes)
    cols = rows * math.prod(shape.kernel) * shape.in_depth * itemsize
    if cols > STACK_MAX_COLS:
        return 0
    padded = math.prod(s + lo + hi for s, (lo, hi) in zip(shape.spatial_in, pads, strict=True))
    point = cols + (rows * shape.out_depth + shape.batch * padded * shape.in_depth) * itemsize
    return max(0, min(STACK_GROUPS, STACK_BYTES // (2 * point)))


def output_function(layer: object) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None:
    """``layer.output`` when ``layer`` is a ``MatrixConvLayer`` whose ``forward`` is the built-in one (its output is
    then ``forward``'s, bit for bit), else None: a subclass with its own forward is differenced through that."""
    if isinstance(layer, MatrixConvLayer) and type(layer).forward is MatrixConvLayer.forward:
        return layer.output
    return None
