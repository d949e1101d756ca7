"""Hints for the bugs people really make, proven on realistic layers (``tests/realbugs.py``): every failing check
of a buggy layer carries its class's label, a correct layer in the same style passes with no hint, and the
shape, dtype and batch rules name exactly the findings they are built for. docs/diagnosis.md quotes the hint
rate this file measures (``benchmarks/hint_rate.py`` prints the same numbers)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import realbugs
from firstread import RunOnFirstRead
from hypothesis import given, settings
from hypothesis import strategies as st

from convcheck.api import explain
from convcheck.batch.outcome import error_result
from convcheck.checker import run_check
from convcheck.diagnosis import LABELS, diagnose
from convcheck.diagnosis.batch import crash_hint, with_batch_hints
from convcheck.render.base import Run
from convcheck.render.json import render as render_json
from convcheck.results import CheckResult, Finding, FindingKind, Status
from convcheck.spec import Activation, CheckSpec, ConvShape, DType, ImplRef, Layout, Method

DOC = Path(__file__).resolve().parent.parent / "docs" / "diagnosis.md"


@pytest.fixture(scope="module")
def results() -> RunOnFirstRead[str, tuple[CheckResult, ...]]:
    """Each realistic layer's checks on its geometries, one batch per entry (about 130 small checks in all, half a
    minute), by entry id; an entry runs when a test first reads it (the documented-rate test reads them all)."""
    return RunOnFirstRead(lambda layer_id: realbugs.run(realbugs.get(layer_id)))


@pytest.mark.parametrize("entry", realbugs.CATALOGUE, ids=lambda e: e.id)
def test_every_failing_check_of_a_real_bug_names_its_class(entry: realbugs.RealLayer, results) -> None:
    failing = [r for r in results[entry.id] if r.status is not Status.PASS]
    assert failing, f"{entry.id} fails on none of its geometries"
    missed = {r.name: [str(h) for h in r.diagnosis] for r in failing if not realbugs.hit(entry, r)}
    assert not missed, missed


@pytest.mark.parametrize("entry", realbugs.CATALOGUE, ids=lambda e: e.id)
def test_a_passing_check_of_a_buggy_layer_gets_no_hint(entry: realbugs.RealLayer, results) -> None:
    assert all(r.diagnosis == () for r in results[entry.id] if r.status is Status.PASS)


@pytest.mark.parametrize("entry", realbugs.GOOD, ids=lambda e: e.id)
def test_correct_realistic_layers_pass_with_no_hint(entry: realbugs.RealLayer, results) -> None:
    for result in results[entry.id]:
        assert result.status is Status.PASS, (result.name, result.error, result.contract)
        assert result.diagnosis == ()


def test_every_expected_label_is_in_the_vocabulary() -> None:
    assert {e.label for e in realbugs.CATALOGUE} | {realbugs.CRASH_LABEL} <= set(LABELS)


def test_the_documented_hint_rate_is_the_measured_one(results) -> None:
    failing = [(e, r) for e in realbugs.CATALOGUE for r in results[e.id] if r.status is not Status.PASS]
    hits = sum(realbugs.hit(e, r) for e, r in failing)
    assert f"{hits}/{len(failing)} failing checks of the realistic layers" in DOC.read_text()
    assert hits / len(failing) >= 0.9


@settings(max_examples=12)
@given(
    entry=st.sampled_from(realbugs.GOOD),
    n=st.integers(1, 2),
    h=st.integers(3, 7),
    w=st.integers(3, 7),
    c_in=st.integers(1, 3),
    c_out=st.integers(1, 3),
    k=st.integers(1, 3),
    s=st.integers(1, 3),
    p=st.integers(0, 2),
    dtype=st.sampled_from(list(DType)),
)
def test_no_hint_on_correct_realistic_layers_across_geometries(entry, n, h, w, c_in, c_out, k, s, p, dtype) -> None:
    geo = realbugs.Geometry(n, h, w, c_in, c_out, k, s, p, dtype)
    if geo.shape.problems():
        return
    (spec,) = realbugs.RealLayer(entry.id, entry.file, "", (geo,), entry.cs231n, entry.layout).specs()
    result = run_check(spec.with_overrides(method=Method.FULL))
    assert result.status is Status.PASS, (result.name, result.error, result.contract)
    assert result.diagnosis == () and with_batch_hints([result]) == (result,)


def test_a_window_placement_the_point_cannot_tell_apart_gets_no_hint() -> None:
    """k = 1, one output row: the swapped indices read windows past the input, which sum to 0 as they would
    with the stride applied twice, so no placement is named (it once was, wrongly: "s² apart")."""
    entry = realbugs.get("swapped-window")
    (spec,) = dataclasses.replace(entry, geometries=(realbugs.g(3, 3, 8, 1, 4, 1, 3, 0),)).specs()
    result = run_check(spec)
    assert result.status is Status.FAIL and result.diagnosis == ()


# -- the contract rules on their findings ------------------------------------------------------------------------


def _result(shape: ConvShape, *findings: Finding, layout: Layout = Layout.NHWC, **spec: object) -> CheckResult:
    check = CheckSpec("contract", shape, method=Method.FULL, layout=layout, **spec)  # type: ignore[arg-type]
    return CheckResult("contract", Status.FAIL, check, 0.0, contract=findings)


def _shape(tensor: str, *dims: int) -> Finding:
    return Finding(FindingKind.SHAPE, "(the contract's sentence)", tensor, dims)


SHAPE = ConvShape(2, 9, 6, 2, 3, 3, 2, 1)  # H + 2p − k = 8 and 5: OH = 5, OW = 3


@pytest.mark.parametrize(
    ("dims", "words"),
    [
        ((2, 4, 2, 3), "without the + 1"),
        ((2, 4, 3, 3), "the padding counted once"),
        ((2, 9, 6, 3), "without the stride"),
        ((2, 5, 4, 3), "rounded up"),
        ((2, 5, 5, 3), "OW = 5 is computed from H"),
        ((2, 3, 3, 3), "OH = 3 is computed from W"),
        ((2, 3, 5, 3), "swapped"),
    ],
)
def test_an_output_size_formula_is_named(dims: tuple[int, ...], words: str) -> None:
    (hint,) = diagnose(_result(SHAPE, _shape("out", *dims)))
    assert hint.label == "output size" and words in hint.text


def test_right_positions_with_wrong_channels_name_no_size_formula() -> None:
    stride_one = ConvShape(2, 6, 6, 3, 4, 3, 1, 1)  # at stride 1 "without the stride" is the right size
    hints = diagnose(_result(stride_one, _shape("out", 2, 6, 6, 1)))
    assert all(hint.label != "output size" for hint in hints)


def test_shapes_are_read_in_the_users_layout() -> None:
    nchw = ConvShape(2, 5, 6, 2, 3, 3, 1, 0)
    (crop,) = diagnose(_result(nchw, _shape("dx", 2, 2, 0, 0), layout=Layout.NCHW))
    assert crop.label == "padding" and "0×0" in crop.text
    (fixed,) = diagnose(_result(nchw, _shape("dx", 2, 2, 3, 4), layout=Layout.NCHW))
    assert fixed.label == "padding" and "removes 1 on each side" in fixed.text
    (dw,) = diagnose(_result(nchw, _shape("dw", 3, 3, 2, 3), layout=Layout.NCHW))  # C_out = k: ambiguous
    assert dw.label == "layout" and "w's axes in (kh, kw, C_in, C_out) order" in dw.text
    assert "dw.transpose(3, 2, 0, 1)" in dw.text


def test_dx_rebuilt_from_the_output_size_is_named_only_when_it_is_short() -> None:
    (hint,) = diagnose(_result(SHAPE, _shape("dx", 2, 9, 5, 2)))  # (OW − 1)·2 + 3 − 2 = 5 columns, H rows
    assert hint.label == "input size" and "W + 2p − k = 5" in hint.text and "H + 2p" not in hint.text
    assert diagnose(_result(SHAPE, _shape("dx", 2, 8, 5, 2))) == ()


@pytest.mark.parametrize("dims", [(3, 1), (1, 3), (1, 3, 1, 1)])
def test_a_bias_gradient_with_an_extra_axis_is_named(dims: tuple[int, ...]) -> None:
    (hint,) = diagnose(_result(SHAPE, _shape("db", *dims)))
    assert hint.label == "bias shape" and hint.explains == ("bias",)
    assert diagnose(_result(SHAPE, _shape("db", 2, 3))) == ()  # not the bias entries in another shape


def _dtype(tensor: str, dtype: str, kind: FindingKind = FindingKind.DTYPE) -> Finding:
    return Finding(kind, "(the contract's sentence)", tensor, dtype=dtype)


def test_float64_buffers_in_a_float32_layer_are_named_by_array() -> None:
    f32 = {"dtype": DType.FLOAT32, "activation": Activation.NONE}
    (hint,) = diagnose(_result(SHAPE, _dtype("out", "float64"), _dtype("dx", "float64"), **f32))
    assert hint.label == "dtype" and hint.text.startswith("out and dx are float64")
    grads = [_dtype(t, "float64") for t in ("dx", "dw", "db")]
    (hint,) = diagnose(_result(SHAPE, *grads, dtype=DType.FLOAT32, activation=Activation.RELU))
    assert hint.label == "integer mask"
    (hint,) = diagnose(_result(SHAPE, *grads, **f32))  # no mask without an activation
    assert hint.label == "dtype"
    narrower = _dtype("dx", "float32", FindingKind.LOWER_PRECISION)
    assert diagnose(_result(SHAPE, narrower)) == ()
    assert diagnose(_result(SHAPE, _dtype("dx", "int64"))) == ()


# -- the batch-level crash hint ------------------------------------------------------------------------------------


def _ran_or_crashed(shape: ConvShape, crashed: bool) -> CheckResult:
    spec = CheckSpec(str(shape), shape)
    if crashed:
        return error_result(spec, 0.0, "the implementation's forward raised AssertionError")
    return CheckResult(spec.name, Status.PASS, spec, 0.0)


def test_the_crash_hint_names_the_condition_that_separates_the_crashes() -> None:
    shapes = [ConvShape(1, h, 7, 1, 1, 3, 2, 0) for h in (5, 6, 7, 8)]  # H − 3 = 2, 3, 4, 5
    results = [_ran_or_crashed(s, crashed=(s.in_height - 3) % 2 == 1) for s in shapes]
    hint = crash_hint(results)
    assert hint is not None and hint.label == "unsupported geometry" and "not a multiple of the stride" in hint.text
    marked = with_batch_hints(results)
    assert [hint in r.diagnosis for r in marked] == [r.status is Status.ERROR for r in results]


def test_the_crash_hint_compares_one_layers_checks_only() -> None:
    shapes = [ConvShape(1, h, 7, 1, 1, 3, 2, 0) for h in (5, 6, 7, 8)]
    refusing = [_ran_or_crashed(s, crashed=(s.in_height - 3) % 2 == 1) for s in shapes]
    other = ImplRef("other_layer.py")
    # another layer that runs everywhere: without grouping its checks would contradict nothing, but a third
    # layer crashing on every check must neither get a hint nor spoil the first layer's
    crashing = [dataclasses.replace(r, spec=r.spec.with_overrides(impl=other)) for r in map(_crashed, shapes)]
    marked = with_batch_hints([*refusing, *crashing])
    assert all(r.diagnosis for r in marked[:4] if r.status is Status.ERROR)
    assert all(r.diagnosis == () for r in marked[4:])


def _crashed(shape: ConvShape) -> CheckResult:
    return _ran_or_crashed(shape, crashed=True)


def test_a_real_bugs_hint_is_in_the_panel_and_the_json(results) -> None:
    result = next(r for r in results["bias-column"] if r.status is Status.FAIL)
    crashed = next(r for r in results["refuses-stride"] if r.status is Status.ERROR)
    document = json.loads(render_json([result, crashed], Run(version="test")))
    for shown, r in zip(document["checks"], (result, crashed), strict=True):
        assert shown["diagnosis"] == [str(h) for h in r.diagnosis] != []
        assert f"hint: {r.diagnosis[0]}" in " ".join(explain(r, width=400).split())


def test_no_crash_hint_without_a_separating_condition() -> None:
    a, b = ConvShape(1, 5, 5, 1, 1, 3, 1, 0), ConvShape(1, 6, 6, 1, 1, 3, 1, 0)
    assert crash_hint([_ran_or_crashed(a, True), _ran_or_crashed(b, False), _ran_or_crashed(a, False)]) is None
    assert crash_hint([_ran_or_crashed(a, True), _ran_or_crashed(b, True)]) is None  # nothing ran
    assert crash_hint([_ran_or_crashed(a, False)]) is None
