"""The finite-difference engine over the whole geometry space: every input group puts at most one perturbed entry in
each output's window (and names it as the owner), grouped differences equal per-entry ones, the pass count is the
formula, conv groups that leak are caught, and ``run_check`` passes the built-in layer in float64 and float32, also
at integer data where many pre-activations sit exactly on ReLU's kink."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from strategies import nd_geometries

from convcheck import methods, numeric, reference, tolerance
from convcheck.checker import run_check
from convcheck.data import integer_data, make_data
from convcheck.layer import MatrixConvLayer
from convcheck.numeric import Engine, NotLocalError
from convcheck.numeric.groups import Ownership, input_groups
from convcheck.results import Status, Tensor
from convcheck.spec import Activation, CheckSpec, ConvShape, DType, Method

F64 = tolerance.resolve(DType.FLOAT64)
U64 = tolerance.unit_roundoff(DType.FLOAT64)

TORCH_STYLE = ConvShape(1, 7, 9, 8, 4, (3, 5), (2, 1), "same", dilation=2, groups=4, bias=False)
DEPTHWISE_1D = ConvShape.nd(2, (9,), 4, 4, 3, 1, "same", 1, groups=4, bias=False)
THREE_D = ConvShape.nd(1, (4, 5, 6), 2, 4, (2, 3, 2), (1, 2, 1), ((1, 0), (0, 2), (1, 1)), (2, 1, 1), groups=2)
SHORT_DILATED_AXIS = ConvShape.nd(1, (3, 8), 2, 2, 3, 1, 2, 2)  # 3 rows at dilation 2: 2 row classes, not 3


def engine_for(shape: ConvShape, activation: Activation, seed: int = 0, forward=None):
    rng = np.random.default_rng(seed)
    x, w, b, g = (rng.standard_normal(s) for s in (shape.x_shape, shape.w_shape, shape.b_shape, shape.out_shape))
    layer = MatrixConvLayer.for_shape(shape, activation)
    analytic = layer.backward(g, layer.forward(x, w, b)[1])
    noise = tolerance.analytic_noise(x, w, b, g, shape.window, U64, activation)
    engine = Engine(forward or (lambda *p: layer.forward(*p)[0]), x, w, b, g, shape, activation, F64.eps, U64)
    return engine, analytic, noise


@settings(max_examples=60, deadline=None)
@given(shape=nd_geometries())
@example(shape=TORCH_STYLE)
@example(shape=THREE_D)
@example(shape=SHORT_DILATED_AXIS)
def test_every_output_sees_exactly_its_owner_among_a_groups_entries(shape: ConvShape) -> None:
    """Convolving the group's indicator (entry ``i`` marked ``i + 1``) with all-ones filters counts, per output, the
    perturbed entries its window holds and adds their marks: at most one, and it is the owner the group names."""
    ones = np.ones(shape.w_shape)
    for group in input_groups(shape):
        marks, hits = np.zeros(math.prod(shape.x_shape)), np.zeros(math.prod(shape.x_shape))
        marks[group.entries] = np.arange(len(group.entries)) + 1
        hits[group.entries] = 1
        count = reference.convolve(hits.reshape(shape.x_shape), ones, np.zeros(0), shape.window)
        mark = reference.convolve(marks.reshape(shape.x_shape), ones, np.zeros(0), shape.window)
        assert count.max(initial=0) <= 1
        assert group.owner is not None
        owner = group.owner[..., None] if group.ownership is Ownership.POSITION else group.owner
        np.testing.assert_array_equal(np.broadcast_to(owner + 1, shape.out_shape), np.rint(mark))
        np.testing.assert_array_equal(group.unowned, count.max(axis=-1) == 0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=nd_geometries(max_size=5), activation=st.sampled_from([Activation.NONE, Activation.TANH]))
@example(shape=TORCH_STYLE, activation=Activation.TANH)
@example(shape=DEPTHWISE_1D, activation=Activation.NONE)
def test_grouped_differences_equal_per_entry_differences(shape: ConvShape, activation: Activation) -> None:
    """Each perturbed entry owns every output it reaches, so grouping changes nothing but the summation order."""
    engine, analytic, noise = engine_for(shape, activation)
    for tensor in Tensor:
        grouped = engine.grouped(tensor, analytic[tensor], noise[tensor], F64.rtol, F64.atol)
        single = engine.entrywise(tensor, analytic[tensor], noise[tensor], F64.rtol, F64.atol)
        assert grouped.measured.all() and single.measured.all()
        scale = float(np.max(np.abs(single.central), initial=0.0))
        assert float(np.max(np.abs(grouped.central - single.central), initial=0.0)) <= 1e-12 * max(scale, 1.0)


@settings(max_examples=30, deadline=None)
@given(shape=nd_geometries())
@example(shape=SHORT_DILATED_AXIS)
def test_a_grouped_check_costs_two_baselines_plus_the_formula(shape: ConvShape) -> None:
    """``2·(2·∏k·C_in/g + 1)`` when every axis holds ``k·d`` rows (one pass pair fewer per missing row class, none
    for an absent bias), plus the two evaluations at the point."""
    engine, analytic, noise = engine_for(shape, Activation.NONE)
    for tensor in Tensor:
        engine.grouped(tensor, analytic[tensor], noise[tensor], F64.rtol, F64.atol)
    assert engine.forward_passes == 2 + numeric.grouped_passes(shape)
    per_group = shape.in_depth // shape.groups
    full = 2 * (2 * math.prod(shape.kernel) * per_group + int(shape.bias))
    long_enough = all(size >= k * d for size, k, d in zip(shape.spatial_in, shape.kernel, shape.dilations, strict=True))
    assert numeric.grouped_passes(shape) == full if long_enough else numeric.grouped_passes(shape) <= full
    if shape is SHORT_DILATED_AXIS:
        assert numeric.grouped_passes(shape) == 2 * (2 * 3 * 2 + 3 * 3 * 2 + 1)


def test_the_issues_torch_style_layer_costs_what_the_formula_says() -> None:
    """Dilation 2, groups 4, kernel 3x5, stride 2x1, same padding, no bias: 2·(2·15·2) = 120 passes."""
    assert numeric.grouped_passes(TORCH_STYLE) == 120
    assert numeric.entrywise_passes(TORCH_STYLE) == 2 * (7 * 9 * 8 + 3 * 5 * 2 * 4)


def test_a_forward_that_mixes_conv_groups_is_not_separable() -> None:
    """Every input group perturbs one channel of each conv group at once, crediting each output to its own group's
    channel: a forward leaking across groups would fool the owner sums, so ``check_separable`` probes it."""
    layer = MatrixConvLayer.for_shape(THREE_D, Activation.NONE)

    def leaking(x, w, b):
        out = layer.forward(x, w, b)[0]
        return out + 1e-3 * x.sum(axis=-1).mean()

    engine, _, _ = engine_for(THREE_D, Activation.NONE)
    engine.check_separable()  # the correct layer passes
    with pytest.raises(NotLocalError, match="other conv groups"):
        engine_for(THREE_D, Activation.NONE, forward=leaking)[0].check_separable()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=nd_geometries(max_size=6),
    dtype=st.sampled_from(list(DType)),
    activation=st.sampled_from([Activation.RELU, Activation.LEAKY_RELU, Activation.TANH]),
    integers=st.booleans(),
    seed=st.integers(0, 2**16),
)
@example(shape=TORCH_STYLE, dtype=DType.FLOAT32, activation=Activation.RELU, integers=True, seed=0)
@example(shape=DEPTHWISE_1D, dtype=DType.FLOAT64, activation=Activation.RELU, integers=True, seed=1)
@example(shape=THREE_D, dtype=DType.FLOAT32, activation=Activation.TANH, integers=False, seed=2)
def test_the_built_in_layer_passes_every_geometry(
    shape: ConvShape, dtype: DType, activation: Activation, integers: bool, seed: int
) -> None:
    """No false alarm: random data, or integer data with zero bias, where many pre-activations are exactly 0."""
    spec = CheckSpec("geometry", shape, activation, Method.FULL, dtype, seed=seed)
    result = run_check(spec, data=integer_data(spec) if integers else make_data(spec))
    assert result.status is Status.PASS, (shape.describe(), result.error, [str(h) for h in result.diagnosis])
    # Two baselines, the groups and the audit of a few entries per tensor, unless kinks were re-measured.
    assert result.forward_passes == 2 + methods.full_passes(spec) or any(g.kinks for g in result.gradients)
