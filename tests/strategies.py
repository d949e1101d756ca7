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


@st.composite
def nd_geometries(
    draw, max_size: int = 7, max_channels_per_group: int = 2, max_groups: int = 3, max_batch: int = 2
) -> ConvShape:
    """Every hyperparameter of the new space: 1-3 spatial axes, per-axis kernel 1..3, stride 1..3 and dilation
    1..2, padding per side 0..2 (or ``same``, ``valid``), groups, with or without a bias; sizes drawn so that every
    axis has at least one output (the dilated kernel fits the padded input)."""
    dims = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    strides = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    dilations = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    mode = draw(st.sampled_from(["explicit", "same", "valid"]))
    pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(dims))
    padding: object = pads if mode == "explicit" else mode
    fixed = [sum(pair) if mode == "explicit" else 0 for pair in pads]
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilations, strict=True)]
    sizes = tuple(
        draw(st.integers(1 if mode == "same" else max(1, span - pad), max(max_size, span)))
        for span, pad in zip(spans, fixed, strict=True)
    )
    groups = draw(st.integers(1, max_groups))
    c_in = groups * draw(st.integers(1, max_channels_per_group))
    c_out = groups * draw(st.integers(1, max_channels_per_group))
    batch = draw(st.integers(1, max_batch))
    bias = draw(st.booleans())
    return ConvShape.nd(batch, sizes, c_in, c_out, kernel, strides, padding, dilations, groups, bias)  # type: ignore[arg-type]
