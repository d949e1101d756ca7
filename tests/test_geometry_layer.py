"""The whole geometry space (1-3 axes, per-axis kernel and stride, dilation, per-side/same/valid padding, groups, no
bias): the built-in layer and the reference against a loop convolution written here, the backward against the
adjoint identity, and the shape's own arithmetic (``same``, output sizes, what is impossible).

``loop_conv`` spells out the definition with explicit bounds checks instead of a padded copy, so it shares nothing
with either implementation. Both sum the same ``n = ∏k·C_in/g + 1`` terms per output in other orders, so they may
differ by ``2·γ_n·Σ|terms|`` with ``γ_n = n·u / (1 − n·u)`` (Higham §3.1): that bound is the tolerance.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from strategies import nd_geometries

from convcheck import reference
from convcheck.geometry import Window, output_size, same_pads
from convcheck.layer import MatrixConvLayer
from convcheck.spec import Activation, ConvShape
from convcheck.windows import fold, pad, unfold

U64 = float(np.finfo(np.float64).eps) / 2
PADS = st.integers(0, 3)

DEPTHWISE_1D = ConvShape.nd(2, (9,), 4, 4, 3, 1, "same", 1, groups=4, bias=False)
TORCH_STYLE = ConvShape(1, 7, 9, 8, 4, (3, 5), (2, 1), "same", dilation=2, groups=4, bias=False)
THREE_D = ConvShape.nd(1, (4, 5, 6), 2, 4, (2, 3, 2), (1, 2, 1), ((1, 0), (0, 2), (1, 1)), (2, 1, 1), groups=2)
DILATION_GAPS = ConvShape.nd(1, (8,), 1, 1, 2, 3, 0, 3)  # taps 3 apart, windows 3 apart: rows 1, 2, 4, 5 … unread
ONE_OUTPUT = ConvShape(1, 3, 3, 3, 3, 3, 1, "valid", groups=3)


def random_arrays(shape: ConvShape, seed: int) -> tuple[np.ndarray, ...]:
    """x, w, b and an upstream gradient, standard normal (b of shape ``(0,)`` without a bias)."""
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(s) for s in (shape.x_shape, shape.w_shape, shape.b_shape, shape.out_shape))


def window_rows(shape: ConvShape, position: tuple[int, ...], taps: tuple[int, ...]) -> tuple[int, ...] | None:
    """The input position tap ``taps`` of output ``position`` reads, or None when it lies in the padding."""
    rows = []
    for axis, (o, j) in enumerate(zip(position, taps, strict=True)):
        row = o * shape.strides[axis] - shape.pads[axis][0] + j * shape.dilations[axis]
        if not 0 <= row < shape.spatial_in[axis]:
            return None
        rows.append(row)
    return tuple(rows)


def loop_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, shape: ConvShape) -> tuple[np.ndarray, np.ndarray]:
    """The definition, one output at a time:

        out[n, *o, co] = b[co] + Σ_{taps j, ci < C_in/g} x[n, *(o·s − before + j·d), γ·C_in/g + ci] · w[*j, ci, co]

    with ``γ = co // (C_out/g)`` the output channel's group; rows outside the input are the zero padding. Returns
    the output and, per output, ``Σ|terms|``.
    """
    per_in, per_out = shape.in_depth // shape.groups, shape.out_depth // shape.groups
    out, size = np.zeros(shape.out_shape), np.zeros(shape.out_shape)
    for n, position in itertools.product(range(shape.batch), itertools.product(*map(range, shape.spatial_out))):
        for co in range(shape.out_depth):
            first = co // per_out * per_in
            total = float(b[co]) if shape.bias else 0.0
            magnitude = abs(total)
            for taps in itertools.product(*map(range, shape.kernel)):
                rows = window_rows(shape, position, taps)
                if rows is None:
                    continue
                for ci in range(per_in):
                    term = float(x[(n, *rows, first + ci)] * w[(*taps, ci, co)])
                    total += term
                    magnitude += abs(term)
            out[(n, *position, co)] = total
            size[(n, *position, co)] = magnitude
    return out, size


def gamma(m: int) -> float:
    return m * U64 / (1 - m * U64)


# -- forward ------------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(shape=nd_geometries(), seed=st.integers(0, 2**32 - 1))
@example(shape=DEPTHWISE_1D, seed=0)
@example(shape=TORCH_STYLE, seed=1)
@example(shape=THREE_D, seed=2)
@example(shape=DILATION_GAPS, seed=3)
@example(shape=ONE_OUTPUT, seed=4)
def test_layer_and_reference_equal_the_loop_convolution(shape: ConvShape, seed: int) -> None:
    x, w, b, _ = random_arrays(shape, seed)
    want, magnitude = loop_conv(x, w, b, shape)
    bound = 2 * gamma(shape.fan_in + 1) * magnitude
    layer_out, _ = MatrixConvLayer.for_shape(shape, Activation.NONE).forward(x, w, b)
    ref_out = reference.convolve(x, w, b, shape.window)
    for got in (layer_out, ref_out):
        assert got.shape == shape.out_shape
        assert np.all(np.abs(got - want) <= bound)
    np.testing.assert_allclose(reference.magnitude(x, w, b, shape.window), magnitude, rtol=4 * gamma(shape.fan_in + 1))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_float32_layer_stays_float32_and_a_bias_free_one_returns_an_empty_db(dtype: type) -> None:
    x, w, b, g = (a.astype(dtype) for a in random_arrays(TORCH_STYLE, 5))
    layer = MatrixConvLayer.for_shape(TORCH_STYLE, Activation.RELU)
    out, cache = layer.forward(x, w, b)
    dx, dw, db = layer.backward(g, cache)
    assert (out.dtype, dx.dtype, dw.dtype) == (dtype,) * 3
    assert (dx.shape, dw.shape, db.shape) == (x.shape, w.shape, (0,))


def test_the_seed_geometry_gets_the_seed_layer_and_others_their_window() -> None:
    assert MatrixConvLayer.for_shape(ConvShape(2, 5, 6, 3, 4, 3, 2, 1)) == MatrixConvLayer(2, 1)
    assert MatrixConvLayer.for_shape(TORCH_STYLE).window == TORCH_STYLE.window
    with pytest.raises(ValueError, match="not both"):
        MatrixConvLayer(2, 0, window=TORCH_STYLE.window)


# -- backward -----------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(shape=nd_geometries(max_size=9), seed=st.integers(0, 2**32 - 1))
@example(shape=TORCH_STYLE, seed=0)
@example(shape=THREE_D, seed=1)
@example(shape=DILATION_GAPS, seed=2)
def test_backward_of_the_linear_layer_is_the_adjoint_of_its_forward(shape: ConvShape, seed: int) -> None:
    """⟨J·t, c⟩ = ⟨t, Jᵀ·c⟩ for x ↦ conv(x, w), w ↦ conv(x, w) and b ↦ broadcast b (the map is bilinear, so one
    forward at random ``(t_x, t_w)`` with no bias gives the first two)."""
    t_x, t_w, t_b, c = random_arrays(shape, seed)
    layer = MatrixConvLayer.for_shape(shape, Activation.NONE)
    out, cache = layer.forward(t_x, t_w, np.zeros(0))
    dx, dw, _ = layer.backward(c, cache)
    scale = float(np.sum(reference.magnitude(t_x, t_w, np.zeros(0), shape.window) * np.abs(c)))
    tolerance = 4 * gamma(shape.fan_in + c.size) * scale
    assert abs(np.sum(out * c) - np.sum(t_x * dx)) <= tolerance
    assert abs(np.sum(out * c) - np.sum(t_w * dw)) <= tolerance
    if shape.bias:
        out_b, cache_b = layer.forward(np.zeros_like(t_x), t_w, t_b)
        db = layer.backward(c, cache_b)[2]
        assert abs(np.sum(out_b * c) - np.sum(t_b * db)) <= 4 * gamma(c.size) * float(np.sum(np.abs(out_b * c)))


@settings(max_examples=40, deadline=None)
@given(shape=nd_geometries(), seed=st.integers(0, 2**32 - 1))
def test_fold_is_the_adjoint_of_unfold_after_pad(shape: ConvShape, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape.x_shape)
    window = shape.window
    cols = unfold(pad(x, shape.pads), shape.kernel, window.strides, window.dilations, shape.spatial_out, shape.groups)
    y = rng.standard_normal(cols.shape)
    folded = fold(y, shape.x_shape, shape.kernel, window)
    assert folded.shape == shape.x_shape
    scale = float(np.sum(np.abs(cols * y)))
    assert abs(np.sum(cols * y) - np.sum(x * folded)) <= 4 * gamma(cols.size) * scale


@settings(max_examples=40, deadline=None)
@given(shape=nd_geometries(), seed=st.integers(0, 2**32 - 1))
@example(shape=DILATION_GAPS, seed=0)
def test_inputs_no_window_reads_get_exactly_zero_gradient(shape: ConvShape, seed: int) -> None:
    """Rows between dilated taps, past the last window or in another group's reach: read by no output, dx = 0."""
    read = np.zeros(shape.spatial_in, dtype=bool)
    for position in itertools.product(*map(range, shape.spatial_out)):
        for taps in itertools.product(*map(range, shape.kernel)):
            rows = window_rows(shape, position, taps)
            if rows is not None:
                read[rows] = True
    x, w, b, g = random_arrays(shape, seed)
    layer = MatrixConvLayer.for_shape(shape, Activation.NONE)
    dx = layer.backward(g, layer.forward(x, w, b)[1])[0]
    assert np.all(dx[:, ~read] == 0)
    if shape is DILATION_GAPS:
        assert not read.all()


# -- the shape's arithmetic ------------------------------------------------------------------------------------------


@given(st.integers(1, 30), st.integers(1, 5), st.integers(1, 5), st.integers(1, 3))
def test_same_padding_gives_ceil_in_over_stride_outputs_with_the_odd_row_after(
    size: int, kernel: int, stride: int, dilation: int
) -> None:
    before, after = same_pads(size, kernel, stride, dilation)
    assert 0 <= before <= after <= before + 1
    assert output_size(size, kernel, stride, (before, after), dilation) == math.ceil(size / stride)
    shape = ConvShape.nd(1, (size,), 1, 1, kernel, stride, "same", dilation)
    assert shape.problems() == [] and shape.spatial_out == (math.ceil(size / stride),)


@given(st.integers(1, 12), st.integers(1, 4), st.integers(1, 4), PADS, PADS, st.integers(1, 3))
def test_output_size_counts_the_dilated_windows_that_fit(
    size: int, kernel: int, stride: int, before: int, after: int, dilation: int
) -> None:
    padded, span = size + before + after, dilation * (kernel - 1) + 1
    starts = [start for start in range(0, padded, stride) if start + span <= padded]
    got = output_size(size, kernel, stride, (before, after), dilation)
    assert got == len(starts) if starts else got < 1
    shape = ConvShape.nd(1, (size,), 1, 1, kernel, stride, ((before, after),), dilation)
    assert bool(shape.problems()) == (not starts) == (shape.oversized_axes() == ("width",))


def test_the_seed_constructor_means_what_it_always_meant() -> None:
    shape = ConvShape(8, 32, 48, 16, 32, 3, 1, 1)
    assert shape == ConvShape.nd(8, (32, 48), 16, 32, 3, 1, 1) == ConvShape(8, 32, 48, 16, 32, (3, 3), (1, 1), (1, 1))
    assert (shape.filter_size, shape.stride, shape.padding, shape.dilation, shape.groups) == (3, 1, 1, 1, 1)
    assert (shape.x_shape, shape.w_shape, shape.b_shape, shape.out_shape) == (
        (8, 32, 48, 16),
        (3, 3, 16, 32),
        (32,),
        (8, 32, 48, 32),
    )
    assert shape.is_basic and shape.describe() == "8×32×48×16 → 32, k3 s1 p1"
    assert ConvShape(2, 6, 6, 3, 3, 3, 1, "same").is_basic  # same padding that is p = 1 on every side


def test_per_axis_values_have_per_axis_properties_and_refuse_the_seed_ints() -> None:
    shape = TORCH_STYLE
    assert (shape.kernel, shape.strides, shape.dilations) == ((3, 5), (2, 1), (2, 2))
    assert shape.pads == (same_pads(7, 3, 2, 2), same_pads(9, 5, 1, 2)) and shape.spatial_out == (4, 9)
    assert (shape.w_shape, shape.b_shape, shape.fan_in) == ((3, 5, 2, 4), (0,), 30)
    assert not shape.is_basic
    for name in ("filter_size", "stride", "padding"):
        with pytest.raises(ValueError, match="differs between the axes"):
            getattr(shape, name)
    assert shape.describe() == "1×7×9×8 → 4, k3x5 s2x1 d2 p-same g4, no bias"
    assert (DEPTHWISE_1D.in_height, DEPTHWISE_1D.out_height, DEPTHWISE_1D.axes) == (1, 1, ("width",))
    assert (THREE_D.in_frames, THREE_D.out_frames, THREE_D.axes) == (4, 3, ("frames", "height", "width"))


@pytest.mark.parametrize(
    ("shape", "problem"),
    [
        (ConvShape(1, 5, 5, 4, 6, 3, groups=3), "groups 3 does not divide in_depth 4"),
        (ConvShape(1, 5, 5, 6, 4, 3, groups=3), "groups 3 does not divide out_depth 4"),
        (ConvShape(1, 5, 5, 2, 2, 3, dilation=3), "the filter along height spans 7 rows"),
        (ConvShape(1, 5, 5, 2, 2, 3, padding=((0, -1), (0, 0))), "padding after along height must be at least 0"),
        (ConvShape(1, 5, 5, 2, 2, (3, 0)), "filter_size along width must be at least 1, got 0"),
        (ConvShape(1, 5, 5, 2, 2, 3, groups=0), "groups must be at least 1, got 0"),
        (ConvShape(1, 2, 5, 2, 2, 3), "filter_size 3 is larger than the padded input height 2"),
    ],
)
def test_impossible_geometries_say_why(shape: ConvShape, problem: str) -> None:
    assert any(text.startswith(problem) for text in shape.problems()), shape.problems()


@pytest.mark.parametrize(
    "make",
    [
        lambda: ConvShape(1, 5, 5, 1, 1, (3, 3, 3)),
        lambda: ConvShape(1, 5, 5, 1, 1, 3, padding="full"),
        lambda: ConvShape(1, 5, 5, 1, 1, 3, padding=((1, 2, 3), 1)),
        lambda: ConvShape(1, 5, 5, 1, 1, 3, dims=4),
        lambda: ConvShape(1, 5, 5, 1, 1, 3, dims=1),
        lambda: ConvShape(1, 5, 5, 1, 1, 3, in_frames=2),
    ],
)
def test_malformed_values_are_refused_when_the_shape_is_made(make) -> None:
    with pytest.raises(ValueError):
        make()


def test_window_of_accepts_every_padding_form() -> None:
    assert Window.of(2, 1, 1).pads == Window.of(2, 1, (1, 1)).pads == Window.of(2, 1, ((1, 1), (1, 1))).pads
    assert Window.of(2, 1, (2, (0, 1))).pads == ((2, 2), (0, 1))
    assert Window.of(1, 2, "valid").resolve_pads((5,), (3,)) == ((0, 0),)
