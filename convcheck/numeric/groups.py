"""Perturbation groups: which entries of x, w or b are perturbed together, and which of them owns each output.

Output ``(n, oh, ow, co)`` depends only on the input entries of its window, on ``w[..., co]`` and on ``b[co]``.
Perturbing, at once, every input entry with ``h ≡ i (mod k)``, ``w ≡ j (mod k)`` in one channel ``c`` (all
batch items) puts exactly one perturbed entry, its *owner*, in each window (k consecutive rows hold exactly one
row of each residue mod k), so each output's change is that owner's doing. Weights ``w[kh, kw, ci, :]`` are
perturbed together (output channel ``co`` sees only its own), and the bias at once. Shapes as in
``convcheck.spec``: x ``(N, H, W, C_in)``, w ``(k, k, C_in, C_out)``, b ``(C_out,)``, out ``(N, OH, OW, C_out)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

import numpy as np

from convcheck.results import Tensor
from convcheck.spec import ConvShape


class Ownership(str, Enum):
    """How a group's ownership of the outputs ``(N, OH, OW, C_out)`` is laid out."""

    POSITION = "position"  # ``owner: (N, OH, OW)`` local index (−1: no owner), the same for every channel
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
    unowned: np.ndarray | None = None  # (N, OH, OW) bool, position groups only
    direction: np.ndarray | None = None
    span: slice | None = None


def input_groups(shape: ConvShape) -> Iterator[Group]:
    """k²·C_in groups: residues (i, j) of (h, w) mod k, one channel, every batch item."""
    n, h, w, c = shape.x_shape
    k = shape.filter_size
    batch = np.arange(n)[:, None, None]
    for i in range(min(k, h)):
        owner_h = _owner_rows(shape, i, h, shape.out_height)
        rows = np.arange(i, h, k)
        for j in range(min(k, w)):
            owner_w = _owner_rows(shape, j, w, shape.out_width)
            cols = np.arange(j, w, k)
            # Local index of each owner among the group's entries, laid out (n, row, col).
            valid = (owner_h[None, :, None] >= 0) & (owner_w[None, None, :] >= 0)
            local = (batch * len(rows) + (owner_h[None, :, None] - i) // k) * len(cols) + (
                owner_w[None, None, :] - j
            ) // k
            owner = np.where(valid, local, -1)
            owner = np.broadcast_to(owner, (n, shape.out_height, shape.out_width))
            positions = ((batch * h + rows[None, :, None]) * w + cols[None, None, :]).reshape(-1)
            unowned = owner < 0
            for channel in range(c):
                yield Group(Tensor.INPUT, positions * c + channel, Ownership.POSITION, owner, unowned)


def _owner_rows(shape: ConvShape, residue: int, size: int, out_size: int) -> np.ndarray:
    """For each output row, the input row ≡ residue (mod k) inside its window, or −1 (in the padding)."""
    start = np.arange(out_size) * shape.stride - shape.padding
    row = start + (residue - start) % shape.filter_size
    return np.where((row >= 0) & (row < size), row, -1)


def weight_groups(shape: ConvShape) -> Iterator[Group]:
    """k²·C_in groups: ``w[kh, kw, ci, :]``, every output channel at once."""
    k, _, c_in, c_out = shape.w_shape
    owner = np.arange(c_out)
    for first in range(0, k * k * c_in * c_out, c_out):
        entries = np.arange(first, first + c_out)
        yield Group(Tensor.WEIGHTS, entries, Ownership.CHANNEL, owner, span=slice(first, first + c_out))


def bias_groups(shape: ConvShape) -> Iterator[Group]:
    """One group: every bias entry at once (output channel ``co`` sees only ``b[co]``)."""
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
    """Forward passes of a grouped check of every entry: ``2·(2·k²·C_in + 1)`` (fewer when H or W < k)."""
    k = shape.filter_size
    input_count = min(k, shape.in_height) * min(k, shape.in_width) * shape.in_depth
    return 2 * (input_count + k * k * shape.in_depth + 1)


def entrywise_passes(shape: ConvShape) -> int:
    """Forward passes of one central difference per entry of x, w and b."""
    return 2 * (math.prod(shape.x_shape) + math.prod(shape.w_shape) + shape.out_depth)
