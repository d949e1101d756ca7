"""Wrong output sizes and wrong padding crops are named on the whole N-d space, not only on the textbook layer.

A wrong shape stops a check before numbers are compared, so the hint is all a user gets. On random geometries of
every hyperparameter (1-3 axes, per-axis kernels, strides and dilations, per-side, ``same`` and ``valid``
padding, groups, with and without a bias), a layer that sizes its output by one of the wrong formulas (the
formula written out here, independently of the rule's table) or crops dx wrongly gets the hint naming it; and two
numpy layers written as people write them (a 1-D loop that forgets the ``+ 1``; a crop ``dpad[before:-after]``
with nothing after) get it through the user-layer path.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import nd_geometries

from convcheck.bugs.stepwise import StepwiseLayer
from convcheck.checker import run_check
from convcheck.config import load_text
from convcheck.diagnosis.shapes import OUTPUT_FORMULAS_ND
from convcheck.layer import MatrixCache
from convcheck.results import Status
from convcheck.spec import Activation, CheckSpec, ConvShape, DType, Method
from convcheck.user.loader import load_layer

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _size(formula: str, n: int, k: int, s: int, before: int, after: int, d: int) -> int:
    """The output size along one axis by each wrong formula, written out (``span = d·(k − 1) + 1``)."""
    span = d * (k - 1) + 1
    return {
        "no + 1": (n + before + after - span) // s,
        "no padding": (n - span) // s + 1,
        "no stride": n + before + after - span + 1,
        "rounded up": math.ceil((n + before + after - span) / s) + 1,
        "+ 1 inside": (n + before + after - span + 1) // s,
        "no dilation": (n + before + after - k) // s + 1,
        "span d·k": (n + before + after - d * k) // s + 1,
        "before only": (n + before - span) // s + 1,
        "before twice": (n + 2 * before - span) // s + 1,
    }[formula]


#: The rule's descriptions, by the formula above that each must name (the table's order).
NAMES = dict(
    zip(
        (
            "no + 1",
            "no padding",
            "no stride",
            "rounded up",
            "+ 1 inside",
            "no dilation",
            "span d·k",
            "before only",
            "before twice",
        ),
        (what for what, _ in OUTPUT_FORMULAS_ND),
        strict=True,
    )
)


def _wrong_sizes(shape: ConvShape, formula: str) -> tuple[int, ...]:
    return tuple(
        _size(formula, n, k, s, before, after, d)
        for n, k, s, (before, after), d in zip(
            shape.spatial_in, shape.kernel, shape.strides, shape.pads, shape.dilations, strict=True
        )
    )


@dataclasses.dataclass(frozen=True)
class SizedOutput(StepwiseLayer):
    """Returns an output of ``sizes`` positions (the right values where the two overlap, zeros elsewhere), as a
    layer that allocates its output by a wrong formula and fills what its loop reaches."""

    sizes: tuple[int, ...] = ()

    def forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, MatrixCache]:
        out, cache = super().forward(x, w, b)
        wrong = np.zeros((out.shape[0], *self.sizes, out.shape[-1]), dtype=out.dtype)
        common = (slice(None), *(slice(min(a, b)) for a, b in zip(out.shape[1:-1], self.sizes, strict=True)))
        wrong[common] = out[common]
        return wrong, cache


@dataclasses.dataclass(frozen=True)
class CroppedInputGradient(StepwiseLayer):
    """Returns dx padded (``uncropped``) or cropped twice (``shrunk``) along every axis."""

    crop: str = "uncropped"

    def backward(self, dout: np.ndarray, cache: MatrixCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dx, dw, db = super().backward(dout, cache)
        pads = self.window_of(cache).resolve_pads(dx.shape[1:-1], cache.w_shape[:-2])
        if self.crop == "uncropped":
            return np.pad(dx, ((0, 0), *pads, (0, 0))), dw, db
        inside = tuple(slice(a, n - b) for n, (a, b) in zip(dx.shape[1:-1], pads, strict=True))
        return np.ascontiguousarray(dx[(slice(None), *inside)]), dw, db


def _check(
    shape: ConvShape, layer: StepwiseLayer, dtype: DType = DType.FLOAT64, activation: Activation = Activation.NONE
):
    return run_check(CheckSpec("nd-shape", shape, activation, Method.FULL, dtype), layer=layer)


@SETTINGS
@pytest.mark.parametrize("formula", NAMES)
@given(shape=nd_geometries(max_size=7), dtype=st.sampled_from(list(DType)))
def test_an_output_sized_by_a_wrong_formula_is_named(formula: str, shape: ConvShape, dtype: DType) -> None:
    sizes = _wrong_sizes(shape, formula)
    if shape.is_basic or sizes == shape.spatial_out or min(sizes) < 0:
        return  # the textbook layer has its own rule; the formula is right here; no array has that shape
    layer = dataclasses.replace(SizedOutput.stepwise_for(shape, Activation.NONE), sizes=sizes)
    result = _check(shape, layer, dtype)
    assert result.status is Status.ERROR or result.status is Status.FAIL, result.status
    # The first formula (in the rule's order) that gives these sizes is the one named.
    first = next(f for f in NAMES if _wrong_sizes(shape, f) == sizes)
    hints = [h for h in result.diagnosis if h.label == "output size"]
    assert hints and NAMES[first] in str(hints[0]), (shape.describe(), formula, [str(h) for h in result.diagnosis])


@SETTINGS
@pytest.mark.parametrize("crop", ["uncropped", "shrunk"])
@given(shape=nd_geometries(max_size=7))
def test_a_dx_cropped_wrongly_is_named(crop: str, shape: ConvShape) -> None:
    padded = any(a or b for a, b in shape.pads)
    shrunk = tuple(n - a - b for n, (a, b) in zip(shape.spatial_in, shape.pads, strict=True))
    if shape.is_basic or not padded or (crop == "shrunk" and min(shrunk) < 0):
        return
    layer = dataclasses.replace(CroppedInputGradient.stepwise_for(shape, Activation.NONE), crop=crop)
    result = _check(shape, layer)
    assert result.status is not Status.PASS
    words = "never cropped" if crop == "uncropped" else "cropped from a gradient that has none"
    assert any(h.label == "padding" and words in str(h) for h in result.diagnosis), (
        shape.describe(),
        [str(h) for h in result.diagnosis],
    )


@given(shape=nd_geometries(max_size=6), activation=st.sampled_from(list(Activation)))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_correct_layer_gets_no_shape_hint(shape: ConvShape, activation: Activation) -> None:
    result = _check(shape, StepwiseLayer.stepwise_for(shape, activation), activation=activation)
    assert result.status is Status.PASS and result.diagnosis == ()


LOOP_1D = """
import numpy as np


def forward(x, w, b, stride, padding):
    (before, after), = padding if not isinstance(padding, int) else ((padding, padding),)
    xp = np.pad(x, ((0, 0), (before, after), (0, 0)))
    k = w.shape[0]
    out_w = (xp.shape[1] - k) // stride{plus_one}
    out = np.zeros((x.shape[0], out_w, w.shape[2]), dtype=x.dtype)
    for i in range(out_w):
        out[:, i] = np.tensordot(xp[:, i * stride : i * stride + k], w, axes=([1, 2], [0, 1])) + b
    return out, (xp, w, stride, before, after)


def backward(dout, cache):
    xp, w, stride, before, after = cache
    k = w.shape[0]
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(dout.shape[1]):
        dxp[:, i * stride : i * stride + k] += np.tensordot(dout[:, i], w, axes=([1], [2]))
        dw += np.tensordot(xp[:, i * stride : i * stride + k], dout[:, i], axes=([0], [0]))
    return dxp[:, {crop}], dw, dout.sum(axis=(0, 1))
"""


def _user(tmp_path: Path, padding: str, **code: str):
    (tmp_path / "conv1d.py").write_text(LOOP_1D.format(**code), encoding="utf-8")
    text = "impl: conv1d.py\nactivation: none\ndims: 1\nbatch: 2\nin_width: 11\nin_depth: 2\nout_depth: 3\n"
    text += f"filter_size: 3\nstride: 2\npadding: {padding}\n"
    loaded = load_text(text, file=str(tmp_path / "c.yaml"), base_dir=tmp_path)
    assert not loaded.errors, [str(e) for e in loaded.errors]
    (spec,) = loaded.specs
    return run_check(spec, layer=load_layer(spec))


def test_a_1d_loop_layer_forgetting_the_plus_one_is_told_the_formula(tmp_path: Path) -> None:
    right = _user(tmp_path, "2-1", plus_one=" + 1", crop="before : before + xp.shape[1] - before - after")
    assert right.status is Status.PASS, right.error
    wrong = _user(tmp_path, "2-1", plus_one="", crop="before : before + xp.shape[1] - before - after")
    assert [h.label for h in wrong.diagnosis] == ["output size"], [str(h) for h in wrong.diagnosis]
    assert "without the + 1" in str(wrong.diagnosis[0])


def test_a_1d_crop_with_nothing_after_is_told_why_it_is_empty(tmp_path: Path) -> None:
    wrong = _user(tmp_path, "2-0", plus_one=" + 1", crop="before:-after")
    assert wrong.status is not Status.PASS
    assert [h.label for h in wrong.diagnosis] == ["padding"], [str(h) for h in wrong.diagnosis]
    assert "0:-0 is an empty slice" in str(wrong.diagnosis[0])
