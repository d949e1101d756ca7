"""Perturbation groups: which entries of x, w or b are perturbed together, and which of them owns each output.

Output ``(n, *o, co)`` depends only on the input entries of its window in the channels of ``co``'s group, on
``w[..., co]`` and on ``b[co]``. Entries that share no output can be perturbed together, each output's change
being the doing of the one perturbed entry in its window, its *owner* (column grouping for sparse Jacobians,
Curtis, Powell & Reid 1974).

Input groups, one axis at a time. Along an axis with kernel ``k``, dilation ``d`` and stride ``s``, output ``o`` reads
rows ``h = o·s − before + j·d`` for ``j = 0 … k − 1``. Two rows ``h``, ``h'`` share a window only if
``h ≡ h' (mod d)`` and ``|h − h'| ≤ (k − 1)·d``. The rows of one window have ``h div d = (o·s − before) div d + j``:
``k`` consecutive integers, so grouping the rows by their class ``(h div d) mod k`` puts exactly one row of each
class in every window (or none, where the window's tap of that class lies in the padding: that output has no
owner). Classes along every axis combine: ``∏k`` position classes. Channels: conv groups never mix, so channel
``c'`` of every group (``γ·C_in/g + c'``) is perturbed at once, each output owned by the entry in its own group's
channel (``Ownership.OUTPUT``: the owner depends on the position and the output channel's group; with one
group it is ``Ownership.POSITION``, the same for every channel). Hence
``∏ min(k, ⌈S/d⌉) · C_in/g`` input groups, all batch items at once (an axis of ``S`` rows holds only
``min(k, ⌈S/d⌉)`` classes).

Lower bound. The entries one output sees must all be in different groups: ``∏k·C_in/g`` of them when its window lies
wholly inside the input, so the input grouping is minimal for every layer with such a window; when every window
reaches into the padding (inputs barely larger than, or smaller than, the dilated kernel) the bound is the largest
number of real rows a window holds, at most the class count above.

Weights ``w[*kpos, ci, :]`` are perturbed together (output channel ``co`` sees only its own column): ``∏k·C_in/g``
groups, again the number of weights one output sees. The bias is one group (none without a bias). So a grouped check
of every entry costs ``2·(2·∏k·C_in/g + 1)`` forward passes (``grouped_passes``), whatever N and the sizes are.
Shapes as in ``convcheck.spec``: x ``(N, *S, C_in)``, w ``(*kernel, C_in/g, C_out)``, b ``(C_out,)``,
out ``(N, *O, C_out)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

import numpy as np

from convcheck.results import Tensor
from convcheck.spec import ConvShape


class Ownership(str, Enum):
    """How a group's ownership of the outputs ``(N, *O, C_out)`` is laid out."""

    POSITION = "position"  # ``owner: (N, *O)`` local index (−1: no owner), the same for every channel
    OUTPUT = "output"  # ``owner: (N, *O, C_out)`` local index per output (−1: no owner)
    CHANNEL = "channel"  # ``owner: (C_out,)`` local index, the same for every position
    ALL = "all"  # every output belongs to local entry 0


@dataclass(frozen=True)
class Group:
    """Entries perturbed together and, per output, which of them owns it (see ``Ownership``).

    ``direction`` (directional only): the perturbation to add, ``±eps·direction`` (flat, like the tensor).
    ``span``: the same entries as a slice when they are one increasing run (gathered and scattered as views).
    """

    tensor: Tensor
    entries: np.ndarray  # flat indices into the tensor
    ownership: Ownership
    owner: np.ndarray | None = None
    unowned: np.ndarray | None = None  # (N, *O) bool, position and output groups only
    direction: np.ndarray | None = None
    span: slice | None = None


@dataclass(frozen=True)
class _AxisClass:
    """One row class along one axis: its rows, and for each output position the owning row's index among them."""

    rows: np.ndarray  # the input rows of the class, increasing
    owner: np.ndarray  # (O,) index into ``rows`` of the row each output reads, −1 where it reads padding


def _axis_classes(shape: ConvShape, axis: int) -> list[_AxisClass]:
    """The row classes ``(h div d) mod k`` along ``axis`` that hold at least one row (module docstring)."""
    size, k, s, d = shape.spatial_in[axis], shape.kernel[axis], shape.strides[axis], shape.dilations[axis]
    before = shape.pads[axis][0]
    h = np.arange(size)
    start = np.arange(shape.spatial_out[axis]) * s - before
    classes = []
    for residue in range(min(k, (size - 1) // d + 1)):
        row = start + ((residue - start // d) % k) * d  # the tap of this class in each window
        inside = (row >= 0) & (row < size)
        # Rows of one class come in runs of d: (h div d) = m·k + residue, h mod d = t, at index m·d + t.
        index = (row // d // k) * d + row % d
        classes.append(_AxisClass(h[(h // d) % k == residue], np.where(inside, index, -1)))
    return classes


def input_groups(shape: ConvShape) -> Iterator[Group]:
    """``∏ min(k, ⌈S/d⌉) · C_in/g`` groups: one row class per axis, one channel per conv group, every batch item."""
    n, c, groups = shape.batch, shape.in_depth, shape.groups
    per_group = c // groups
    dims = shape.dims
    batch = np.arange(n).reshape(n, *(1,) * dims)
    for classes in itertools.product(*(_axis_classes(shape, axis) for axis in range(dims))):
        # Local index of each output's owner among the group's positions, laid out (n, *rows), and the flat
        # position (without the channel) of every entry of the group.
        local, positions, valid = batch, batch, np.ones((1,) * (dims + 1), dtype=bool)
        for axis, cls in enumerate(classes):
            along = (1,) * (axis + 1) + (-1,) + (1,) * (dims - axis - 1)
            owner = cls.owner.reshape(along)
            valid = valid & (owner >= 0)
            local = local * len(cls.rows) + owner
            positions = positions * shape.spatial_in[axis] + cls.rows.reshape(along)
        owner = np.broadcast_to(np.where(valid, local, -1), (n, *shape.spatial_out))
        positions = positions.reshape(-1)
        unowned = owner < 0
        if groups > 1:  # local entries (position, γ): output channel co belongs to γ = co // (C_out/g)
            group_of = np.arange(shape.out_depth) // (shape.out_depth // groups)
            by_output = np.where(unowned[..., None], -1, owner[..., None] * groups + group_of)
        for channel in range(per_group):
            if groups == 1:
                yield Group(Tensor.INPUT, positions * c + channel, Ownership.POSITION, owner, unowned)
            else:
                entries = (positions[:, None] * c + np.arange(groups) * per_group + channel).reshape(-1)
                yield Group(Tensor.INPUT, entries, Ownership.OUTPUT, by_output, unowned)


def weight_groups(shape: ConvShape) -> Iterator[Group]:
    """``∏k·C_in/g`` groups: ``w[*kpos, ci, :]``, every output channel at once."""
    c_out = shape.out_depth
    owner = np.arange(c_out)
    for first in range(0, math.prod(shape.w_shape), c_out):
        entries = np.arange(first, first + c_out)
        yield Group(Tensor.WEIGHTS, entries, Ownership.CHANNEL, owner, span=slice(first, first + c_out))


def bias_groups(shape: ConvShape) -> Iterator[Group]:
    """One group: every bias entry at once (output channel ``co`` sees only ``b[co]``); none without a bias."""
    if not shape.bias:
        return
    c_out = shape.out_depth
    yield Group(Tensor.BIAS, np.arange(c_out), Ownership.CHANNEL, np.arange(c_out), span=slice(0, c_out))


def tensor_groups(shape: ConvShape, tensor: Tensor) -> Iterator[Group]:
    """The groups that cover every entry of ``tensor``."""
    return (input_groups, weight_groups, bias_groups)[tensor](shape)


def single_entry_groups(tensor: Tensor, entries: np.ndarray) -> Iterator[Group]:
    """One group per flat index in ``entries``: plain per-entry differences."""
    for entry in entries:
        yield Group(tensor, np.array([entry]), Ownership.ALL)


def grouped_passes(shape: ConvShape) -> int:
    """Forward passes of a grouped check of every entry: ``2·(2·∏k·C_in/g + 1)`` (``2·(2·k²·C_in + 1)`` for the seed's
    layer; fewer where an axis has fewer than ``k·d`` rows, and no bias pass without a bias)."""
    classes = math.prod(
        min(k, (size - 1) // d + 1) for size, k, d in zip(shape.spatial_in, shape.kernel, shape.dilations, strict=True)
    )
    per_group = shape.in_depth // shape.groups
    return 2 * (classes * per_group + math.prod(shape.kernel) * per_group + int(shape.bias))


def entrywise_passes(shape: ConvShape) -> int:
    """Forward passes of one central difference per entry of x, w and b."""
    return 2 * (math.prod(shape.x_shape) + math.prod(shape.w_shape) + math.prod(shape.b_shape))
