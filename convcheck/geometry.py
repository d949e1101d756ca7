"""Geometry that does not depend on the layer's sizes: output sizes, ``same`` padding, and how windows move.

One axis of a convolution (per spatial axis: frames, height, width) has an input of ``in`` rows, a kernel of ``k``
taps spaced ``d`` apart (dilation: the window spans ``d·(k − 1) + 1`` rows), a stride ``s`` between windows and zero
padding ``before`` and ``after``. Output position ``o`` reads rows ``o·s − before + j·d`` for ``j = 0 … k − 1``.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

AXES = ("height", "width")  # the spatial axes of a 2-D layer, named as in the keys in_height/in_width, out_height/…
AXES_BY_DIMS = {1: ("width",), 2: AXES, 3: ("frames", *AXES)}  # the spatial axes of a 1-, 2- or 3-D layer, in order

Size = int | Sequence[int]  # one value for every spatial axis, or one per axis
Pads = tuple[tuple[int, int], ...]  # (before, after) zero padding per spatial axis


class PaddingMode(str, Enum):
    """How the zero padding is given.

    ``explicit``: numbers of rows (per axis and side). ``same``: as TensorFlow and PyTorch, each axis's output has
    ``ceil(in / stride)`` positions, with the total padding that takes split evenly and the odd row after
    (``same_pads``). ``valid``: no padding.
    """

    EXPLICIT = "explicit"
    SAME = "same"
    VALID = "valid"


PaddingArg = int | str | PaddingMode | Sequence[int | Sequence[int]]


def output_size(size: int, filter_size: int, stride: int, padding: int | tuple[int, int], dilation: int = 1) -> int:
    """Window positions along one axis: ``(size + before + after − dilation·(filter_size − 1) − 1) // stride + 1``.

    ``padding`` is one number for both sides or a ``(before, after)`` pair; with ``padding = p`` and no dilation
    this is the seed's ``(H + 2p − k) // s + 1``. For ``stride ≥ 1`` it is at least 1 exactly when the dilated
    filter ``dilation·(filter_size − 1) + 1`` fits the padded input, the condition
    :meth:`ConvShape.oversized_axes` checks.
    """
    before, after = (padding, padding) if isinstance(padding, int) else padding
    return (size + before + after - dilation * (filter_size - 1) - 1) // stride + 1


def same_pads(size: int, filter_size: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """``(before, after)`` padding that gives ``ceil(size / stride)`` outputs, as TensorFlow's and PyTorch's ``same``.

    The padded input must hold the last window: ``total = (ceil(size/s) − 1)·s + d·(k − 1) + 1 − size``, split
    ``total // 2`` before and the rest after. When ``total < 0`` (a stride larger than the dilated filter) no
    padding is needed: with none, ``(size − d·(k−1) − 1) // s = ceil(size/s) − 1`` exactly when ``total ≤ 0``, so
    ``same`` has a solution for every size, filter, stride and dilation ≥ 1 and is never refused.
    """
    outputs = -(-size // stride)
    total = max(0, (outputs - 1) * stride + dilation * (filter_size - 1) + 1 - size)
    return total // 2, total - total // 2


def per_axis(value: Size, dims: int, name: str) -> tuple[int, ...]:
    """``value`` as one int per spatial axis (an int stands for every axis).

    Raises:
        ValueError: a sequence whose length is not ``dims``.
    """
    if isinstance(value, Sequence):
        values = tuple(operator.index(v) for v in value)
        if len(values) != dims:
            raise ValueError(f"{name} has {len(values)} values for a {dims}-D layer (one per axis: {dims})")
        return values
    return (operator.index(value),) * dims


@dataclass(frozen=True)
class Window:
    """How a layer's windows move, whatever the sizes: the part of the geometry a layer object is bound to.

    ``strides`` and ``dilations``: one per spatial axis. ``pads``: ``(before, after)`` per axis when ``mode`` is
    ``explicit``; for ``same`` and ``valid`` they follow from the sizes (``resolve_pads``) and ``pads`` is ``()``.
    ``groups``: input and output channels split into that many groups, group γ of the outputs seeing only group γ
    of the inputs.
    """

    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: Pads = ()
    mode: PaddingMode = PaddingMode.EXPLICIT
    groups: int = 1

    @classmethod
    def of(
        cls, dims: int = 2, stride: Size = 1, padding: PaddingArg = 0, dilation: Size = 1, groups: int = 1
    ) -> Window:
        """From the forms a config or a torch layer uses: ints for every axis, per-axis sequences, padding also as
        per-axis ``(before, after)`` pairs, ``"same"`` or ``"valid"``.

        Raises:
            ValueError: a value with the wrong number of axes, or a padding mode convcheck does not know.
        """
        mode, pads = _padding(padding, dims)
        return cls(per_axis(stride, dims, "stride"), per_axis(dilation, dims, "dilation"), pads, mode, groups)

    @property
    def dims(self) -> int:
        return len(self.strides)

    def resolve_pads(self, spatial_in: Sequence[int], kernel: Sequence[int]) -> Pads:
        """``(before, after)`` per axis for inputs of ``spatial_in`` and a filter of ``kernel``."""
        if self.mode is PaddingMode.EXPLICIT:
            return self.pads
        if self.mode is PaddingMode.VALID:
            return ((0, 0),) * self.dims
        return tuple(map(same_pads, spatial_in, kernel, self.strides, self.dilations))

    def output_sizes(self, spatial_in: Sequence[int], kernel: Sequence[int]) -> tuple[int, ...]:
        """Window positions per axis (``output_size``)."""
        pads = self.resolve_pads(spatial_in, kernel)
        return tuple(map(output_size, spatial_in, kernel, self.strides, pads, self.dilations))

    def uniform(self, spatial_in: Sequence[int], kernel: Sequence[int]) -> tuple[int, int] | None:
        """``(stride, padding)`` when this is the seed's geometry (2-D, one stride, one padding on every side, no
        dilation, one group) for these sizes, else None: the case the seed-only fast paths and rules handle."""
        pads = self.resolve_pads(spatial_in, kernel)
        flat = {p for pair in pads for p in pair}
        if self.dims != 2 or self.groups != 1 or set(self.dilations) != {1} or len(set(self.strides)) != 1:
            return None
        return (self.strides[0], flat.pop()) if len(flat) == 1 else None


def _padding(padding: PaddingArg, dims: int) -> tuple[PaddingMode, Pads]:
    """``padding`` in any accepted form as ``(mode, pads)``, ``pads`` per axis for ``explicit`` (else ``()``)."""
    if isinstance(padding, str):
        try:
            mode = PaddingMode(padding)
        except ValueError:
            raise ValueError(f"padding {padding!r} is not a number of rows, 'same' or 'valid'") from None
        if mode is PaddingMode.EXPLICIT:
            raise ValueError("padding 'explicit' needs the numbers: give them instead")
        return mode, ()
    if not isinstance(padding, Sequence):
        p = operator.index(padding)
        return PaddingMode.EXPLICIT, ((p, p),) * dims
    if any(isinstance(value, str) for value in padding):
        raise ValueError(f"padding {tuple(padding)} mixes a mode into per-axis values: give numbers or pairs")
    values: list[int | Sequence[int]] = [value for value in padding if not isinstance(value, str)]
    if len(values) != dims:
        raise ValueError(f"padding has {len(values)} values for a {dims}-D layer (one per axis: {dims})")
    pads = []
    for value in values:
        if isinstance(value, Sequence):
            pair = tuple(operator.index(v) for v in value)
            if len(pair) != 2:
                raise ValueError(f"padding {tuple(value)} of one axis is not a (before, after) pair")
            pads.append((pair[0], pair[1]))
        else:
            p = operator.index(value)
            pads.append((p, p))
    return PaddingMode.EXPLICIT, tuple(pads)
