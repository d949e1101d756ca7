"""Warnings, strict checks and layers that refuse geometries by design."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convcheck.checker import run_check
from convcheck.cli import app
from convcheck.config import load_text
from convcheck.exitcodes import ExitCode
from convcheck.layer import MatrixConvLayer
from convcheck.results import Finding, FindingKind, Severity, Status
from convcheck.spec import CheckSpec, ConvShape, ExpectedError, ImplRef

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SHAPE = ConvShape(2, 5, 6, 2, 3, 3, 1, 1)


class ScribblesOnDout(MatrixConvLayer):
    """Right gradients, but backward zeroes the caller's dout afterwards (an in-place ``dout *= 0``)."""

    def backward(self, dout, cache):
        grads = super().backward(dout, cache)
        dout *= 0
        return grads


def test_only_a_modified_dout_is_a_warning():
    assert Finding(FindingKind.MODIFIED_ARGUMENT, "…", tensor="dout").severity is Severity.WARNING
    for kind in FindingKind:
        for tensor in ("x", "w", "b", "dx", None):
            assert Finding(kind, "…", tensor=tensor).severity is Severity.ERROR


def test_a_backward_that_modifies_dout_passes_with_a_warning_and_fails_when_strict():
    layer = ScribblesOnDout(1, 1)
    relaxed = run_check(CheckSpec(name="t", shape=SHAPE), layer=layer)
    assert relaxed.status is Status.PASS
    assert [f.tensor for f in relaxed.warnings] == ["dout"] and relaxed.violations == ()
    strict = run_check(CheckSpec(name="t", shape=SHAPE, strict=True), layer=layer)
    assert strict.status is Status.FAIL


def spec_for(impl: Path, stride: int, expected: ExpectedError | None) -> CheckSpec:
    shape = ConvShape(2, 7, 7, 2, 3, 3, stride, 0)
    return CheckSpec(name="t", shape=shape, impl=ImplRef(module=str(impl)), expected_error=expected)


@pytest.mark.parametrize(
    "expected",
    [ExpectedError(type="ValueError"), ExpectedError(type="Exception"), ExpectedError(match="does not divide")],
)
def test_an_expected_refusal_is_skipped_and_the_other_geometries_are_checked(expected: ExpectedError):
    layer = EXAMPLES / "strict_stride.py"
    assert run_check(spec_for(layer, 3, expected)).status is Status.SKIPPED
    assert run_check(spec_for(layer, 2, expected)).status is Status.PASS


@pytest.mark.parametrize(
    "expected",
    [None, ExpectedError(type="TypeError"), ExpectedError(type="ValueError", match="must be odd")],
)
def test_an_unexpected_error_is_still_an_error(expected: ExpectedError | None):
    assert run_check(spec_for(EXAMPLES / "strict_stride.py", 3, expected)).status is Status.ERROR


BASE = "batch: 1\nin_height: 5\nin_width: 5\nin_depth: 1\nout_depth: 1\nfilter_size: 3\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("expected_error: ValueError", ExpectedError(type="ValueError")),
        ("expected_error: {match: 'does not divide'}", ExpectedError(match="does not divide")),
        ("expected_error: {type: AssertionError, match: '^stride'}", ExpectedError("AssertionError", "^stride")),
    ],
)
def test_expected_error_forms(text: str, expected: ExpectedError):
    (spec,) = load_text(BASE + text, "c.yaml").specs
    assert spec.expected_error == expected


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("expected_error: 'not a name'", "expected_error"),
        ("expected_error: {match: '(unclosed'}", "expected_error.match"),
        ("expected_error: {kind: ValueError}", "expected_error.kind"),
        ("expected_error: {}", "expected_error"),
        ("strict: 1", "strict"),
    ],
)
def test_bad_expected_error_and_strict_values_are_config_errors(text: str, field: str):
    loaded = load_text(BASE + text, "c.yaml")
    assert [error.field for error in loaded.errors] == [field], [str(error) for error in loaded.errors]


def test_strict_on_the_command_line_turns_a_warning_into_a_failure(tmp_path: Path):
    layer = tmp_path / "scribbles.py"
    layer.write_text(
        (EXAMPLES / "im2col_nhwc.py").read_text() + "\n\n_plain_backward = backward\n\n\ndef backward(dout, cache):\n"
        "    grads = _plain_backward(dout, cache)\n    dout[...] = 0\n    return grads\n"
    )
    config = tmp_path / "c.yaml"
    config.write_text(BASE + "padding: 1\nimpl: scribbles.py\n")
    runner = CliRunner()
    relaxed = runner.invoke(app, ["run", str(config), "--json", str(tmp_path / "a.json")])
    assert relaxed.exit_code == ExitCode.OK, relaxed.output
    summary = json.loads((tmp_path / "a.json").read_text())["summary"]
    assert (summary["passed"], summary["warnings"]) == (1, 1)
    strict = runner.invoke(app, ["run", str(config), "--strict"])
    assert strict.exit_code == ExitCode.FAILED, strict.output


def test_an_expected_refusal_from_a_layer_in_its_own_process_is_skipped_by_a_base_class():
    from convcheck.isolation.check import isolated_check

    spec = spec_for(EXAMPLES / "strict_stride.py", 3, ExpectedError(type="Exception", match="does not divide"))
    assert isolated_check(spec).status is Status.SKIPPED
    assert isolated_check(spec_for(EXAMPLES / "strict_stride.py", 3, ExpectedError(type="KeyError"))).status is (
        Status.ERROR
    )
