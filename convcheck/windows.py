"""im2col and col2im for every geometry ``ConvShape`` covers: zero padding per axis and side (``pad``), the
unfolding of every window into one row of a matrix (``unfold``, the textbook's ``im2col`` for a square filter), and
its adjoint, which adds each row back onto its window (``fold``, the textbook's ``col2im``).

No Python loop runs over output positions: ``unfold`` is one strided copy (a read-only window *view* of the padded
input, ``(g, N, *spatial_out, *kernel, C_in/g)``, copied into the matrix); ``fold`` loops over the ``∏k`` kernel
offsets, each iteration adding a strided slab of the whole batch (windows overlap when ``s < d·(k − 1) + 1``, so
gradients accumulate). Padded rows that no window reaches (remainders of the stride, the gaps between dilated
taps) receive zero gradient.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from convcheck.geometry import Pads, Window

__all__ = ["col2im", "crop", "fold", "im2col", "pad", "plan", "seed_window", "strided_view", "unfold"]


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
    inside = (slice(None), *crop(sizes, pads), slice(None))
    padded[inside] = x
    return padded


def crop(sizes: Sequence[int], pads: Pads) -> tuple[slice, ...]:
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
    windows = strided_view(x_padded, shape, window_strides)
    cols = np.empty((groups, n * math.prod(out_sizes), math.prod(kernel) * per_group), dtype=x_padded.dtype)
    np.copyto(cols.reshape(windows.shape), windows)
    return cols[0] if groups == 1 else cols


def strided_view(array: np.ndarray, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
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
    pads, out_sizes, _ = plan(window, tuple(sizes), tuple(kernel))
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
    inside = (slice(None), *crop(sizes, pads), slice(None))
    return np.ascontiguousarray(dpadded[inside])


def col2im(
    dcols: np.ndarray,
    x_shape: tuple[int, ...],
    filter_size: int,
    stride: int,
    padding: int,
) -> np.ndarray:
    """The seed's fold: ``dcols: (N·OH·OW, k·k·C)`` → ``dx: (N, H, W, C)``, ``fold`` for a square filter."""
    return fold(dcols, x_shape, (filter_size,) * 2, seed_window(stride, padding))


@functools.lru_cache(maxsize=256)
def plan(
    window: Window, sizes: tuple[int, ...], kernel: tuple[int, ...]
) -> tuple[Pads, tuple[int, ...], tuple[int, int] | None]:
    """The padding, output sizes and seed ``(stride, padding)`` (``Window.uniform``) of ``window`` for inputs of
    ``sizes`` and a ``kernel`` filter, worked out once per geometry (a check calls the layer hundreds of times)."""
    return window.resolve_pads(sizes, kernel), window.output_sizes(sizes, kernel), window.uniform(sizes, kernel)


@functools.lru_cache(maxsize=64)
def seed_window(stride: int, padding: int, dims: int = 2) -> Window:
    """``Window.of(dims, stride, padding)``, made once per geometry (a forward pass asks for it every call)."""
    return Window.of(dims, stride, padding)
