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
