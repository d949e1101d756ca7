"""The N-d fold (col2im) and grouped steps with the knobs people get wrong, shared by the planted bugs of the
``window`` and ``grouped`` families and the diagnosis hypotheses that name them.

A planted bug and the hypothesis that names it must compute the same wrong gradient, so both call these. Shapes
follow ``convcheck.windows``: ``dcols`` holds one row per window, ``(N·∏O, ∏k·C_in)`` with one group or
``(g, N·∏O, ∏k·C_in/g)`` with ``g``, each row laid out ``(*kernel, c)``; ``dz: (N·∏O, C_out)``; the fold's result is
the cropped input gradient ``x_shape = (N, *S, C_in)``. Along each axis window ``o`` starts at padded row ``o·s`` and
its tap ``j`` reads padded row ``o·s + j·d``; the correct fold adds every row of ``dcols`` back there and crops
``before`` rows.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from convcheck.geometry import Window
from convcheck.spec import ConvShape


def fold_variant(
    dcols: np.ndarray,
    x_shape: Sequence[int],
    kernel: Sequence[int],
    window: Window,
    *,
    starts: Sequence[int] | None = None,
    taps: Sequence[int] | None = None,
    kernel_read: Sequence[int] | None = None,
    crop: Sequence[int] | None = None,
) -> np.ndarray:
    """The fold of ``convcheck.windows`` written as a loop over kernel offsets, with its four knobs exposed.

    Args:
        dcols: ``(R, ∏k·C)`` or ``(g, R, ∏k·C/g)`` as the layer's unfold lays it out.
        x_shape: ``(N, *S, C)``; the output sizes ``O`` and the padding come from ``window`` and ``kernel``.
        starts: per axis, the padded row step between neighbouring windows (None: the strides, correct).
        taps: per axis, the padded row step between a window's taps (None: the dilations, correct).
        kernel_read: the kernel extents each row of ``dcols`` is read with, same product as ``kernel`` (None:
            ``kernel``, correct); tap ``(a, b, …)`` of the reading is placed at ``a·taps[0], b·taps[1], …``.
        crop: per axis, the first padded row kept (None: the padding before, correct).
    Returns:
        ``dx: x_shape``, in ``dcols``'s dtype; rows a wrong placement sends past the padded input are lost.
    """
    return _fold_loop(dcols, x_shape, kernel, window, starts, taps, kernel_read, crop, accumulate=True)


def fold_assigning(dcols: np.ndarray, x_shape: Sequence[int], kernel: Sequence[int], window: Window) -> np.ndarray:
    """``fold_variant`` writing ``=`` instead of ``+=``, kernel offset after kernel offset in row-major order, so
    where windows overlap the last offset wins: the seed's ``col2im_variant(accumulate=False)`` on any geometry."""
    return _fold_loop(dcols, x_shape, kernel, window, None, None, None, None, accumulate=False)


def _fold_loop(
    dcols: np.ndarray,
    x_shape: Sequence[int],
    kernel: Sequence[int],
    window: Window,
    starts: Sequence[int] | None,
    taps: Sequence[int] | None,
    kernel_read: Sequence[int] | None,
    crop: Sequence[int] | None,
    *,
    accumulate: bool,
) -> np.ndarray:
    """The loop ``fold_variant`` and ``fold_assigning`` share (knobs as in ``fold_variant``)."""
    n, *sizes, c = x_shape
    pads = window.resolve_pads(sizes, kernel)
    outs = window.output_sizes(sizes, kernel)
    starts = tuple(window.strides if starts is None else starts)
    taps = tuple(window.dilations if taps is None else taps)
    read = tuple(kernel if kernel_read is None else kernel_read)
    crop = tuple(before for before, _ in pads) if crop is None else tuple(crop)
    groups = window.groups
    extent = [
        max(size + before + after, (o - 1) * st + (r - 1) * t + 1, first + size)
        for size, (before, after), o, st, r, t, first in zip(sizes, pads, outs, starts, read, taps, crop, strict=True)
    ]
    dpadded = np.zeros((n, *extent, c), dtype=dcols.dtype)
    if groups == 1:
        rows = dcols.reshape(n, *outs, *read, c)
        target = dpadded
    else:  # (g, n, *o, *k, c/g) → (n, *o, *k, g, c/g), onto group γ's channels
        rows = np.moveaxis(dcols.reshape(groups, n, *outs, *read, c // groups), 0, -2)
        target = dpadded.reshape(n, *extent, groups, c // groups)
    every = (slice(None),) * (1 + len(sizes))
    for offset in itertools.product(*map(range, read)):
        axes = zip(offset, taps, starts, outs, strict=True)
        slab: tuple[slice, ...] = (slice(None), *(slice(j * t, j * t + st * (o - 1) + 1, st) for j, t, st, o in axes))
        tap: tuple[slice | int, ...] = (*every, *offset)
        if accumulate:
            target[slab] += rows[tap]
        else:
            target[slab] = rows[tap]
    kept = tuple(slice(first, first + size) for first, size in zip(crop, sizes, strict=True))
    inside: tuple[slice, ...] = (slice(None), *kept, slice(None))
    return np.ascontiguousarray(dpadded[inside])


def flipped_weights(weights: np.ndarray, w_shape: Sequence[int], groups: int) -> np.ndarray:
    """The layer's weight matrix (``(∏k·C_in, C_out)``, per group ``(g, ∏k·C_in/g, C_out/g)``) of the kernel
    rotated 180° (every spatial axis reversed): what a backward written as a true convolution multiplies dZ by."""
    dims = len(w_shape) - 2
    c_out = w_shape[-1]
    w = weights.reshape(tuple(w_shape)) if groups == 1 else weights.transpose(1, 0, 2).reshape(tuple(w_shape))
    flipped = w[(slice(None, None, -1),) * dims]
    if groups == 1:
        return np.ascontiguousarray(flipped.reshape(-1, c_out))
    return np.ascontiguousarray(flipped.reshape(-1, groups, c_out // groups).transpose(1, 0, 2))


def crop_off_by_one(window: Window, sizes: Sequence[int], kernel: Sequence[int]) -> tuple[int, ...]:
    """The first padded row the crop keeps per axis when it starts one row early (``before − 1``) wherever there
    is padding before, as ``dpad[:, p − 1 : p − 1 + H]`` does; an axis without padding before is cropped right."""
    return tuple(before - 1 if before else 0 for before, _ in window.resolve_pads(sizes, kernel))


def last_windows_dropped(dcols: np.ndarray, batch: int, outs: Sequence[int], axes: Sequence[int]) -> np.ndarray:
    """``dcols`` with the rows of the last window along each axis in ``axes`` zeroed: what a window loop of
    ``(S + before + after − span) // s`` iterations, without the ``+ 1``, leaves of dM (a copy; any groups)."""
    lead = dcols.shape[:-2]  # (g,) with groups, () without
    kept = dcols.reshape(*lead, batch, *outs, dcols.shape[-1]).copy()
    first = len(lead) + 1
    for axis in axes:
        index: list[slice | int] = [slice(None)] * kept.ndim
        index[first + axis] = outs[axis] - 1
        kept[tuple(index)] = 0
    return kept.reshape(dcols.shape)


def swap_height_width(values: Sequence[int]) -> tuple[int, ...]:
    """Per-axis values with the height and width entries exchanged (the last two axes; a 1-D layer's one axis
    stays): what ``kh, kw = w.shape[1], w.shape[0]`` or ``sw, sh = stride`` does."""
    values = tuple(values)
    return values if len(values) < 2 else (*values[:-2], values[-1], values[-2])


def split_groups(dz: np.ndarray, groups: int) -> np.ndarray:
    """``dz: (R, C_out)`` as ``(g, R, C_out/g)``: output channel ``co`` in group ``co // (C_out/g)`` (correct)."""
    return dz.reshape(dz.shape[0], groups, -1).transpose(1, 0, 2)


def split_groups_interleaved(dz: np.ndarray, groups: int) -> np.ndarray:
    """``dz`` split as ``dz.reshape(R, C_out/g, g)``: channel ``co`` put in group ``co % g``, mixing channels of
    different groups (what ``reshape(R, -1, g)`` for ``reshape(R, g, -1)`` does)."""
    return dz.reshape(dz.shape[0], -1, groups).transpose(2, 0, 1)


def grouped_dw(dw_groups: np.ndarray, w_shape: Sequence[int]) -> np.ndarray:
    """Per-group ``dW_γ: (g, ∏k·C_in/g, C_out/g)`` laid back as ``w: (*kernel, C_in/g, C_out)`` (correct)."""
    return dw_groups.transpose(1, 0, 2).reshape(tuple(w_shape))


def grouped_dw_unordered(dw_groups: np.ndarray, w_shape: Sequence[int]) -> np.ndarray:
    """``dW_γ`` reshaped to w's shape without moving the group axis next to the output channels: the groups'
    blocks end up spread over the kernel taps instead of the output channels."""
    return dw_groups.reshape(tuple(w_shape))


def summed_over_channels(dcols: np.ndarray) -> np.ndarray:
    """A depthwise ``dM: (g, R, ∏k)`` (one input channel per group) summed over the channels and handed to every
    channel: what ``dM.sum(axis=channels, keepdims=True)`` broadcast back does."""
    return np.ascontiguousarray(np.broadcast_to(dcols.sum(axis=0, keepdims=True), dcols.shape))


def same_pads_swapped(window: Window, sizes: Sequence[int], kernel: Sequence[int]) -> Window:
    """An explicit window with ``same``'s padding but the odd row placed before instead of after."""
    pads = tuple((after, before) for before, after in window.resolve_pads(sizes, kernel))
    return Window(window.strides, window.dilations, pads, groups=window.groups)


def reads_input(shape: ConvShape) -> bool:
    """Whether some window tap reads a real (unpadded) input entry: along every axis some ``o·s + j·d`` lands in
    ``[before, before + S)``. Without one, dx and dw are 0 whatever the backward does (windows of padding only)."""
    outs, pads = shape.spatial_out, shape.pads
    return all(
        any(before <= o * s + j * d < before + size for o in range(count) for j in range(k))
        for size, k, s, d, (before, _), count in zip(
            shape.spatial_in, shape.kernel, shape.strides, shape.dilations, pads, outs, strict=True
        )
    )


def rewires_fold(shape: ConvShape, **knobs: Sequence[int]) -> bool:
    """Whether ``fold_variant`` with ``knobs`` sends some entry of dM to another input entry than the correct
    fold (or to none where the correct one sends it to a real entry, or the reverse): exactly when its dx differs.

    Decided by folding one fixed dM of generic values (seeded standard normals, batch and channels 1, which
    the wiring does not depend on) both ways: each dx entry is a sum of distinct generic values, so two entries
    agree exactly when they sum the same values; float64 rounding is far below the 1e-9 used to compare.
    """
    x_shape = (1, *shape.spatial_in, shape.groups)
    probe = np.random.default_rng(0).standard_normal(
        (shape.groups, math.prod(shape.spatial_out), math.prod(shape.kernel))
    )
    if shape.groups == 1:
        probe = probe[0]
    right = fold_variant(probe, x_shape, shape.kernel, shape.window)
    wrong = fold_variant(probe, x_shape, shape.kernel, shape.window, **knobs)
    return not np.allclose(wrong, right, rtol=0, atol=1e-9)
