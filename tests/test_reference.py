"""The reference convolution equals a plain loop convolution written here, on random geometries.

``naive_conv2d`` is the definition of a (cross-correlation) convolution with zero padding, spelled out as loops
with an explicit bounds check instead of a padded copy, so it shares nothing with ``reference.convolve`` (a
sliding-window view contracted by einsum). Both sum the same ``n = k²·C_in + 1`` terms per output in different
orders, so they may differ by at most ``2·γ_n·Σ|terms|`` with ``γ_n = n·u / (1 − n·u)`` (Higham, *Accuracy and
Stability of Numerical Algorithms*, §3.1): that bound, not a tuned number, is the tolerance.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from strategies import geometries

from convcheck import activation as act
from convcheck import reference
from convcheck.geometry import Window
from convcheck.spec import Activation, ConvShape

U64 = float(np.finfo(np.float64).eps) / 2


def random_arrays(shape: ConvShape, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape.x_shape), rng.standard_normal(shape.w_shape), rng.standard_normal(shape.b_shape)


def naive_conv2d(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, padding: int
) -> tuple[np.ndarray, np.ndarray]:
    """Loops over n, oh, ow, co and the sum over kh, kw, ci, straight from the definition:

        out[n, oh, ow, co] = b[co] + Σ_{kh, kw, ci} x[n, oh·s + kh − p, ow·s + kw − p, ci] · w[kh, kw, ci, co]

    Input entries outside ``[0, H) × [0, W)`` are the zero padding. Returns the output and, per output, the sum
    of the magnitudes of its terms ``Σ |x|·|w| + |b|`` (what the rounding bound scales with).
    """
    n_batch, height, width, c_in = x.shape
    k, _, _, c_out = w.shape
    out_h = (height + 2 * padding - k) // stride + 1
    out_w = (width + 2 * padding - k) // stride + 1
    out = np.zeros((n_batch, out_h, out_w, c_out))
    magnitude = np.zeros_like(out)
    xl, wl, bl = x.tolist(), w.tolist(), b.tolist()
    for n in range(n_batch):
        for oh in range(out_h):
            for ow in range(out_w):
                for co in range(c_out):
                    total, size = bl[co], abs(bl[co])
                    for kh in range(k):
                        for kw in range(k):
                            row, col = oh * stride + kh - padding, ow * stride + kw - padding
                            if 0 <= row < height and 0 <= col < width:
                                for ci in range(c_in):
                                    term = xl[n][row][col][ci] * wl[kh][kw][ci][co]
                                    total += term
                                    size += abs(term)
                    out[n, oh, ow, co] = total
                    magnitude[n, oh, ow, co] = size
    return out, magnitude


def summation_bound(shape: ConvShape, magnitude: np.ndarray, u: float = U64) -> np.ndarray:
    """``2·γ_n·Σ|terms|``: how far two summation orders of the same ``n`` terms can drift apart."""
    n = shape.filter_size**2 * shape.in_depth + 1
    return 2 * n * u / (1 - n * u) * magnitude


REMAINDER = ConvShape(2, 7, 8, 2, 3, 3, 2, 0)  # (8 − 3) % 2 == 1: the last column is in no window; p = 0
REMAINDER_ROWS = ConvShape(2, 8, 6, 3, 2, 3, 2, 1)  # (8 + 2 − 3) % 2 == 1: the last padded row is in no window
REMAINDER_COLS = ConvShape(1, 5, 9, 2, 2, 4, 3, 0)  # (5 − 4) % 3 == 1 and (9 − 4) % 3 == 2, p = 0
STRIDE_ABOVE_K = ConvShape(3, 9, 7, 1, 4, 2, 4, 1)  # s > k: rows between windows are read by none
ONE_BY_ONE = ConvShape(1, 1, 1, 4, 1, 1, 1, 0)
PADDING_ONLY_WINDOWS = ConvShape(1, 1, 2, 1, 1, 5, 1, 4)  # H = 1 < k: most of every window is padding


def test_pinned_geometries_cover_the_cases_the_issue_names():
    pinned = (REMAINDER, REMAINDER_ROWS, REMAINDER_COLS, STRIDE_ABOVE_K, ONE_BY_ONE, PADDING_ONLY_WINDOWS)
    assert all(not s.problems() for s in pinned)
    assert any((s.in_height + 2 * s.padding - s.filter_size) % s.stride for s in pinned)
    assert any((s.in_width + 2 * s.padding - s.filter_size) % s.stride for s in pinned)
    assert any(s.padding == 0 for s in pinned)
    assert any(s.in_height != s.in_width for s in pinned)


@settings(max_examples=60)
@given(shape=geometries(), seed=st.integers(0, 2**32 - 1))
@example(shape=REMAINDER, seed=0)
@example(shape=REMAINDER_ROWS, seed=1)
@example(shape=REMAINDER_COLS, seed=2)
@example(shape=STRIDE_ABOVE_K, seed=3)
@example(shape=ONE_BY_ONE, seed=4)
@example(shape=PADDING_ONLY_WINDOWS, seed=5)
def test_reference_conv2d_equals_the_six_loop_convolution(shape: ConvShape, seed: int):
    x, w, b = random_arrays(shape, seed)
    got = reference.convolve(x, w, b, shape.window)
    want, magnitude = naive_conv2d(x, w, b, shape.stride, shape.padding)
    assert got.shape == shape.out_shape == want.shape
    assert np.all(np.abs(got - want) <= summation_bound(shape, magnitude))


@settings(max_examples=40)
@given(shape=geometries(), seed=st.integers(0, 2**32 - 1))
@example(shape=REMAINDER_COLS, seed=0)
def test_a_one_hot_kernel_copies_the_padded_input_at_its_offset(shape: ConvShape, seed: int):
    """Cross-correlation, not convolution: w = δ at (kh, kw, ci → co) picks x_padded[oh·s + kh, ow·s + kw, ci]."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape.x_shape)
    kh, kw = (int(i) for i in rng.integers(0, shape.filter_size, size=2))
    ci, co = int(rng.integers(0, shape.in_depth)), int(rng.integers(0, shape.out_depth))
    w = np.zeros(shape.w_shape)
    w[kh, kw, ci, co] = 1.0
    p, s = shape.padding, shape.stride
    padded = np.zeros((shape.batch, shape.in_height + 2 * p, shape.in_width + 2 * p, shape.in_depth))
    padded[:, p : p + shape.in_height, p : p + shape.in_width] = x
    out = reference.convolve(x, w, np.zeros(shape.out_depth), Window.of(2, s, p))
    for oh in range(shape.out_height):
        for ow in range(shape.out_width):
            np.testing.assert_array_equal(out[:, oh, ow, co], padded[:, oh * s + kh, ow * s + kw, ci])
    assert not np.any(np.delete(out, co, axis=3))


@settings(max_examples=30)
@given(shape=geometries(), seed=st.integers(0, 2**32 - 1))
def test_magnitude_is_the_sum_of_the_absolute_terms(shape: ConvShape, seed: int):
    """``reference.magnitude`` scales every rounding bound in convcheck: it must be Σ|x|·|w| + |b| per output."""
    x, w, b = random_arrays(shape, seed)
    _, want = naive_conv2d(x, w, b, shape.stride, shape.padding)
    got = reference.magnitude(x, w, b, shape.window)
    assert np.all(np.abs(got - want) <= summation_bound(shape, want))


SCALAR_ACTIVATIONS = {
    Activation.RELU: lambda z: max(z, 0.0),
    Activation.NONE: lambda z: z,
    Activation.LEAKY_RELU: lambda z: z if z > 0 else act.LEAKY_SLOPE * z,
    Activation.SIGMOID: lambda z: 1.0 / (1.0 + math.exp(-z)),
    Activation.TANH: math.tanh,
}


def test_every_activation_has_a_scalar_definition_here():
    assert set(SCALAR_ACTIVATIONS) == set(Activation)


@settings(max_examples=30)
@given(
    shape=geometries(max_size=6),
    seed=st.integers(0, 2**32 - 1),
    activation=st.sampled_from(list(Activation)),
)
def test_reference_forward_applies_the_activation_to_conv2d(shape: ConvShape, seed: int, activation: Activation):
    """Elementwise against the textbook scalar formulas (``math``), a few units in the last place apart at most."""
    x, w, b = random_arrays(shape, seed)
    z = reference.convolve(x, w, b, shape.window)
    got = reference.forward(x, w, b, shape.window, activation)
    want = np.vectorize(SCALAR_ACTIVATIONS[activation], otypes=[float])(z)
    assert np.all(np.abs(got - want) <= 4 * U64 * np.abs(want))
