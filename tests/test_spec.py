"""The layer's geometry: the output size counts window positions, and an empty output is refused."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from convcheck.spec import AXES, ConvShape, output_size

SIZES = st.integers(1, 12)


@given(SIZES, SIZES, st.integers(1, 5), st.integers(0, 4))
def test_output_size_counts_the_window_starts_that_fit_the_padded_input(
    size: int, filter_size: int, stride: int, padding: int
) -> None:
    padded = size + 2 * padding
    starts = [start for start in range(0, padded, stride) if start + filter_size <= padded]
    if starts:
        assert output_size(size, filter_size, stride, padding) == len(starts)
    else:  # no window fits: the formula says so by giving less than one position
        assert output_size(size, filter_size, stride, padding) < 1


@given(SIZES, SIZES, SIZES, st.integers(1, 5), st.integers(0, 4))
def test_an_axis_is_oversized_exactly_when_its_output_would_be_empty(
    height: int, width: int, filter_size: int, stride: int, padding: int
) -> None:
    shape = ConvShape(1, height, width, 1, 1, filter_size, stride, padding)
    outputs = {"height": shape.out_height, "width": shape.out_width}
    assert shape.oversized_axes() == tuple(axis for axis in AXES if outputs[axis] < 1)
    assert bool(shape.problems()) == bool(shape.oversized_axes())
    assert shape.out_shape == (1, shape.out_height, shape.out_width, 1)
