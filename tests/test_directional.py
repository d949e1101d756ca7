"""The quick tier (``directional``, one random Gaussian projection per tensor) is trusted both ways: every planted
bug is caught in the tensors the every-entry check finds it in, errors that cancel under ±1 directions are caught,
and correct layers pass (float32, integer data on ReLU's kinks, the whole N-d space)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from strategies import nd_geometries, wide_geometries

from convcheck import methods, reference
from convcheck.bugs import CATALOGUE, PlantedBug
from convcheck.checker import run_check
from convcheck.data import integer_data, make_data
from convcheck.layer import MatrixConvLayer
from convcheck.results import CheckResult
from convcheck.selftest import DEFAULT_SWEEP, GEOMETRY_SWEEP, sweep_of, with_dtype
from convcheck.spec import Activation, CheckSpec, ConvShape, DType, Method
from convcheck.tolerance import analytic_noise, unit_roundoff


def failing(result: CheckResult) -> set[str]:
    return {g.name for g in result.gradients if not g.passed}


def make(bug: PlantedBug, spec: CheckSpec) -> MatrixConvLayer:
    shape = spec.shape
    if bug.any_geometry:
        return bug.make_for(shape, spec.activation)  # type: ignore[return-value]
    return bug.make(shape.stride, shape.padding, spec.activation)  # type: ignore[return-value]


def test_the_quick_tier_draws_one_projection_per_tensor():
    result = run_check(CheckSpec("one", ConvShape(2, 6, 5, 3, 4, 3, 1, 1), method=Method.DIRECTIONAL))
    assert result.passed and [g.projections for g in result.gradients] == [methods.DIRECTIONAL_PROJECTIONS] * 3
    # 2 passes per projection and 2 at the point (the contract's output, counted, and one to prove determinism)
    assert result.forward_passes == 2 * 3 * methods.DIRECTIONAL_PROJECTIONS + 2


@pytest.mark.parametrize("dtype", list(DType))
@pytest.mark.parametrize("bug", CATALOGUE, ids=lambda bug: bug.id)
def test_the_quick_tier_finds_every_planted_bug_where_the_full_check_does(bug: PlantedBug, dtype: DType):
    """On every layer of the selftest's sweeps, at two seeds: the same failing tensors as ``full``."""
    for spec in with_dtype(sweep_of(bug, DEFAULT_SWEEP, GEOMETRY_SWEEP), dtype):
        for seed in (0, 1):
            full = run_check(spec.with_overrides(seed=seed), layer=make(bug, spec))
            quick = run_check(spec.with_overrides(seed=seed, method=Method.DIRECTIONAL), layer=make(bug, spec))
            assert failing(quick) == failing(full), (bug.id, spec.name, seed, quick.gradients)
            assert quick.status is full.status, (bug.id, spec.name, seed)


class SwappedBiasGradient(MatrixConvLayer):
    """A backward that hands back db with its first two entries swapped: the error ``e = (d₁−d₀, d₀−d₁, 0, …)``
    cancels in ``⟨e, v⟩`` whenever ``v₀ = v₁``, which ±1 directions draw half the time."""

    def backward(self, dout: np.ndarray, cache: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dx, dw, db = super().backward(dout, cache)
        db = db.copy()
        db[[0, 1]] = db[[1, 0]]
        return dx, dw, db


@pytest.mark.parametrize("seed", range(12))
def test_the_quick_tier_catches_errors_that_cancel_under_sign_directions(seed: int):
    shape = ConvShape(2, 5, 6, 2, 3, 3, 1, 1)
    spec = CheckSpec("swapped", shape, Activation.NONE, Method.DIRECTIONAL, seed=seed)
    result = run_check(spec, layer=SwappedBiasGradient(shape.stride, shape.padding, Activation.NONE))
    assert failing(result) == {"bias"}, result.gradients


@settings(max_examples=60, deadline=None)
@given(
    shape=wide_geometries(),
    activation=st.sampled_from([Activation.RELU, Activation.NONE, Activation.TANH]),
    dtype=st.sampled_from(list(DType)),
    seed=st.integers(0, 99),
    integer=st.booleans(),
)
def test_the_quick_tier_passes_correct_layers(shape, activation, dtype, seed, integer):
    spec = CheckSpec("quick", shape, activation=activation, dtype=dtype, method=Method.DIRECTIONAL, seed=seed)
    result = run_check(spec, data=integer_data(spec) if integer else None)
    assert result.passed, (spec, result.gradients, result.error)


TORCH_STYLE = ConvShape.nd(2, (7, 9), 4, 8, (3, 5), (2, 1), "same", 2, 4, False)


WHOLE_SPACE = st.tuples(
    nd_geometries(), st.sampled_from(list(Activation)), st.sampled_from(list(DType)), st.integers(0, 99), st.booleans()
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=WHOLE_SPACE)
@example(case=(TORCH_STYLE, Activation.RELU, DType.FLOAT32, 0, True))
def test_the_quick_tier_passes_correct_layers_of_the_whole_space(case):
    """Integer data with zero bias half the time: many pre-activations sit exactly on ReLU's kink."""
    shape, activation, dtype, seed, integer = case
    spec = CheckSpec("quick nd", shape, activation=activation, dtype=dtype, method=Method.DIRECTIONAL, seed=seed)
    result = run_check(spec, data=integer_data(spec) if integer else None)
    assert result.passed, (shape.describe(), result.gradients, result.error)


@pytest.mark.parametrize("activation", [Activation.RELU, Activation.TANH, Activation.SIGMOID])
@pytest.mark.parametrize("dtype", list(DType))
@pytest.mark.parametrize(
    "shape", [ConvShape(2, 6, 7, 3, 4, 3, 2, 1), TORCH_STYLE, ConvShape.nd(2, (11,), 3, 3, 4, 2, "same", 1, 3)]
)
def test_projection_bounds_are_the_projections_of_the_per_entry_bounds(shape, dtype, activation):
    """``methods.projection_bounds`` (forwards of the linear layer, by the adjoint identity) equals
    ``Σ|v_i|·bound_i`` for the per-entry bounds the every-entry methods use."""
    spec = CheckSpec("bounds", shape, activation=activation, dtype=dtype, method=Method.DIRECTIONAL)
    data = make_data(spec)
    layer = MatrixConvLayer.for_shape(shape, activation)
    grads = layer.backward(data.dout, layer.forward(data.x, data.w, data.b)[1])
    u = unit_roundoff(dtype)
    x, w, b = (a.astype(np.float64) for a in (data.x, data.w, data.b))
    magnitude = reference.magnitude(x, w, b, shape.window)
    projected = methods.projection_bounds(data.x, data.w, data.dout, grads, spec, u, magnitude)
    bounds = analytic_noise(data.x, data.w, data.b, data.dout, shape.window, u, activation)
    rng = np.random.default_rng(0)
    for bound_of, bound, grad in zip(projected, bounds, grads, strict=True):
        v = rng.standard_normal(grad.size)
        expected = float(np.abs(v) @ (bound + u * np.abs(grad.astype(np.float64))).reshape(-1))
        assert bound_of(v) == pytest.approx(expected, rel=1e-12, abs=0.0)
