"""The per-axis helpers the forward and gradient rules share (``convcheck.diagnosis.axes``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from convcheck.diagnosis.axes import shifts
from convcheck.diagnosis.forward import _shifts


@given(dims=st.integers(1, 3), farthest=st.integers(1, 4))
def test_shifts_are_each_offset_once_nearest_first(dims: int, farthest: int) -> None:
    tried = shifts(dims, farthest)
    assert len(set(tried)) == len(tried) and (0,) * dims not in tried
    assert all(len(shift) == dims and max(map(abs, shift)) <= farthest for shift in tried)
    assert tried[:2] == [(1,) * dims, (-1,) * dims]
    # Every shift by one on a single axis, then every shift along all axes together, as far as asked.
    alone = {tuple(sign if a == axis else 0 for a in range(dims)) for sign in (1, -1) for axis in range(dims)}
    together = {(sign * d,) * dims for d in range(1, farthest + 1) for sign in (1, -1)}
    assert set(tried) == alone | together
    reach = [max(map(abs, shift)) for shift in tried]
    assert reach == sorted(reach)
    # Going farther only adds shifts after the nearer ones: the rules' first candidates stay first.
    assert tried[: len(shifts(dims))] == shifts(dims)


def test_the_forward_rule_tries_one_position_and_the_dx_rule_two_in_the_order_the_hints_always_used() -> None:
    assert _shifts(2) == shifts(2) == [(1, 1), (-1, -1), (1, 0), (0, 1), (-1, 0), (0, -1)]
    assert shifts(2, farthest=2) == [*shifts(2), (2, 2), (-2, -2)]
    assert [_shifts(dims) for dims in (1, 3)] == [shifts(1), shifts(3)]
