"""The finite-difference engine: grouped perturbation equals one-entry-at-a-time differences, costs what the
formula says whatever N, H and W are, notices forwards it cannot group, and takes its step from the dtype."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from strategies import geometries

from convcheck import numeric, tolerance
from convcheck.layer import MatrixConvLayer
from convcheck.numeric import Engine, NotLocalError
from convcheck.numeric.groups import Ownership, input_groups, tensor_groups
from convcheck.results import Tensor, Tolerance
from convcheck.spec import Activation, ConvShape, DType

GEOMETRIES = [
    ConvShape(2, 5, 7, 2, 3, 3, 1, 1),  # the seed's k3 s1 p1, H ≠ W
    ConvShape(1, 6, 5, 3, 2, 3, 2, 0),  # p = 0, overlapping windows
    ConvShape(2, 7, 8, 2, 2, 2, 3, 1),  # stride > k: rows in no window
    ConvShape(1, 9, 6, 2, 3, 4, 3, 2),  # remainder rows and columns
    ConvShape(3, 4, 3, 3, 2, 1, 1, 0),  # k = 1
    ConvShape(1, 2, 3, 2, 2, 5, 1, 4),  # H, W < k: windows mostly padding
    ConvShape(2, 5, 5, 1, 1, 5, 1, 2),  # one channel in, one out
]
IDS = [s.describe() for s in GEOMETRIES]

F64 = tolerance.resolve(DType.FLOAT64)
U64 = tolerance.unit_roundoff(DType.FLOAT64)


class CountingForward:
    """The layer's forward, counting how often the engine calls it (independently of ``Engine.forward_passes``)."""

    def __init__(self, layer: MatrixConvLayer) -> None:
        self.layer = layer
        self.calls = 0
        self._lock = threading.Lock()  # the engine may call from several threads

    def __call__(self, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        with self._lock:
            self.calls += 1
        return self.layer.forward(x, w, b)[0]


def setup(shape: ConvShape, activation: Activation, seed: int = 0):
    """A float64 engine at seeded random data, the counting forward, and the analytic gradients with their noise."""
    rng = np.random.default_rng(seed)
    x, w, b, g = (rng.standard_normal(s) for s in (shape.x_shape, shape.w_shape, shape.b_shape, shape.out_shape))
    layer = MatrixConvLayer(shape.stride, shape.padding, activation)
    forward = CountingForward(layer)
    engine = Engine(forward, x, w, b, g, shape, activation, F64.eps, U64)
    analytic = layer.backward(g, layer.forward(x, w, b)[1])
    noise = tolerance.analytic_noise(x, w, b, g, shape.window, U64)
    return engine, forward, analytic, noise


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a − b| / max|b|`` (0 when both are 0)."""
    scale = float(np.max(np.abs(b), initial=0.0))
    diff = float(np.max(np.abs(a - b), initial=0.0))
    return diff / scale if scale else diff


# -- grouped == entrywise -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", [Activation.NONE, Activation.TANH, Activation.SIGMOID])
@pytest.mark.parametrize("shape", GEOMETRIES, ids=IDS)
def test_grouped_differences_equal_per_entry_differences(shape: ConvShape, activation: Activation):
    """Each perturbed entry owns every output it reaches, so grouping changes nothing but the summation order."""
    engine, _, analytic, noise = setup(shape, activation)
    for tensor in range(3):
        grouped = engine.grouped(tensor, analytic[tensor], noise[tensor], F64.rtol, F64.atol)
        single = engine.entrywise(tensor, analytic[tensor], noise[tensor], F64.rtol, F64.atol)
        assert grouped.measured.all() and single.measured.all()
        assert relative_difference(grouped.central, single.central) <= 1e-12, numeric.TENSOR_NAMES[tensor]


@pytest.mark.parametrize("shape", GEOMETRIES, ids=IDS)
def test_grouped_differences_equal_per_entry_differences_with_relu_away_from_kinks(shape: ConvShape):
    """ReLU: entries whose step crossed a kink are judged by intervals; every other entry must agree."""
    engine, _, analytic, noise = setup(shape, Activation.RELU, seed=1)
    for tensor in range(3):
        grouped = engine.grouped(tensor, analytic[tensor], noise[tensor], F64.rtol, F64.atol)
        single = engine.entrywise(tensor, analytic[tensor], noise[tensor], F64.rtol, F64.atol)
        clean = (grouped.crossed == 0) & (single.crossed == 0)
        assert clean.mean() > 0.9
        assert relative_difference(grouped.central[clean], single.central[clean]) <= 1e-12


@settings(max_examples=40, deadline=None)
@given(shape=geometries())
def test_the_seed_geometry_keeps_its_residue_groups_in_their_order(shape: ConvShape):
    """For the seed's geometry the general row classes ``(h div d) mod k`` are the residues ``h mod k``: input
    groups come in the order (i, j, c), each holding every entry with ``h ≡ i``, ``w ≡ j (mod k)`` in channel c, owned
    by position (so estimates stay bit for bit what they were)."""
    k, c_in = shape.filter_size, shape.in_depth
    n, h, w, c = np.unravel_index(np.arange(np.prod(shape.x_shape)), shape.x_shape)
    expected = [
        np.flatnonzero((h % k == i) & (w % k == j) & (c == channel))
        for i in range(min(k, shape.in_height))
        for j in range(min(k, shape.in_width))
        for channel in range(c_in)
    ]
    groups = list(input_groups(shape))
    assert [g.ownership for g in groups] == [Ownership.POSITION] * len(expected)
    for group, entries in zip(groups, expected, strict=True):
        np.testing.assert_array_equal(group.entries, entries)


# -- cost ---------------------------------------------------------------------------------------------------------


def grouped_check(shape: ConvShape, activation: Activation = Activation.NONE) -> tuple[Engine, CountingForward]:
    engine, forward, analytic, noise = setup(shape, activation)
    for tensor in range(3):
        engine.grouped(tensor, analytic[tensor], noise[tensor], F64.rtol, F64.atol)
    return engine, forward


@pytest.mark.parametrize(("k", "c_in"), [(1, 1), (3, 2), (5, 1), (2, 3)])
def test_a_grouped_check_costs_two_baselines_plus_two_per_group_whatever_n_h_w(k: int, c_in: int):
    """2 evaluations at the point (the baseline and a repeat that proves the forward deterministic), then
    ``2·(2·k²·C_in + 1)``: k²·C_in input groups, k²·C_in weight groups and one bias group, two passes each."""
    sizes = [(1, k, k, 1), (2, k + 3, k + 5, 2), (3, 2 * k + 4, k + 1, 4), (1, 3 * k + 2, 3 * k + 2, 3)]
    counts = set()
    for n, h, w, c_out in sizes:
        for stride, padding in [(1, 0), (2, k - 1), (k + 1, k // 2)]:
            shape = ConvShape(n, h, w, c_in, c_out, k, stride, padding)
            engine, forward = grouped_check(shape)
            assert forward.calls == engine.forward_passes == 2 + numeric.grouped_passes(shape), shape.describe()
            counts.add(forward.calls)
    # Whatever N, H, W, C_out, stride and padding: the window's entries, k²·C_in, set the cost.
    assert len(counts) == 1


def test_inputs_smaller_than_the_kernel_need_fewer_input_groups():
    """With H or W < k, only min(k, H)·min(k, W) residues exist; ``grouped_passes`` counts exactly those."""
    for shape in (ConvShape(2, 2, 3, 2, 2, 5, 1, 2), ConvShape(1, 1, 1, 3, 2, 3, 1, 1)):
        engine, forward = grouped_check(shape)
        assert forward.calls == 2 + numeric.grouped_passes(shape)
        roomy = ConvShape(1, 3 * shape.filter_size, 3 * shape.filter_size, shape.in_depth, 2, shape.filter_size)
        assert forward.calls < grouped_check(roomy)[1].calls  # the same kernel and channels on a larger image


def test_the_pass_counts_count_the_groups_and_the_entries():
    """Two passes per group the engine perturbs (counted from the groups it generates), two per entry one at a
    time (counted from the arrays' sizes); for the README's layer, 578 passes instead of 402,496."""
    seed = ConvShape(8, 32, 48, 16, 32, 3, 1, 1)
    groups = sum(1 for t in Tensor for _ in tensor_groups(seed, t))
    assert numeric.grouped_passes(seed) == 2 * groups == 578
    entries = sum(np.empty(s).size for s in (seed.x_shape, seed.w_shape, seed.b_shape))
    assert numeric.entrywise_passes(seed) == 2 * entries == 402_496


# -- locality and determinism -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "leak",
    [
        pytest.param(lambda out, x: out + 1e-3 * x.mean(), id="adds-the-input-mean"),
        pytest.param(lambda out, x: out + 1e-3 * np.roll(out, 1, axis=2), id="mixes-neighbouring-columns"),
        pytest.param(lambda out, x: out + 1e-3 * np.roll(out[::-1], 1, axis=1), id="mixes-batch-items-and-rows"),
    ],
)
def test_a_forward_that_is_not_local_is_refused_by_the_grouped_method(leak):
    shape = ConvShape(2, 5, 6, 2, 3, 3, 1, 1)  # padding 1: some outputs own no entry of some groups
    layer = MatrixConvLayer(shape.stride, shape.padding, Activation.RELU)
    rng = np.random.default_rng(0)
    x, w, b, g = (rng.standard_normal(s) for s in (shape.x_shape, shape.w_shape, shape.b_shape, shape.out_shape))
    engine = Engine(
        lambda x, w, b: leak(layer.forward(x, w, b)[0], x), x, w, b, g, shape, Activation.RELU, F64.eps, U64
    )
    with pytest.raises(NotLocalError, match="not local"):
        engine.grouped(0, np.zeros(shape.x_shape), np.zeros(shape.x_shape), F64.rtol, F64.atol)


def test_a_forward_that_is_not_deterministic_is_refused_before_any_difference():
    shape = GEOMETRIES[0]
    layer = MatrixConvLayer(shape.stride, shape.padding, Activation.TANH)
    rng = np.random.default_rng(0)
    x, w, b, g = (rng.standard_normal(s) for s in (shape.x_shape, shape.w_shape, shape.b_shape, shape.out_shape))
    jitter = np.random.default_rng(1)

    def noisy(x, w, b):
        out = layer.forward(x, w, b)[0]
        return out + 1e-12 * jitter.standard_normal(out.shape)

    with pytest.raises(NotLocalError, match="not deterministic"):
        Engine(noisy, x, w, b, g, shape, Activation.TANH, F64.eps, U64)


# -- step and tolerances ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(DType))
def test_the_default_step_is_the_power_of_two_just_below_a_quarter_of_the_cube_root_of_u(dtype: DType):
    u = tolerance.unit_roundoff(dtype)
    assert u == float(np.finfo(np.dtype(dtype.value)).eps) / 2
    eps = tolerance.default_eps(dtype)
    mantissa, _ = math.frexp(eps)
    assert mantissa == 0.5, "not a power of two"
    assert eps <= u ** (1 / 3) / 4 < 2 * eps


def test_the_step_and_tolerances_grow_with_the_unit_roundoff():
    f32, f64 = tolerance.resolve(DType.FLOAT32), tolerance.resolve(DType.FLOAT64)
    assert f32.eps > f64.eps and f32.rtol > f64.rtol and f32.atol > f64.atol


@pytest.mark.parametrize("dtype", list(DType))
def test_defaults_fill_only_what_is_left_as_none(dtype: DType):
    """STYLE rule 7: an explicit 0 is a value, not "use the default"."""
    u = tolerance.unit_roundoff(dtype)
    default = tolerance.resolve(dtype)
    assert default == Tolerance(tolerance.default_eps(dtype), math.sqrt(u), u)
    assert tolerance.resolve(dtype, rtol=0.0, atol=0.0) == Tolerance(default.eps, 0.0, 0.0)
    assert tolerance.resolve(dtype, rtol=0, atol=0) == Tolerance(default.eps, 0.0, 0.0)
    assert tolerance.resolve(dtype, eps=2.0**-12, rtol=1e-3) == Tolerance(2.0**-12, 1e-3, default.atol)


def test_differences_divide_by_the_step_actually_taken_not_the_nominal_one():
    """Just below a power of two, ``θ + ε`` rounds in float32 (the last place doubles), so the step taken is not
    ε. The engine measures it: a linear forward evaluated exactly (float64 arithmetic on float32 values) must give
    the analytic gradient to float64 rounding even when every entry sits at such an edge."""
    shape = ConvShape(2, 4, 5, 2, 3, 3, 1, 1)
    rng = np.random.default_rng(0)
    signs = [rng.choice([-1.0, 1.0], size=s) for s in (shape.x_shape, shape.w_shape, shape.b_shape)]
    powers = [2.0 ** rng.integers(-1, 2, size=s) for s in (shape.x_shape, shape.w_shape, shape.b_shape)]
    below_power_of_two = np.float32(1) - np.float32(2.0**-24)  # the largest float32 below 1
    x, w, b = (np.float32(below_power_of_two * p * s) for p, s in zip(powers, signs, strict=True))
    eps = tolerance.default_eps(DType.FLOAT32)
    assert np.any((x + np.float32(eps)) - x != np.float32(eps)), "the data must make some steps inexact"
    g = rng.standard_normal(shape.out_shape)
    layer = MatrixConvLayer(shape.stride, shape.padding, Activation.NONE)

    def exact(x, w, b):
        return layer.forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))[0]

    engine = Engine(exact, x, w, b, g, shape, Activation.NONE, eps, U64)
    analytic = layer.backward(g, layer.forward(*(a.astype(np.float64) for a in (x, w, b)))[1])
    for tensor in range(3):
        est = engine.grouped(tensor, analytic[tensor], np.zeros(analytic[tensor].shape), 0.0, 0.0)
        assert relative_difference(est.central, analytic[tensor].reshape(-1)) <= 1e-12
