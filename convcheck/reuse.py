"""What the built-in matrix layer keeps between the hundreds of forward calls of one check, so that each costs
only its arithmetic: the last im2col matrix per thread (``cached_unfold``, for ``forward``), and per-thread
workspaces (``Workspace``) in which ``output`` computes one forward pass and ``outputs`` many perturbed points
at once, without allocating. Every result is bit for bit the layer's ``forward``.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from convcheck import activation as act
from convcheck.geometry import Pads, Window
from convcheck.spec import Activation
from convcheck.windows import crop, pad, plan, strided_view, unfold

__all__ = ["Point", "Workspace", "cached_unfold", "output", "outputs"]

#: Bytes of a chunk of ``outputs``' points (their padded inputs, im2col matrices and outputs), made and multiplied
#: while in a core's cache: on the sweep of 320 small layers, every 3rd, one BLAS thread, CPU a check 13.7 ms in
#: one chunk, 13.8 / 13.0 / 12.8 / 13.2 / 13.8 ms in chunks of 256 KiB / 512 KiB / 1 / 2 / 4 MiB.
CHUNK_BYTES = 1 << 20


class Layer(Protocol):
    """What these buffers need of the layer they serve (``convcheck.layer.MatrixConvLayer``)."""

    @property
    def activation(self) -> Activation: ...
    def geometry(self, dims: int) -> Window: ...
    def forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, object]: ...


class Point(Protocol):
    """A change of the base point (``numeric.fanout.Point``): ``values`` at flat positions ``where`` of x, w or b."""

    @property
    def tensor(self) -> int: ...
    @property
    def where(self) -> np.ndarray: ...
    @property
    def values(self) -> np.ndarray: ...


# The last unfolding made on each thread: thread id → (key, the input's bits, its read-only im2col matrix), most
# recently used last. At most one per core is kept, so threads that stopped unfolding (the main thread while
# worker threads run a check's groups) lose theirs first.
_unfolded: OrderedDict[int, tuple[tuple, np.ndarray, np.ndarray]] = OrderedDict()
_unfolded_lock = threading.Lock()


def cached_unfold(
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
class Workspace:
    """One thread's buffers for ``MatrixConvLayer.output`` of one layer at one shape: the padded input (its border
    zero for good), the window view of it, the im2col matrix unfolded from it and the input bits it holds, and
    what ``output`` works out per shape (so that a call for the same layer and shapes starts from it)."""

    layer: Layer
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
_workspaces: dict[int, Workspace] = {}


def workspace_for(layer: Layer, x: np.ndarray, w: np.ndarray) -> Workspace:
    """This thread's workspace for ``layer`` at the shapes of ``x`` and ``w``, made anew when they change (its
    ``bits`` then match no input, so the first call unfolds)."""
    window = layer.geometry(x.ndim - 2)
    kernel = tuple(w.shape[:-2])
    pads, out_sizes, _ = plan(window, x.shape[1:-1], kernel)
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
    held = Workspace(
        layer,
        (x.shape, x.dtype, w.shape),
        padded,
        (slice(None), *crop(sizes, pads), slice(None)),
        strided_view(padded, shape, window_strides),
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


def output(layer: Layer, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``forward(x, w, b)[0]``, bit for bit, without the cache: what a finite-difference engine calls hundreds of
    times. The padded input and its im2col matrix live in buffers this thread keeps between calls (the window
    copy made again only when ``x``'s bits changed), and the activation is applied in place: the same
    operations on the same values as ``forward``, minus its allocations and bookkeeping. Not for subclasses
    that change ``forward`` (``output_function`` checks)."""
    if not x.flags.c_contiguous or x.dtype.itemsize not in (1, 2, 4, 8) or x.size == 0:
        return layer.forward(x, w, b)[0]
    space = unfolded(layer, x, w)
    groups, c_out = space.groups, space.out_shape[-1]
    if groups == 1:
        z = space.cols[0] @ w.reshape(-1, c_out)
    else:
        weights = np.ascontiguousarray(w.reshape(-1, groups, c_out // groups).transpose(1, 0, 2))
        z = np.matmul(space.cols, weights).transpose(1, 0, 2).reshape(-1, c_out)
    if b.size > 0:
        z += b
    if layer.activation is not Activation.NONE:
        act.apply(layer.activation, z, out=z)
    return z.reshape(space.out_shape)


def unfolded(layer: Layer, x: np.ndarray, w: np.ndarray) -> Workspace:
    """This thread's workspace for ``x`` and ``w``'s shapes, its im2col matrix holding ``x`` (``x``: C-contiguous,
    not empty): unfolded again only when ``x``'s bits changed since the last call."""
    space = _workspaces.get(threading.get_ident())
    if space is None or space.layer is not layer or space.shapes != (x.shape, x.dtype, w.shape):
        space = workspace_for(layer, x, w)
    bits = x.view(space.bits.dtype)
    if not bool((bits == space.bits).all()):
        space.padded[space.inside] = x
        np.copyto(space.cols.reshape(space.windows.shape), space.windows)
        np.copyto(space.bits, bits)
    return space


def outputs(layer: Layer, params: Sequence[np.ndarray], points: Sequence[Point]) -> np.ndarray | None:
    """``output`` at each of ``points`` (changes of the base ``params = (x, w, b)``, all of one argument), bit
    for bit, from one pipeline: the changed arguments stacked along a new leading axis, one unfolding of the
    stack (input points), one batched matrix product (one GEMM per point, of the same sizes as ``output``'s),
    the bias and the activation over the whole stack, a chunk of ``CHUNK_BYTES`` at a time for the input and
    weights points of a layer of one group. ``points`` cost one call's Python and numpy overhead instead of one
    each: what a small layer's check is mostly made of. None when the points change more than one argument or the
    arrays are not what ``output`` unfolds in place (the caller then calls ``output``).

    Returns ``(len(points), N, *O, C_out)``: the outputs in the order of ``points``.
    """
    x, w, b = params
    tensors = {int(point.tensor) for point in points}
    if len(tensors) != 1 or not x.flags.c_contiguous or x.dtype.itemsize not in (1, 2, 4, 8) or x.size == 0:
        return None
    if w.dtype != x.dtype or (b.size > 0 and b.dtype != x.dtype):
        return None
    tensor, count = tensors.pop(), len(points)
    space = unfolded(layer, x, w)
    out_shape = space.out_shape
    # A layer of one group takes its input and weights points a chunk at a time: each chunk's inputs, products, bias
    # and activation while they are in cache (a whole stack is several times the size of a core's cache).
    per_point = space.cols.nbytes + (space.padded.nbytes if tensor == 0 else 0) + math.prod(out_shape) * 8
    chunk = max(1, CHUNK_BYTES // per_point)
    if space.groups > 1 or chunk >= count or tensor == 2:  # bias points share one product: made once
        return _stacked_outputs(layer, space, params, tensor, points).reshape(count, *out_shape)
    z = np.empty((count, math.prod(out_shape[:-1]), out_shape[-1]), np.result_type(x, w))
    for start in range(0, count, chunk):
        _stacked_outputs(layer, space, params, tensor, points[start : start + chunk], z[start : start + chunk])
    return z.reshape(count, *out_shape)


def _stacked_outputs(
    layer: Layer,
    space: Workspace,
    params: Sequence[np.ndarray],
    tensor: int,
    points: Sequence[Point],
    into: np.ndarray | None = None,
) -> np.ndarray:
    """``outputs`` of ``points`` (all of argument ``tensor``) in one pipeline, as ``(len(points), R, C_out)`` (``R``
    the output positions); written into ``into`` when given (input or weights points of a layer of one group)."""
    x, w, b = params
    count = len(points)
    changed = np.empty((count, *params[tensor].shape), params[tensor].dtype)
    changed[...] = params[tensor]
    flat = changed.reshape(count, -1)
    for row, point in zip(flat, points, strict=True):
        row[point.where] = point.values
    groups, c_out = space.groups, space.out_shape[-1]
    if tensor == 0:  # the stack's own padded inputs and im2col matrices, laid out as the workspace's
        padded, cols = _stack_buffers(space, count)
        padded[(slice(None),) + space.inside] = changed
        windows = strided_view(padded, (count, *space.windows.shape), (padded.strides[0], *space.windows.strides))
        np.copyto(cols.reshape(windows.shape), windows)
    else:
        cols = space.cols
    if groups == 1 and tensor == 2:  # (count, R, C_out): the points share ``output``'s product, M·W
        z = np.empty((count, space.cols.shape[1], c_out), changed.dtype)
        z[...] = space.cols[0] @ w.reshape(-1, c_out)
    elif groups == 1:  # (count, R, C_out): one product per point, as ``output`` makes one per call
        weights = changed.reshape(count, -1, c_out) if tensor == 1 else w.reshape(-1, c_out)  # (count,) K × C_out
        z = np.matmul(cols[:, 0] if tensor == 0 else cols[0], weights, out=into)
    else:  # W_γ per point: (count, g, ∏k·C_in/g, C_out/g), as ``output`` lays them out
        weights = changed if tensor == 1 else np.broadcast_to(w, (count, *w.shape))  # (count, *kernel, C_in/g, C_out)
        per_group = weights.reshape(count, -1, groups, c_out // groups).transpose(0, 2, 1, 3)
        product = np.matmul(cols, np.ascontiguousarray(per_group))  # (count, g, R, C_out/g)
        # Each point laid out as ``output``'s (a copy, or with C_out/g = 1 a view with the same strides): the
        # engine's reductions follow the layout, and so does the order they add in.
        z = product.transpose(0, 2, 1, 3).reshape(count, -1, c_out)
    if b.size > 0:
        z += changed[:, None, :] if tensor == 2 else b
    if layer.activation is not Activation.NONE:
        act.apply(layer.activation, z, out=z)
    return z


def _stack_buffers(space: Workspace, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``space``'s padded inputs (border zero for good) and im2col matrices for ``count`` input points."""
    held = space.stacks.pop(count, None)
    if held is None:
        if len(space.stacks) >= 2:
            del space.stacks[next(iter(space.stacks))]
        dtype = space.padded.dtype
        held = (np.zeros((count, *space.padded.shape), dtype), np.empty((count, *space.cols.shape), dtype))
    space.stacks[count] = held  # most recently used last
    return held
