"""The built-in matrix layer against independent truths: the reference forward, naive finite differences, the
adjoint identity, and which input rows a window can reach.

Tolerances are rounding bounds derived from the data, never tuned numbers. Notation: ``u`` is the unit roundoff,
``n = k²·C_in + 1`` the terms of one pre-activation, ``A = Σ|x|·|w| + |b|`` their magnitude per output
(``reference.magnitude``, itself checked against a loop in ``test_reference.py``) and ``γ_m = m·u / (1 − m·u)``
the classic bound on the relative error of a sum of ``m`` terms.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from strategies import geometries

from convcheck import reference
from convcheck.layer import MatrixConvLayer
from convcheck.spec import Activation, ConvShape, output_size
from convcheck.windows import col2im, im2col, pad


def unit_roundoff(dtype: type) -> float:
    return float(np.finfo(dtype).eps) / 2


def gamma(m: int, u: float) -> float:
    return m * u / (1 - m * u)


def random_arrays(shape: ConvShape, seed: int, dtype: type = np.float64) -> tuple[np.ndarray, ...]:
    """x, w, b and an upstream gradient g, standard normal, in ``dtype``."""
    rng = np.random.default_rng(seed)
    arrays = (rng.standard_normal(s) for s in (shape.x_shape, shape.w_shape, shape.b_shape, shape.out_shape))
    return tuple(a.astype(dtype) for a in arrays)


def layer_for(shape: ConvShape, activation: Activation) -> MatrixConvLayer:
    return MatrixConvLayer(shape.stride, shape.padding, activation)


REMAINDER_ROWS = ConvShape(2, 9, 6, 3, 2, 3, 3, 1)  # (9 + 2 − 3) % 3 == 2 > p: the last input row is unread
REMAINDER_COLS_NO_PADDING = ConvShape(1, 5, 9, 2, 2, 4, 3, 0)  # (5 − 4) % 3 == 1, (9 − 4) % 3 == 2
STRIDE_ABOVE_K = ConvShape(3, 9, 7, 1, 4, 2, 4, 1)  # rows between windows are read by none
ONE_BY_ONE = ConvShape(2, 3, 5, 4, 3, 1, 1, 0)
PADDING_ONLY_WINDOWS = ConvShape(1, 1, 2, 1, 1, 5, 1, 4)


# -- forward ------------------------------------------------------------------------------------------------------


@settings(max_examples=60)
@given(
    shape=geometries(),
    seed=st.integers(0, 2**32 - 1),
    activation=st.sampled_from(list(Activation)),
    dtype=st.sampled_from([np.float64, np.float32]),
)
@example(shape=REMAINDER_ROWS, seed=0, activation=Activation.RELU, dtype=np.float64)
@example(shape=REMAINDER_COLS_NO_PADDING, seed=1, activation=Activation.TANH, dtype=np.float32)
@example(shape=STRIDE_ABOVE_K, seed=2, activation=Activation.NONE, dtype=np.float64)
@example(shape=ONE_BY_ONE, seed=3, activation=Activation.SIGMOID, dtype=np.float64)
@example(shape=PADDING_ONLY_WINDOWS, seed=4, activation=Activation.LEAKY_RELU, dtype=np.float32)
def test_forward_equals_the_reference(shape: ConvShape, seed: int, activation: Activation, dtype: type):
    """Within ``2·γ_n·A`` (two summation orders) plus 8 ulps of the activation's own evaluation.

    Every activation is 1-Lipschitz, so the pre-activation's error passes through undiminished at worst; numpy's
    elementwise ``tanh``/``exp`` are accurate to a few ulps and the logistic adds one division.
    """
    x, w, b, _ = random_arrays(shape, seed, dtype)
    out, _ = layer_for(shape, activation).forward(x, w, b)
    assert out.shape == shape.out_shape
    assert out.dtype == dtype
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    want = reference.forward(x64, w64, b64, shape.window, activation)
    u = unit_roundoff(dtype)
    n = shape.filter_size**2 * shape.in_depth + 1
    bound = 2 * gamma(n, u) * reference.magnitude(x64, w64, b64, shape.window) + 8 * u * np.abs(want)
    assert np.all(np.abs(out - want) <= bound)


# -- backward against naive central differences ---------------------------------------------------------------------


def central_differences(
    forward, x: np.ndarray, w: np.ndarray, b: np.ndarray, g: np.ndarray, eps: float
) -> tuple[np.ndarray, ...]:
    """For every entry θ of x, w and b, one at a time: ``Σ_o g_o·(f_o(θ + ε) − f_o(θ − ε)) / (2ε)``.

    Differencing per output before summing keeps the rounding error proportional to each output's own
    magnitude instead of to ``|L|``.
    """
    params = [x.copy(), w.copy(), b.copy()]
    grads = []
    for p in params:
        grad = np.zeros(p.shape)
        for idx in np.ndindex(p.shape):
            saved = p[idx]
            p[idx] = saved + eps
            f_plus = forward(*params)
            p[idx] = saved - eps
            f_minus = forward(*params)
            p[idx] = saved
            grad[idx] = np.sum(g * (f_plus - f_minus)) / (2 * eps)
        grads.append(grad)
    return tuple(grads)


def difference_bound(
    shape: ConvShape, x, w, b, g, eps: float, activation: Activation, third_derivative: float = 0.0
) -> float:
    """What ``|numeric − analytic|`` may be for any entry, on a correct layer, in float64.

    Rounding of one evaluated output: ``γ_n·A⁺ + 4u`` with ``A⁺`` the magnitude at ``|θ| + ε`` (every perturbed
    point); both evaluations, divided by ``2ε``, summed with ``|g|`` over all outputs (an entry touches fewer).
    The analytic side sums at most ``M + n`` products of ``g`` with a partner of size ≤ ``S = max(|x|, |w|, 1)``.
    A smooth activation adds the Taylor remainder ``ε²/6·sup|f'''|·S³·Σ|g|``; piecewise-linear ones, kept away
    from their kinks, add none.
    """
    u = unit_roundoff(np.float64)
    n = shape.filter_size**2 * shape.in_depth + 1
    m = math.prod(shape.out_shape)
    a_plus = reference.magnitude(np.abs(x) + eps, np.abs(w) + eps, np.abs(b) + eps, shape.window)
    activation_rounding = 0.0 if activation in (Activation.NONE, Activation.RELU) else 4 * u
    per_output = gamma(n, u) * a_plus + activation_rounding
    numeric = float(np.sum(np.abs(g) * per_output)) / eps
    s = max(float(np.max(np.abs(x))), float(np.max(np.abs(w))), 1.0)
    analytic = 2 * gamma(m + n, u) * float(np.sum(np.abs(g))) * s
    truncation = eps**2 / 6 * third_derivative * s**3 * float(np.sum(np.abs(g)))
    return numeric + analytic + truncation


def move_kinks_away(x, w, b, shape: ConvShape) -> tuple[np.ndarray, float]:
    """A bias that puts 0 in the middle of the widest gap between each channel's pre-activations.

    Returns the bias and the margin: every pre-activation is at least ``margin`` away from 0, so steps that move
    a pre-activation by less than that never cross ReLU's kink. Interior gaps are preferred, so that both sides
    of the kink stay populated whenever a channel has two distinct pre-activations.
    """
    z = reference.convolve(x, w, np.zeros_like(b), shape.window).reshape(-1, shape.out_depth)
    bias, margins = np.empty_like(b), []
    for co in range(shape.out_depth):
        values = np.unique(z[:, co])
        if len(values) >= 2:
            gaps = np.diff(values)
            i = int(np.argmax(gaps))
            bias[co] = -(values[i] + values[i + 1]) / 2
            margins.append(gaps[i] / 2)
        else:
            bias[co] = 1.0 - values[0]
            margins.append(1.0)
    return bias, float(min(margins))


THIRD_DERIVATIVE = {Activation.TANH: 2.0, Activation.SIGMOID: 1 / 8}  # sup|f'''| (at z = 0)


@settings(max_examples=25)
@given(
    shape=geometries(max_size=6, max_stride=3, max_channels=3, max_batch=2),
    seed=st.integers(0, 2**32 - 1),
    activation=st.sampled_from(list(Activation)),
)
@example(shape=ConvShape(1, 6, 5, 2, 2, 3, 2, 1), seed=0, activation=Activation.RELU)
@example(shape=ConvShape(1, 5, 4, 2, 2, 2, 3, 0), seed=1, activation=Activation.TANH)
@example(shape=ConvShape(2, 3, 4, 3, 2, 1, 1, 0), seed=2, activation=Activation.NONE)
@example(shape=ConvShape(1, 2, 1, 1, 2, 3, 1, 2), seed=3, activation=Activation.LEAKY_RELU)
def test_backward_equals_naive_central_differences(shape: ConvShape, seed: int, activation: Activation):
    """Every entry of dx, dw, db against one-at-a-time central differences of ``Σ reference.forward ⊙ g``.

    Linear (``none``): ``L`` is exactly linear in each single entry, so the step can be 1 and the difference is
    exact up to rounding. ReLU / leaky ReLU: the bias is placed so that no pre-activation lies within
    ``margin`` of the kink and the step moves none by more than half of it: the function is linear there too.
    Smooth activations: a small step and the Taylor remainder in the bound.
    """
    x, w, b, g = random_arrays(shape, seed)
    if activation.piecewise_linear and activation is not Activation.NONE:
        b, margin = move_kinks_away(x, w, b, shape)
        largest_slope = max(float(np.max(np.abs(x))), float(np.max(np.abs(w))), 1.0)
        eps = 2.0 ** math.floor(math.log2(margin / (2 * largest_slope)))
    elif activation is Activation.NONE:
        eps = 1.0
    else:
        eps = 2.0**-17
    layer = layer_for(shape, activation)
    out, cache = layer.forward(x, w, b)
    analytic = layer.backward(g, cache)
    numeric = central_differences(lambda *p: reference.forward(*p, shape.window, activation), x, w, b, g, eps)
    bound = difference_bound(shape, x, w, b, g, eps, activation, THIRD_DERIVATIVE.get(activation, 0.0))
    for name, got, want in zip(("dx", "dw", "db"), analytic, numeric, strict=True):
        assert got.shape == want.shape, name
        assert np.max(np.abs(got - want)) <= bound, name


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("activation", list(Activation))
def test_backward_returns_the_parameter_shapes_and_dtype_and_leaves_its_arguments_alone(dtype, activation):
    shape = REMAINDER_ROWS
    x, w, b, g = random_arrays(shape, 5, dtype)
    copies = [a.copy() for a in (x, w, b, g)]
    layer = layer_for(shape, activation)
    out, cache = layer.forward(x, w, b)
    grads = layer.backward(g, cache)
    for grad, param in zip(grads, (x, w, b), strict=True):
        assert grad.shape == param.shape
        assert grad.dtype == dtype
    for before, after in zip(copies, (x, w, b, g), strict=True):
        np.testing.assert_array_equal(before, after)
    again = layer.backward(g, cache)
    for first, second in zip(grads, again, strict=True):
        np.testing.assert_array_equal(first, second)


# -- which input rows receive gradient ----------------------------------------------------------------------------


def reached(size: int, filter_size: int, stride: int, padding: int) -> np.ndarray:
    """Input rows (unpadded indices) that some window covers: ``h + p ∈ [oh·s, oh·s + k)`` for some ``oh``."""
    out = output_size(size, filter_size, stride, padding)
    covered = np.zeros(size, dtype=bool)
    for oh in range(out):
        for kh in range(filter_size):
            row = oh * stride + kh - padding
            if 0 <= row < size:
                covered[row] = True
    return covered


@settings(max_examples=50)
@given(shape=geometries(), seed=st.integers(0, 2**32 - 1))
@example(shape=REMAINDER_ROWS, seed=0)
@example(shape=REMAINDER_COLS_NO_PADDING, seed=1)
@example(shape=STRIDE_ABOVE_K, seed=2)
def test_rows_and_columns_no_window_reaches_get_exactly_zero_gradient(shape: ConvShape, seed: int):
    """When ``(H + 2p − k) % s ≠ 0`` (or ``s > k``) some rows are read by no window: their dx is exactly 0.

    Every other row is read, and with random data each of them gets a nonzero gradient somewhere.
    """
    x, w, b, g = random_arrays(shape, seed)
    layer = layer_for(shape, Activation.NONE)
    dx = layer.backward(g, layer.forward(x, w, b)[1])[0]
    rows = reached(shape.in_height, shape.filter_size, shape.stride, shape.padding)
    cols = reached(shape.in_width, shape.filter_size, shape.stride, shape.padding)
    assert not np.any(dx[:, ~rows, :, :])
    assert not np.any(dx[:, :, ~cols, :])
    inner = dx[:, rows][:, :, cols]
    assert np.all(np.any(inner != 0, axis=(0, 2, 3))), "a reached row got no gradient"
    assert np.all(np.any(inner != 0, axis=(0, 1, 3))), "a reached column got no gradient"


def test_pinned_remainder_geometries_do_leave_rows_and_columns_unreached():
    assert not reached(9, 3, 3, 1).all()  # REMAINDER_ROWS: the last input row
    assert not reached(9, 4, 3, 0).all()  # REMAINDER_COLS_NO_PADDING: the last two columns
    assert not reached(9, 2, 4, 1).all()  # STRIDE_ABOVE_K: rows between windows


# -- adjoint identities -------------------------------------------------------------------------------------------

ADJOINT_RTOL = 1e-12


def assert_adjoint(lhs: float, rhs: float, scale: float) -> None:
    """``|lhs − rhs| ≤ 1e-12 · Σ|terms|``: relative to the sum of the magnitudes, which cancellation cannot shrink."""
    assert abs(lhs - rhs) <= ADJOINT_RTOL * scale, (lhs, rhs, scale)


@settings(max_examples=50)
@given(shape=geometries(), seed=st.integers(0, 2**32 - 1))
@example(shape=REMAINDER_ROWS, seed=0)
@example(shape=REMAINDER_COLS_NO_PADDING, seed=1)
@example(shape=STRIDE_ABOVE_K, seed=2)
def test_backward_of_the_linear_layer_is_the_adjoint_of_its_forward(shape: ConvShape, seed: int):
    """⟨J·t, c⟩ = ⟨t, Jᵀ·c⟩ for the map x ↦ conv(x, w) (and w ↦ conv(x, w), and b ↦ broadcast b), as JAX tests it.

    The convolution is bilinear, so one forward at random ``(t_x, t_w)`` with ``b = 0`` and one backward with a
    random ``c`` give both identities: ``⟨out, c⟩ = ⟨t_x, dx⟩ = ⟨t_w, dw⟩``.
    """
    t_x, t_w, t_b, c = random_arrays(shape, seed)
    layer = layer_for(shape, Activation.NONE)
    out, cache = layer.forward(t_x, t_w, np.zeros_like(t_b))
    dx, dw, _ = layer.backward(c, cache)
    scale = float(np.sum(reference.magnitude(t_x, t_w, np.zeros_like(t_b), shape.window) * np.abs(c)))
    assert_adjoint(float(np.sum(out * c)), float(np.sum(t_x * dx)), scale)
    assert_adjoint(float(np.sum(out * c)), float(np.sum(t_w * dw)), scale)

    out_b, cache_b = layer.forward(np.zeros_like(t_x), t_w, t_b)
    db = layer.backward(c, cache_b)[2]
    scale_b = float(np.sum(np.abs(out_b) * np.abs(c)))
    assert_adjoint(float(np.sum(out_b * c)), float(np.sum(t_b * db)), scale_b)


@settings(max_examples=50)
@given(shape=geometries(), seed=st.integers(0, 2**32 - 1))
@example(shape=REMAINDER_ROWS, seed=0)
@example(shape=STRIDE_ABOVE_K, seed=1)
def test_col2im_is_the_adjoint_of_im2col(shape: ConvShape, seed: int):
    """⟨im2col(x_p), y⟩ = ⟨x_p, fold(y)⟩ on the padded input; with the crop, ⟨im2col(pad(x)), y⟩ = ⟨x, col2im(y)⟩."""
    rng = np.random.default_rng(seed)
    k, s, p = shape.filter_size, shape.stride, shape.padding
    oh, ow = shape.out_height, shape.out_width
    x = rng.standard_normal(shape.x_shape)
    x_padded = pad(x, p)
    cols = im2col(x_padded, k, s, oh, ow)
    y = rng.standard_normal(cols.shape)
    scale = float(np.sum(np.abs(cols) * np.abs(y)))

    folded = col2im(y, x_padded.shape, k, s, 0)  # padding 0 on the padded shape: the fold before the crop
    assert folded.shape == x_padded.shape
    assert_adjoint(float(np.sum(cols * y)), float(np.sum(x_padded * folded)), scale)

    cropped = col2im(y, shape.x_shape, k, s, p)
    assert cropped.shape == shape.x_shape
    assert_adjoint(float(np.sum(cols * y)), float(np.sum(x * cropped)), scale)


@settings(max_examples=30)
@given(shape=geometries(), seed=st.integers(0, 2**32 - 1))
def test_im2col_rows_are_the_windows_in_kh_kw_cin_order(shape: ConvShape, seed: int):
    rng = np.random.default_rng(seed)
    k, s = shape.filter_size, shape.stride
    x_padded = pad(rng.standard_normal(shape.x_shape), shape.padding)
    cols = im2col(x_padded, k, s, shape.out_height, shape.out_width)
    assert cols.shape == (shape.batch * shape.out_height * shape.out_width, k * k * shape.in_depth)
    row = 0
    for n in range(shape.batch):
        for oh in range(shape.out_height):
            for ow in range(shape.out_width):
                window = x_padded[n, oh * s : oh * s + k, ow * s : ow * s + k, :]
                np.testing.assert_array_equal(cols[row], window.reshape(-1))
                row += 1
