"""The quick tier (``directional``) on ReLU layers: a projection that crosses a kink is measured again with a shorter
step (``numeric.kinks.shortened``) and judged by a plain central difference, not by the interval its one-sided
differences span; projections that cross nothing are measured exactly as before."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from convcheck.bugs import CATALOGUE
from convcheck.checker import run_check
from convcheck.data import integer_data
from convcheck.layer import MatrixCache, MatrixConvLayer
from convcheck.numeric import kinks
from convcheck.protocol import ConvLayer
from convcheck.results import CheckResult, TensorResult
from convcheck.spec import Activation, CheckSpec, ConvShape, Method

# The layer of configs/textbook.yaml: a random projection of its weights crosses a kink at seeds 0, 1 and 2.
TEXTBOOK = ConvShape(8, 32, 48, 16, 32, 3, 1, 1)
SEEDS = (0, 1, 2)


def quick(seed: int, layer: ConvLayer | None = None) -> CheckResult:
    return run_check(CheckSpec("textbook", TEXTBOOK, Activation.RELU, Method.DIRECTIONAL, seed=seed), layer=layer)


@functools.cache
def correct_quick(seed: int, retries: int) -> CheckResult:
    """The correct layer's quick check at ``seed`` with ``retries`` shorter steps per crossed projection: two tests
    compare the same two checks per seed, each run once per process (results are frozen)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kinks, "PROJECTION_RETRIES", retries)
        return quick(seed)


def by_name(result: CheckResult) -> dict[str, TensorResult]:
    return {g.name: g for g in result.gradients}


class ScaledWeightsGradient(MatrixConvLayer):
    """A backward whose dw is off by a constant factor (a wrong normalisation): an error of ``|factor − 1|`` of the
    weights projection, thousands of times its rounding noise, yet at seed 2 inside the interval the crossed
    outputs span at the engine's step."""

    def __init__(self, factor: float) -> None:
        super().__init__(TEXTBOOK.stride, TEXTBOOK.padding, Activation.RELU)
        self.factor = factor

    def backward(self, dout: np.ndarray, cache: MatrixCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dx, dw, db = super().backward(dout, cache)
        return dx, dw * self.factor, db


@pytest.mark.parametrize("seed", SEEDS)
def test_a_crossed_projection_is_judged_by_a_central_difference_at_a_shorter_step(seed: int) -> None:
    retries = kinks.PROJECTION_RETRIES
    shortened = correct_quick(seed, retries)
    assert shortened.passed, shortened.gradients
    assert {name: g.kinks for name, g in by_name(shortened).items()} == {"input": 0, "weights": 0, "bias": 0}
    at_eps = correct_quick(seed, 0)  # every projection judged at the engine's step
    assert at_eps.passed and by_name(at_eps)["weights"].kinks == 1, at_eps.gradients
    # two passes per shorter step, and only where the engine's step crossed
    crossed = sum(g.kinks for g in at_eps.gradients)
    assert at_eps.forward_passes + 2 * crossed <= shortened.forward_passes
    assert shortened.forward_passes <= at_eps.forward_passes + 2 * retries * crossed


@pytest.mark.parametrize("seed", SEEDS)
def test_projections_that_cross_nothing_are_measured_as_at_the_engines_step(seed: int) -> None:
    shortened = by_name(correct_quick(seed, kinks.PROJECTION_RETRIES))
    at_eps = by_name(correct_quick(seed, 0))
    uncrossed = [name for name, g in at_eps.items() if g.kinks == 0]
    assert uncrossed, at_eps
    for name in uncrossed:
        for field in ("analytic", "numeric", "allowed", "error"):
            got, expected = getattr(shortened[name], field), getattr(at_eps[name], field)
            assert got.tobytes() == expected.tobytes(), (name, field)


@pytest.mark.parametrize("factor", [0.99, 1.01])
def test_a_weights_gradient_one_percent_off_fails_the_quick_tier_at_every_seed(factor: float) -> None:
    """At the engine's step, one of these six checks passed: its error fell inside the crossed projection's
    interval (``test_a_crossed_projection_is_judged_by_a_central_difference_at_a_shorter_step`` shows the
    crossing)."""
    for seed in SEEDS:
        result = quick(seed, ScaledWeightsGradient(factor))
        assert {name for name, g in by_name(result).items() if not g.passed} == {"weights"}, (seed, result.gradients)


def test_a_planted_weights_bug_the_crossed_interval_hid_fails_the_quick_tier_as_it_fails_the_full_check() -> None:
    """A transposed dW changes the weights projection by far less than the interval of its crossed outputs at the
    engine's step (seed 0), though by far more than its rounding noise."""
    bug = next(bug for bug in CATALOGUE if bug.id == "weights-product-transposed")
    spec = CheckSpec("textbook", TEXTBOOK, Activation.RELU, Method.FULL, seed=0)
    full = run_check(spec, layer=bug.make(TEXTBOOK.stride, TEXTBOOK.padding, Activation.RELU))
    assert {g.name for g in full.gradients if not g.passed} == {"weights"}, full.gradients
    found = quick(0, bug.make(TEXTBOOK.stride, TEXTBOOK.padding, Activation.RELU))
    assert {g.name for g in found.gradients if not g.passed} == {"weights"}, found.gradients


def test_kinks_at_the_point_stop_the_shorter_steps_after_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Integer data puts pre-activations exactly on ReLU's kink: no step leaves them, a shorter one does not narrow
    the interval, and the projection stays judged by its interval after one shorter step (two passes)."""
    spec = CheckSpec("integer", TEXTBOOK, Activation.RELU, Method.DIRECTIONAL, seed=0)
    result = run_check(spec, data=integer_data(spec))
    assert result.passed, result.gradients
    crossed = [g.name for g in result.gradients if g.kinks]
    assert crossed, result.gradients
    monkeypatch.setattr(kinks, "PROJECTION_RETRIES", 0)
    at_eps = run_check(spec, data=integer_data(spec))
    assert [g.name for g in at_eps.gradients if g.kinks] == crossed
    assert result.forward_passes == at_eps.forward_passes + 2 * len(crossed)
