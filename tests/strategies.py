"""Hypothesis strategies shared by the test files."""

from __future__ import annotations

from hypothesis import strategies as st

from convcheck.spec import ConvShape


@st.composite
def geometries(draw, max_size: int = 9, max_stride: int = 4, max_channels: int = 4, max_batch: int = 3) -> ConvShape:
    """k 1..5, s 1..max_stride, p 0..k−1, H and W drawn independently so that OH, OW ≥ 1."""
    k = draw(st.integers(1, 5))
    s = draw(st.integers(1, max_stride))
    p = draw(st.integers(0, k - 1))
    smallest = max(1, k - 2 * p)  # OH ≥ 1 ⇔ H + 2p ≥ k
    h = draw(st.integers(smallest, max_size))
    w = draw(st.integers(smallest, max_size))
    n = draw(st.integers(1, max_batch))
    c_in = draw(st.integers(1, max_channels))
    c_out = draw(st.integers(1, max_channels))
    return ConvShape(n, h, w, c_in, c_out, k, s, p)


@st.composite
def wide_geometries(
    draw, max_filter: int = 7, max_size: int = 12, max_stride: int = 4, max_channels: int = 6, max_batch: int = 4
) -> ConvShape:
    """``geometries`` with the filter size's bound a knob too; the defaults are the space the README promises no
    false alarm on: k 1..7, s 1..4, p 0..k−1, H and W 1..12 (OH, OW ≥ 1), batch 1..4, channels 1..6."""
    k = draw(st.integers(1, max_filter))
    s, p = draw(st.integers(1, max_stride)), draw(st.integers(0, k - 1))
    h, w = (draw(st.integers(max(1, k - 2 * p), max_size)) for _ in range(2))
    n = draw(st.integers(1, max_batch))
    c_in, c_out = (draw(st.integers(1, max_channels)) for _ in range(2))
    return ConvShape(n, h, w, c_in, c_out, k, s, p)


def sweeps(one: st.SearchStrategy[object], max_size: int = 3) -> st.SearchStrategy[object]:
    """A config value or a sweep of it: ``one`` itself, or a list of 1..max_size distinct (by ``repr``) values."""
    return one | st.lists(one, min_size=1, max_size=max_size, unique_by=repr)
