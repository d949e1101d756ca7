"""Forward mistakes are named on the whole N-d space, not only on the textbook 2-D geometry.

Each mistake is a layer written the way people get it wrong (a true convolution, the filter read in
``(c_in, *k)`` order, C_in and C_out swapped, the bias or the activation left out, the padding put on the wrong
side), on random geometries of every hyperparameter (``strategies.nd_geometries``: 1-3 axes, per-axis kernels,
strides and dilations, per-side, ``same`` and ``valid`` padding, groups, with and without a bias) and in float64
and float32. Where the mistake changes the output (computed here, against the direct convolution) the check
fails its forward and the first hint names the mistake — or a mistake the rule tries first that gives the
identical output on that layer; where it does not, the check passes with no hint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from strategies import nd_geometries

from convcheck import reference
from convcheck.bugs.stepwise import StepwiseLayer
from convcheck.checker import run_check
from convcheck.data import make_data
from convcheck.diagnosis.forward import _shifts, _weight_candidates
from convcheck.geometry import PaddingMode, Window
from convcheck.layer import MatrixCache
from convcheck.results import Status
from convcheck.spec import Activation, CheckSpec, ConvShape, DType, Method

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONV1D = ConvShape.nd(2, (9,), 3, 4, 3, 1, 1)
CONV3D = ConvShape.nd(1, (4, 5, 5), 2, 3, (2, 3, 3), (1, 2, 1), ((1, 1), (1, 1), (1, 1)))
GROUPED_NO_BIAS = ConvShape.nd(2, (6, 7), 4, 6, (3, 2), 1, "same", 1, 2, False)


def _weights(label: str) -> Callable[[np.ndarray], np.ndarray]:
    """The weights as the forward rule's candidate ``label`` reads them (the rule's own reading: the mistake
    the layer below makes is written out independently in ``WEIGHT_MISTAKES``)."""
    return lambda w: dict((name, changed) for name, _, changed in _weight_candidates(w))[label]


#: How the mistaken layers read ``w: (*k, C_in/g, C_out)``, written out per mistake.
WEIGHT_MISTAKES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    # a true convolution: every spatial axis reversed
    "flipped kernel": lambda w: w[tuple(slice(None, None, -1) for _ in w.shape[:-2])],
    # each filter stored (c_in, *k) and viewed as (*k, c_in) without moving the axis
    "row order": lambda w: np.transpose(
        w.reshape(w.shape[-2], *w.shape[:-2], w.shape[-1]), (*range(1, w.ndim - 1), 0, w.ndim - 1)
    ),
    # (*k, C_out, C_in) memory read as (*k, C_in, C_out)
    "channel order": lambda w: np.swapaxes(w, -1, -2).reshape(w.shape),
}


@dataclass(frozen=True)
class ReadsWeights(StepwiseLayer):
    """Computes its forward with the weights read by ``WEIGHT_MISTAKES[mistake]``; backward as the textbook's."""

    mistake: str = "flipped kernel"

    def forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, MatrixCache]:
        return super().forward(x, np.ascontiguousarray(WEIGHT_MISTAKES[self.mistake](w)), b)


@dataclass(frozen=True)
class NoBias(StepwiseLayer):
    """Forgets ``+ b`` in the forward."""

    def forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, MatrixCache]:
        return super().forward(x, w, None if b is None else np.zeros_like(b))


@dataclass(frozen=True)
class PreActivation(StepwiseLayer):
    """Returns the pre-activation: the activation is never applied in the forward."""

    def forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, MatrixCache]:
        out, cache = super().forward(x, w, b)
        return cache.pre_activation.reshape(out.shape).copy(), cache


def _layer(shape: ConvShape, activation: Activation, cls: type[StepwiseLayer], **fields: object) -> StepwiseLayer:
    """``cls`` bound to ``shape``'s geometry, with its own ``fields``."""
    return dataclasses.replace(cls.stepwise_for(shape, activation), **fields)


def _check(shape: ConvShape, activation: Activation, dtype: DType, layer: StepwiseLayer):
    spec = CheckSpec("nd-forward", shape, activation, Method.FULL, dtype)
    return spec, run_check(spec, layer=layer)


def _reference(spec: CheckSpec, w: np.ndarray | None = None, b=None, activation=None, window=None) -> np.ndarray:
    data = make_data(spec)
    x, w0, b0 = (np.asarray(a, dtype=np.float64) for a in (data.x, data.w, data.b))
    return reference.forward(
        x,
        w0 if w is None else np.ascontiguousarray(w(w0)),
        b0 if b is None else b,
        spec.shape.window if window is None else window,
        spec.activation if activation is None else activation,
    )


def _assert_named(result, label: str, same_output: Callable[[str], bool]) -> None:
    """Failed in the forward, and its first hint is ``label`` or one that gives the same output here."""
    assert result.status is Status.FAIL, (result.spec.shape.describe(), result.error)
    assert result.forward is not None and not result.forward.ok
    first = result.diagnosis[0] if result.diagnosis else None
    assert first is not None and "forward" in first.explains, [str(h) for h in result.diagnosis]
    assert first.label == label or same_output(first.label), (result.spec.shape.describe(), str(first))


@SETTINGS
@pytest.mark.parametrize("mistake", WEIGHT_MISTAKES)
@given(shape=nd_geometries(max_size=6), dtype=st.sampled_from(list(DType)))
@example(shape=CONV1D, dtype=DType.FLOAT64)
@example(shape=CONV3D, dtype=DType.FLOAT32)
@example(shape=GROUPED_NO_BIAS, dtype=DType.FLOAT32)
def test_a_forward_reading_the_weights_wrong_is_named(mistake: str, shape: ConvShape, dtype: DType) -> None:
    spec, result = _check(shape, Activation.NONE, dtype, _layer(shape, Activation.NONE, ReadsWeights, mistake=mistake))
    wrong = _reference(spec, w=WEIGHT_MISTAKES[mistake])
    if np.allclose(wrong, _reference(spec), rtol=1e-12, atol=1e-12):
        assert result.status is Status.PASS and result.diagnosis == (), [str(h) for h in result.diagnosis]
        return
    candidates = list(WEIGHT_MISTAKES)
    _assert_named(
        result,
        mistake,
        lambda other: (
            other in candidates[: candidates.index(mistake)]
            and np.allclose(_reference(spec, w=_weights(other)), wrong, rtol=1e-12, atol=1e-12)
        ),
    )


@SETTINGS
@given(shape=nd_geometries(max_size=6), dtype=st.sampled_from(list(DType)))
@example(shape=CONV1D, dtype=DType.FLOAT32)
@example(shape=CONV3D, dtype=DType.FLOAT64)
def test_a_forward_without_the_bias_is_named(shape: ConvShape, dtype: DType) -> None:
    spec, result = _check(shape, Activation.TANH, dtype, _layer(shape, Activation.TANH, NoBias))
    if not shape.bias:
        assert result.status is Status.PASS and result.diagnosis == ()
        return
    _assert_named(result, "forward bias", lambda other: False)
    assert "does not add + b" in str(result.diagnosis[0])


@SETTINGS
@pytest.mark.parametrize("activation", [Activation.RELU, Activation.TANH, Activation.LEAKY_RELU])
@given(shape=nd_geometries(max_size=6), dtype=st.sampled_from(list(DType)))
@example(shape=CONV1D, dtype=DType.FLOAT32)
@example(shape=GROUPED_NO_BIAS, dtype=DType.FLOAT64)
def test_a_forward_without_its_activation_is_named(activation: Activation, shape: ConvShape, dtype: DType) -> None:
    spec, result = _check(shape, activation, dtype, _layer(shape, activation, PreActivation))
    if np.allclose(_reference(spec, activation=Activation.NONE), _reference(spec), rtol=1e-12, atol=1e-12):
        assert result.status is Status.PASS  # every pre-activation positive: the same function at this point
        return
    _assert_named(result, "forward activation", lambda other: False)


def _padded_on_the_wrong_side(shape: ConvShape, axis: int) -> Window | None:
    """``shape``'s window with one row of padding moved from after to before along ``axis`` (None when there
    is none after, or the padding is ``same``/``valid``): at stride 1 along that axis the layer's output is the
    reference's shifted by one position there."""
    if shape.padding_mode is not PaddingMode.EXPLICIT or shape.strides[axis] != 1:
        return None
    pads = list(shape.pads)
    before, after = pads[axis]
    if after == 0:
        return None
    pads[axis] = (before + 1, after - 1)
    return Window.of(shape.dims, shape.strides, tuple(pads), shape.dilations, shape.groups)


@st.composite
def padded_after(draw) -> tuple[ConvShape, int]:
    """A layer of 1-3 axes (per-axis kernel, stride, dilation, explicit per-side padding, groups, with or without a
    bias) and an axis with stride 1, padding after it and at least 3 outputs along it (a shift is named where
    at least two positions overlap)."""
    dims = draw(st.integers(1, 3))
    axis = draw(st.integers(0, dims - 1))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    dilations = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    strides = tuple(1 if a == axis else draw(st.integers(1, 2)) for a in range(dims))
    pads = tuple((draw(st.integers(0, 2)), draw(st.integers(1 if a == axis else 0, 2))) for a in range(dims))
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilations, strict=True)]
    sizes = tuple(
        draw(st.integers(max(1, span - sum(pad) + (2 if a == axis else 0)), span + 4))
        for a, (span, pad) in enumerate(zip(spans, pads, strict=True))
    )
    groups = draw(st.integers(1, 2))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    bias = draw(st.booleans())
    shape = ConvShape.nd(draw(st.integers(1, 2)), sizes, c_in, c_out, kernel, strides, pads, dilations, groups, bias)
    assert shape.spatial_out[axis] >= 3 and not shape.problems()
    return shape, axis


@SETTINGS
@given(layer=padded_after(), dtype=st.sampled_from(list(DType)))
@example(layer=(CONV1D, 0), dtype=DType.FLOAT64)
@example(layer=(CONV3D, 2), dtype=DType.FLOAT32)
def test_a_forward_padded_on_the_wrong_side_is_a_shift(layer: tuple[ConvShape, int], dtype: DType) -> None:
    shape, axis = layer
    window = _padded_on_the_wrong_side(shape, axis)
    assert window is not None
    spec, result = _check(shape, Activation.NONE, dtype, StepwiseLayer(activation=Activation.NONE, window=window))
    wrong = _reference(spec, window=window)
    if np.allclose(wrong, _reference(spec), rtol=1e-12, atol=1e-12):
        assert result.status is Status.PASS  # the windows read only zeros where they moved (a tiny input)
        return
    _assert_named(
        result,
        "shift",
        lambda other: (
            other in WEIGHT_MISTAKES and np.allclose(_reference(spec, w=_weights(other)), wrong, rtol=1e-12, atol=1e-12)
        ),
    )
    if result.diagnosis[0].label == "shift":
        moved = ("of", "oh", "ow")[3 - shape.dims + axis] + " − 1"
        assert moved in str(result.diagnosis[0]), str(result.diagnosis[0])


def test_the_weight_candidates_are_the_textbook_ones_on_its_geometry() -> None:
    """On a 2-D layer the rule's readings are the formulas it always used (w[::-1, ::-1], (c_in, kh, kw), the
    channel swap), so the textbook geometry's hints are unchanged."""
    w = np.random.default_rng(0).standard_normal((3, 3, 2, 5))
    got = {label: changed for label, _, changed in _weight_candidates(w)}
    np.testing.assert_array_equal(got["flipped kernel"], w[::-1, ::-1])
    np.testing.assert_array_equal(got["row order"], w.reshape(2, 3, 3, 5).transpose(1, 2, 0, 3))
    np.testing.assert_array_equal(got["channel order"], w.swapaxes(2, 3).reshape(w.shape))
    for label, mistake in WEIGHT_MISTAKES.items():
        np.testing.assert_array_equal(got[label], mistake(w))
    assert _shifts(2) == [(1, 1), (-1, -1), (1, 0), (0, 1), (-1, 0), (0, -1)]


def test_a_1d_true_convolution_gets_the_hint_in_its_own_words() -> None:
    """A 1-D layer's flipped kernel is "reversed", its filter order ``(c_in, kw)``: no height in the words; a
    3-D one's is reversed on every axis."""
    _, result = _check(CONV1D, Activation.RELU, DType.FLOAT64, _layer(CONV1D, Activation.RELU, ReadsWeights))
    text = str(result.diagnosis[0])
    assert result.diagnosis[0].label == "flipped kernel" and "kernel reversed (a true convolution" in text, text
    _, rows = _check(
        CONV1D, Activation.RELU, DType.FLOAT64, _layer(CONV1D, Activation.RELU, ReadsWeights, mistake="row order")
    )
    assert "(c_in, kw)" in str(rows.diagnosis[0]), str(rows.diagnosis[0])
    _, cube = _check(CONV3D, Activation.NONE, DType.FLOAT64, _layer(CONV3D, Activation.NONE, ReadsWeights))
    assert "kernel reversed on every axis" in str(cube.diagnosis[0]), str(cube.diagnosis[0])
