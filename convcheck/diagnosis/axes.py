"""Per spatial axis, for the rules of any number of axes: the offsets tried for an array shifted against another,
and how a hint prints one value per axis."""

from __future__ import annotations

from collections.abc import Sequence


def shifts(dims: int, farthest: int = 1) -> list[tuple[int, ...]]:
    """The offsets tried for a shifted array, most likely first, each once.

    One position along every axis (+1, then −1), one along each axis alone (+1 on each axis, then −1 on each),
    then 2 … ``farthest`` positions along every axis (+d, then −d). On one axis "every" and "alone" are the same
    offset, kept where it first stands; on 2-D the first six are (1, 1), (−1, −1), (1, 0), (0, 1), (−1, 0),
    (0, −1).
    """
    every = [(1,) * dims, (-1,) * dims]
    alone = [tuple(sign if a == axis else 0 for a in range(dims)) for sign in (1, -1) for axis in range(dims)]
    farther = [(sign * d,) * dims for d in range(2, farthest + 1) for sign in (1, -1)]
    return list(dict.fromkeys([*every, *alone, *farther]))


def per_axis(values: Sequence[object], by: str) -> str:
    """One value per spatial axis joined ``by`` a sign, a pair printed ``(1,2)``: ``3x5``, ``3×5``, ``(1,2)x(0,1)``."""
    return by.join(f"({v[0]},{v[1]})" if isinstance(v, tuple) else str(v) for v in values)
