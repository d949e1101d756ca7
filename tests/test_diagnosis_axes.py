"""The per-axis helpers the forward and gradient rules share (``convcheck.diagnosis.axes``), and the one reading of
the weights in ``(c_in, *k)`` order that the forward rule, the dw rule and the planted bug all use."""

from __future__ import annotations

import ast

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from convcheck.bugs.row_order import dw_read_channels_first
from convcheck.diagnosis.axes import per_axis, shifts
from convcheck.diagnosis.forward import _shifts, _weight_candidates
from convcheck.spec import ConvShape
from tests.strategies import nd_geometries


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


@given(
    values=st.lists(st.integers(0, 99) | st.tuples(st.integers(0, 9), st.integers(0, 9)), min_size=1, max_size=3),
    by=st.sampled_from(["x", "×"]),
)
def test_per_axis_prints_each_value_between_the_signs_and_a_pair_in_brackets(
    values: list[int | tuple[int, int]], by: str
) -> None:
    text = per_axis(tuple(values), by)
    assert " " not in text
    assert [ast.literal_eval(part) for part in text.split(by)] == values


@settings(max_examples=200, deadline=None)
@given(shape=nd_geometries())
def test_the_forward_rule_reads_the_weights_channels_first_as_the_planted_bug_does(shape: ConvShape) -> None:
    """On every geometry (1-3 axes, non-square kernels, groups: ``w: (*k, C_in/g, C_out)``) the forward rule's
    "row order" weights are ``dw_read_channels_first``'s, and that is each filter stored ``(c_in, *k)`` with the
    channel axis then moved behind the kernel's: the same values, in the same layout, still a view of ``w``."""
    w = np.random.default_rng(0).standard_normal(shape.w_shape)
    *kernel, c_in, c_out = w.shape
    moved = np.moveaxis(w.reshape(c_in, *kernel, c_out), 0, len(kernel))
    candidate = {label: changed for label, _, changed in _weight_candidates(w)}["row order"]
    for read in (candidate, dw_read_channels_first(w, w.shape)):
        assert (read.shape, read.strides) == (moved.shape, moved.strides)
        assert read.tobytes() == moved.tobytes() and np.shares_memory(read, w)
