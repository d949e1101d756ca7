"""Trusted both ways: no false alarm on any correct layer (the seed's 2-D space, and the whole N-d space), and the
Python API for pytest users."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from strategies import nd_geometries, wide_geometries

import convcheck
from convcheck.checker import run_check
from convcheck.data import integer_data
from convcheck.spec import Activation, CheckSpec, ConvShape, DType, Method

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


#: The whole space's false-alarm sweep: hypothesis examples of ``test_no_false_alarm_on_the_whole_space``.
WHOLE_SPACE_EXAMPLES = 200
TORCH_STYLE = ConvShape.nd(2, (7, 9), 4, 8, (3, 5), (2, 1), "same", 2, 4, False)
DEPTHWISE_1D = ConvShape.nd(2, (11,), 3, 3, 4, 2, "same", 1, 3)
THREE_D = ConvShape.nd(1, (4, 5, 6), 2, 4, (2, 3, 2), (1, 2, 1), ((1, 0), (0, 1), (1, 1)), (1, 1, 2), 2)


@settings(max_examples=WHOLE_SPACE_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=nd_geometries(),
    activation=st.sampled_from(list(Activation)),
    dtype=st.sampled_from(list(DType)),
    seed=st.integers(0, 99),
    integer=st.booleans(),
)
@example(shape=TORCH_STYLE, activation=Activation.RELU, dtype=DType.FLOAT32, seed=0, integer=True)
@example(shape=DEPTHWISE_1D, activation=Activation.RELU, dtype=DType.FLOAT64, seed=1, integer=True)
@example(shape=THREE_D, activation=Activation.LEAKY_RELU, dtype=DType.FLOAT32, seed=2, integer=True)
def test_no_false_alarm_on_the_whole_space(shape, activation, dtype, seed, integer):
    """Every hyperparameter at once (1-3 axes; per-axis kernels 1..3, strides 1..3, dilations 1..2; padding per
    side 0..2, ``same`` or ``valid``; groups 1..3 with 1..2 channels each; with and without a bias), every
    activation, float64 and float32, and half the time integer-valued data with zero bias, where many
    pre-activations sit exactly on ReLU's kink: the built-in layer passes, and gets no hint."""
    spec = CheckSpec("whole space", shape, activation=activation, dtype=dtype, method=Method.FULL, seed=seed)
    result = run_check(spec, data=integer_data(spec) if integer else None)
    assert result.passed, (shape.describe(), [(g.name, g.worst[:1]) for g in result.gradients], result.error)
    assert result.diagnosis == ()


def test_integer_data_puts_the_whole_space_on_relu_kinks():
    """The kinks the property test means are there: integer data on a grouped, dilated, `same` layer without a
    bias has gradient entries whose differences straddle a kink, and the check still passes."""
    spec = CheckSpec("kinks", TORCH_STYLE, Activation.RELU, Method.FULL, DType.FLOAT32)
    result = run_check(spec, data=integer_data(spec))
    assert result.passed and sum(g.kinks for g in result.gradients) > 0


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
