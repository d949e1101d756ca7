"""Diagnosis hints name the planted bug, on every layer that exposes it, and never speak for a correct layer.

The catalogue of planted bugs (``convcheck.bugs``) is the test bed: every bug is checked on every layer of the
selftest sweep in float64 and float32, and wherever the check fails its diagnosis must contain the bug's
``hint`` keyword. Rules the catalogue does not exercise (forward transposed, shifted or without activation,
a flipped or sign-flipped gradient, …) are proven with small extra layers defined here. docs/diagnosis.md
records the hit rate this file measures, and a test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from firstread import RunOnFirstRead
from hypothesis import given
from hypothesis import strategies as st
from strategies import geometries

from convcheck import bugs
from convcheck.bugs import CATALOGUE, StepwiseLayer
from convcheck.checker import run_check
from convcheck.data import CheckData, make_data
from convcheck.diagnosis import LABELS, diagnose
from convcheck.layer import MatrixCache, MatrixConvLayer
from convcheck.render import grids
from convcheck.results import CheckResult, Finding, FindingKind, Hint, Status
from convcheck.selftest import DEFAULT_SWEEP, DTYPES, GEOMETRY_SWEEP, sweep_of, with_dtype
from convcheck.spec import Activation, CheckSpec, ConvShape, DType, Method

DOC = Path(__file__).resolve().parent.parent / "docs" / "diagnosis.md"
SWEEP = tuple(spec for dtype in DTYPES for spec in with_dtype(DEFAULT_SWEEP, dtype))
GEOMETRY = tuple(spec for dtype in DTYPES for spec in with_dtype(GEOMETRY_SWEEP, dtype))


def _check(spec: CheckSpec, layer_type: type[MatrixConvLayer] | None = None) -> CheckResult:
    return run_check(spec, layer=(layer_type or MatrixConvLayer).for_shape(spec.shape, spec.activation))


@pytest.fixture(scope="module")
def catalogue_results() -> RunOnFirstRead[str, list[CheckResult]]:
    """Every planted bug on every layer of its sweep, float64 and float32 (about 450 small checks, ~5 s), by bug
    id; a bug's checks run when a test first reads them (the documented-rate test reads them all)."""

    def run(bug_id: str) -> list[CheckResult]:
        bug = bugs.get(bug_id)
        return [_check(spec, bug.layer) for spec in sweep_of(bug, SWEEP, GEOMETRY)]

    return RunOnFirstRead(run)


def _labels(hint: Hint) -> list[str]:
    """The labels a hint names: one, or several joined by " / " where two causes coincide on a shape."""
    return hint.label.split(" / ")


def _hit(bug_id: str, result: CheckResult) -> bool:
    return any(bugs.get(bug_id).hint in _labels(hint) for hint in result.diagnosis)


@pytest.mark.parametrize("bug_id", [bug.id for bug in CATALOGUE])
def test_every_exposing_layer_names_the_planted_bug(bug_id: str, catalogue_results) -> None:
    failed = [r for r in catalogue_results[bug_id] if r.status is Status.FAIL]
    assert failed, f"{bug_id} is exposed by no layer of the sweep"
    missed = {r.name: r.diagnosis for r in failed if not _hit(bug_id, r)}
    assert not missed, f"{bug_id}: expected hint {bugs.get(bug_id).hint!r}; got {missed}"


@pytest.mark.parametrize("bug_id", [bug.id for bug in CATALOGUE])
def test_the_planted_bug_gets_one_hint_and_it_is_a_known_label(bug_id: str, catalogue_results) -> None:
    """On the sweep each failing check gets exactly one hint (no second, competing story) from the vocabulary."""
    for result in catalogue_results[bug_id]:
        if result.status is not Status.FAIL:
            continue
        assert len(result.diagnosis) == 1, (result.name, result.diagnosis)
        for label in _labels(result.diagnosis[0]):
            assert label in LABELS


def test_catalogue_hint_keywords_are_labels() -> None:
    assert set(bugs.HINTS) <= set(LABELS)


def test_the_documented_hit_rate_is_the_measured_one(catalogue_results) -> None:
    every_bug = [(bug.id, catalogue_results[bug.id]) for bug in CATALOGUE]
    per_bug = [all(_hit(b, r) for r in rs if r.status is Status.FAIL) for b, rs in every_bug]
    layers = [_hit(b, r) for b, rs in every_bug for r in rs if r.status is Status.FAIL]
    text = DOC.read_text()
    assert f"{sum(per_bug)}/{len(per_bug)} planted bugs" in text
    assert f"{sum(layers)}/{len(layers)} failing checks" in text


def test_correct_layer_passes_the_sweep_and_gets_no_hint() -> None:
    for spec in (*SWEEP, *GEOMETRY):
        result = _check(spec)
        assert result.status is Status.PASS, result.name
        assert result.diagnosis == () and diagnose(result) == ()


@given(
    shape=geometries(max_size=8, max_stride=3, max_channels=3),
    activation=st.sampled_from(list(Activation)),
    dtype=st.sampled_from(list(DType)),
)
def test_no_hint_for_a_correct_layer_on_random_geometries(shape: ConvShape, activation: Activation, dtype: DType):
    spec = CheckSpec("random", shape, activation=activation, method=Method.FULL, dtype=dtype)
    result = _check(spec)
    assert diagnose(result) == ()


def test_a_caller_supplied_point_gets_no_hypothesis_hint() -> None:
    """Hypotheses rebuild the point from the seed; with other data they must stay silent, not guess."""
    spec = DEFAULT_SWEEP[0]
    d = make_data(spec)
    other = CheckData(d.x * 0.5, d.w, d.b, d.dout)
    s = spec.shape
    result = run_check(spec, layer=bugs.get("relu-mask-missing").make(s.stride, s.padding, spec.activation), data=other)
    assert result.status is Status.FAIL
    assert result.diagnosis == ()
    # transforms need no point: a row-order mistake in dw is still named
    layer = bugs.get("weights-row-order").make(s.stride, s.padding, spec.activation)
    assert any("row order" in _labels(h) for h in run_check(spec, layer=layer, data=other).diagnosis)


# ----------------------------------------------------------------------------------------------------
# Rules the catalogue does not exercise, proven with extra planted layers
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForwardTransposed(StepwiseLayer):
    """Returns the output with OH and OW swapped (square outputs), backward consistent with it."""

    def forward(self, x, w, b):
        out, cache = super().forward(x, w, b)
        return np.ascontiguousarray(out.swapaxes(1, 2)), cache

    def backward(self, dout, cache):
        return super().backward(np.ascontiguousarray(dout.swapaxes(1, 2)), cache)


@dataclass(frozen=True)
class ForwardNoActivation(StepwiseLayer):
    """Forgets to apply the activation in the forward pass."""

    def forward(self, x, w, b):
        return MatrixConvLayer(self.stride, self.padding, Activation.NONE).forward(x, w, b)


@dataclass(frozen=True)
class ForwardShifted(StepwiseLayer):
    """Output shifted down and right by one row and column (a window offset), zeros shifted in."""

    def forward(self, x, w, b):
        out, cache = super().forward(x, w, b)
        shifted = np.zeros_like(out)
        shifted[:, 1:, 1:] = out[:, :-1, :-1]
        return shifted, cache


@dataclass(frozen=True)
class WeightsFlipped(StepwiseLayer):
    """dw rotated 180° in (kh, kw)."""

    def weights_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        return np.ascontiguousarray(super().weights_grad(dz, cache)[::-1, ::-1])


@dataclass(frozen=True)
class WeightsKhKwSwapped(StepwiseLayer):
    """dw with kh and kw swapped."""

    def weights_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        return np.ascontiguousarray(super().weights_grad(dz, cache).swapaxes(0, 1))


@dataclass(frozen=True)
class InputNegated(StepwiseLayer):
    """dx with its sign flipped."""

    def fold(self, dcols: np.ndarray, cache: MatrixCache) -> np.ndarray:
        return -super().fold(dcols, cache)


@dataclass(frozen=True)
class BiasNeverWritten(StepwiseLayer):
    """db returned as zeros."""

    def bias_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        return np.zeros(dz.shape[1], dtype=dz.dtype)


@dataclass(frozen=True)
class SigmoidDerivativeAtZ(StepwiseLayer):
    """Sigmoid's derivative evaluated at the pre-activation: z·(1 − z) instead of a·(1 − a)."""

    def through_activation(self, da: np.ndarray, cache: MatrixCache) -> np.ndarray:
        z = cache.pre_activation
        return da * z * (1 - z)


def _spec(activation: Activation = Activation.RELU, **shape: int) -> CheckSpec:
    geometry = {"batch": 2, "in_height": 6, "in_width": 6, "in_depth": 2, "out_depth": 3, "filter_size": 3}
    geometry.update({"stride": 1, "padding": 1}, **shape)
    return CheckSpec("extra", ConvShape(**geometry), activation=activation, method=Method.FULL)


@pytest.mark.parametrize(
    ("layer", "spec", "label"),
    [
        (ForwardTransposed, _spec(), "transposed"),
        (ForwardNoActivation, _spec(), "forward activation"),
        (ForwardShifted, _spec(Activation.NONE), "shift"),
        (WeightsFlipped, _spec(), "flipped kernel"),
        (WeightsKhKwSwapped, _spec(), "transposed"),
        (InputNegated, _spec(), "sign"),
        (BiasNeverWritten, _spec(), "never written"),
        (SigmoidDerivativeAtZ, _spec(Activation.SIGMOID), "activation mask"),
    ],
)
def test_rules_beyond_the_catalogue(layer: type[MatrixConvLayer], spec: CheckSpec, label: str) -> None:
    result = _check(spec, layer)
    assert result.status is Status.FAIL
    assert [h.label for h in result.diagnosis] == [label], result.diagnosis


def test_evidence_is_quantitative() -> None:
    """Hints carry numbers a user can check: the factor, the batch size, which rows."""
    spec = DEFAULT_SWEEP[0]
    (scaled,) = _check(spec, bugs.get("grads-scaled-by-batch").layer).diagnosis
    assert "1/2 × numeric" in scaled.text and "1/N = 1/2" in scaled.text
    (mean,) = _check(spec, bugs.get("bias-grad-mean").layer).diagnosis
    assert "1/70" in mean.text  # N·OH·OW = 2·5·7
    (border,) = _check(spec, bugs.get("col2im-last-window-dropped").layer).diagnosis
    assert "rows 3–4 and columns 5–6" in border.text


def test_robust_beyond_the_sweep() -> None:
    """A seeded sample of random geometries, every activation: nearly every failing check names its bug.

    The few misses are tiny layers where two mistakes produce the same gradient (e.g. with one window along an
    axis, dropping the last window row zeroes dx exactly like never writing it); docs/diagnosis.md lists them.
    """
    rng = np.random.default_rng(20240611)
    activations = list(Activation)
    hits = total = 0
    for _ in range(30):
        shape = ConvShape(*(int(rng.integers(lo, hi)) for lo, hi in ((1, 4), (3, 10), (3, 10), (1, 4), (1, 4))),
                          filter_size=int(rng.integers(1, 5)), stride=int(rng.integers(1, 4)),
                          padding=int(rng.integers(0, 3)))  # fmt: skip
        if shape.problems():
            continue
        activation = activations[int(rng.integers(len(activations)))]
        spec = CheckSpec("r", shape, activation=activation, method=Method.FULL, seed=int(rng.integers(1000)))
        for bug in CATALOGUE:
            if bug.exposes(shape, activation):
                result = _check(spec, bug.layer)
                if result.status is Status.FAIL:
                    total += 1
                    hits += _hit(bug.id, result)
    assert total > 300
    assert hits / total >= 0.97, f"{hits}/{total}"


# ----------------------------------------------------------------------------------------------------
# Kinks: with the checker's per-entry verdict on the result, exact kinks do not confuse the rules
# ----------------------------------------------------------------------------------------------------


def test_integer_data_kinks_with_the_checkers_verdict() -> None:
    """Integer-valued data puts pre-activations exactly on ReLU's kink; there ``|analytic − numeric|`` exceeds
    ``allowed`` though the entry passed. With the checker's verdict per entry (``TensorResult.error``/``kink``)
    the hints and grids are exact."""
    spec = CheckSpec("int", ConvShape(2, 6, 7, 2, 3, 3, 1, 1), method=Method.FULL)
    rng = np.random.default_rng(0)
    s = spec.shape
    data = CheckData(*(rng.integers(-2, 3, size=shape).astype(float) for shape in
                       (s.x_shape, s.w_shape, s.b_shape, s.out_shape)))  # fmt: skip
    correct = run_check(spec, layer=MatrixConvLayer(1, 1, spec.activation), data=data)
    assert correct.passed and sum(g.kinks for g in correct.gradients) > 0
    assert not np.any(grids.input_grid(correct)) and not np.any(grids.weight_grids(correct))
    for bug_id in ("col2im-last-window-dropped", "weights-row-order", "grads-scaled-by-batch"):
        result = run_check(spec, layer=bugs.get(bug_id).make(1, 1, spec.activation), data=data)
        assert _hit(bug_id, result), (bug_id, result.diagnosis)


# ----------------------------------------------------------------------------------------------------
# Contract rules read the contract's findings by kind (and dx's shape from the finding), never their text
# ----------------------------------------------------------------------------------------------------


def _contract_result(padding: int, *findings: Finding) -> CheckResult:
    spec = CheckSpec("contract", ConvShape(2, 6, 7, 2, 3, 3, 1, padding), method=Method.FULL)
    return CheckResult("contract", Status.FAIL, spec, 0.0, contract=findings)


def _dx_shape(*shape: int) -> Finding:
    return Finding(FindingKind.SHAPE, "(the contract's sentence)", "dx", shape)


@pytest.mark.parametrize(
    ("padding", "shape", "why"),
    [
        (
            0,
            (2, 0, 0, 2),
            "the crop dpad[:, p:-p, p:-p] keeps nothing when p = 0 (0:-0 is an empty slice); crop only if p > 0",
        ),
        (1, (2, 8, 9, 2), "that is the padded size H + 2p: the padding (p = 1) is never cropped"),
        (1, (2, 4, 5, 2), "that is H − 2p: the padding (p = 1) is cropped from a gradient that has none"),
    ],
)
def test_a_dx_shape_a_padding_crop_produces_is_named(padding: int, shape: tuple[int, ...], why: str) -> None:
    rows, cols = shape[1], shape[2]
    (hint,) = diagnose(_contract_result(padding, _dx_shape(*shape)))
    assert str(hint) == f"padding: dx has {rows}×{cols} positions for a 6×7 input: {why}"


def test_only_a_shape_finding_about_dx_with_a_crop_size_names_the_crop() -> None:
    dw_shape = Finding(FindingKind.SHAPE, "dw has shape (2, 0, 0, 2)", "dw", (2, 0, 0, 2))
    other_kind = Finding(FindingKind.OTHER, "dx has shape (2, 0, 0, 2); the contract wants (2, 6, 7, 2)", "dx")
    for finding in (dw_shape, other_kind, _dx_shape(2, 5, 7, 2), _dx_shape(2, 0, 0)):
        assert diagnose(_contract_result(0, finding)) == (), finding


@pytest.mark.parametrize(
    ("kind", "sentence"),
    [
        (
            FindingKind.REPEAT_ACCUMULATES,
            "a second backward call returned twice the first gradient: it is accumulated (+=) into a buffer "
            "nothing zeroes; allocate the gradient fresh in every call",
        ),
        *(
            (
                kind,
                "backward returns other gradients when called again: it modifies its cache or keeps state "
                "outside it (see the contract problem)",
            )
            for kind in (FindingKind.REPEAT_DIFFERS, FindingKind.STATE_OUTSIDE_CACHE, FindingKind.REPEAT_FAILED)
        ),
    ],
)
def test_a_repeated_call_that_differs_is_a_repeatability_hint(kind: FindingKind, sentence: str) -> None:
    (hint,) = diagnose(_contract_result(1, Finding(FindingKind.NOT_FINITE, "dx has NaN", "dx"), Finding(kind, "…")))
    assert hint == Hint("repeatability", sentence)


def test_other_contract_findings_get_no_contract_hint() -> None:
    kinds = set(FindingKind) - {
        FindingKind.REPEAT_ACCUMULATES,
        FindingKind.REPEAT_DIFFERS,
        FindingKind.STATE_OUTSIDE_CACHE,
        FindingKind.REPEAT_FAILED,
    }
    findings = [Finding(kind, "a second backward call returned twice the first", "dx") for kind in kinds]
    assert diagnose(_contract_result(0, *findings)) == ()
