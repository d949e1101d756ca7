"""Trusted both ways: no false alarm on any correct layer (issue 5's space), and the Python API for pytest users."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import wide_geometries

import convcheck
from convcheck.checker import run_check
from convcheck.data import integer_data
from convcheck.spec import Activation, CheckSpec, DType, Method

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@st.composite
def correct_layers(draw):
    shape = draw(wide_geometries())
    activation = draw(st.sampled_from([Activation.RELU, Activation.NONE]))
    dtype = draw(st.sampled_from([DType.FLOAT64, DType.FLOAT32]))
    spec = CheckSpec(
        "property", shape, activation=activation, dtype=dtype, method=Method.FULL, seed=draw(st.integers(0, 99))
    )
    return spec, draw(st.booleans())


@settings(max_examples=120)
@given(correct_layers())
def test_no_false_alarm_on_any_correct_layer(case):
    spec, integer = case
    result = run_check(spec, data=integer_data(spec) if integer else None)
    assert result.passed, (spec, [(g.name, g.worst[:1]) for g in result.gradients], result.error, result.contract)


def _example_functions():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import im2col_nhwc
    finally:
        sys.path.remove(str(EXAMPLES))
    return im2col_nhwc.forward, im2col_nhwc.backward


def test_python_api_passes_a_correct_user_layer():
    forward, backward = _example_functions()
    result = convcheck.assert_gradients_ok(forward, backward, filter_size=3, stride=2, padding=1)
    assert result.passed and all(g.checked == g.total for g in result.gradients)


def test_python_api_assertion_carries_the_table():
    forward, _ = _example_functions()

    def backward_scaled(dout, cache):  # a realistic bug: gradients averaged over the batch
        from im2col_nhwc import backward

        dx, dw, db = backward(dout, cache)
        return dx / dout.shape[0], dw / dout.shape[0], db

    sys.path.insert(0, str(EXAMPLES))
    try:
        with pytest.raises(AssertionError) as caught:
            convcheck.assert_gradients_ok(forward, backward_scaled, filter_size=3, padding=1)
    finally:
        sys.path.remove(str(EXAMPLES))
    text = str(caught.value)
    assert "input gradient" in text and "weights gradient" in text and "✗" in text


def test_activation_mismatch_between_layer_and_config_gets_a_hint():
    forward, backward = _example_functions()  # a ReLU layer
    result = convcheck.check(forward, backward, activation="none", filter_size=3, padding=1)
    assert not result.passed and not result.forward.ok
    assert any("set `activation: relu`" in hint.text for hint in result.diagnosis), result.diagnosis


def test_an_object_dtype_gradient_is_a_contract_problem_not_a_crash():
    forward, backward = _example_functions()

    def backward_object(dout, cache):
        dx, dw, db = backward(dout, cache)
        return dx.astype(object), dw, db

    result = convcheck.check(forward, backward_object, filter_size=3, padding=1)
    assert result.error is None
    assert any("dx has dtype object" in str(problem) for problem in result.contract), result.contract
