"""The grouped estimate is used only where it is proven: forwards that break the grouping assumption in ways the
structural tests cannot see (no padding, k ≥ s: every window holds a perturbed entry) are caught by the audit,
and every per-tensor verdict equals the verdict of plain per-entry differences."""

from __future__ import annotations

import numpy as np
import pytest

from convcheck.checker import run_check
from convcheck.layer import MatrixConvLayer
from convcheck.numeric.audit import disagreement
from convcheck.numeric.engine import Estimate
from convcheck.results import CheckResult, NoteKind
from convcheck.spec import Activation, CheckSpec, ConvShape, Method


class NonLocal:
    """The built-in layer with its output rearranged in a way that is not a convolution.

    ``exact``: the backward is the exact gradient of this (wrong) forward, as when a layer's unfold and fold make
    the same mistake; else the backward is the plain convolution's, as when only the forward is wrong.
    """

    def __init__(self, kind: str, stride: int, padding: int, exact: bool) -> None:
        self.kind, self.exact = kind, exact
        self.inner = MatrixConvLayer(stride, padding, Activation.NONE)

    def forward(self, x, w, b):
        out, cache = self.inner.forward(x, w, b)
        if self.kind == "flipped windows":  # output row oh reads window row OH − 1 − oh
            out = out[:, ::-1].copy()
        elif self.kind == "swapped window indices":  # output (oh, ow) reads window (ow, oh)
            out = out.transpose(0, 2, 1, 3).copy()
        elif self.kind == "global term":  # every output also sees the whole input
            out = out + 0.01 * x.sum()
        elif self.kind == "batch mixing":  # item n is computed from item n + 1
            out = np.roll(out, -1, axis=0)
        elif self.kind == "channel mixing":  # channel co is computed from channel co + 1's filters
            out = np.roll(out, -1, axis=-1)
        return out, (cache, x.shape)

    def backward(self, dout, state):
        cache, x_shape = state
        if not self.exact:
            return self.inner.backward(dout, cache)
        extra = 0.0
        if self.kind == "flipped windows":
            dout = dout[:, ::-1]
        elif self.kind == "swapped window indices":
            dout = dout.transpose(0, 2, 1, 3)
        elif self.kind == "global term":
            extra = 0.01 * float(dout.sum())
        elif self.kind == "batch mixing":
            dout = np.roll(dout, 1, axis=0)
        elif self.kind == "channel mixing":
            dout = np.roll(dout, 1, axis=-1)
        dx, dw, db = self.inner.backward(np.ascontiguousarray(dout), cache)
        return dx + extra, dw, db


KINDS = ["flipped windows", "swapped window indices", "global term", "batch mixing", "channel mixing"]
# Square images (the index swap needs OH == OW); padding 0 with k ≥ s leaves no output unowned, padding 1 does.
SHAPES = [ConvShape(2, 6, 6, 2, 3, 3, 1, 0), ConvShape(2, 6, 6, 2, 3, 2, 2, 0), ConvShape(2, 5, 5, 2, 3, 3, 1, 1)]


def verdicts(result: CheckResult) -> dict[str, bool]:
    return {g.name: g.passed for g in result.gradients}


@pytest.mark.parametrize("exact", [True, False], ids=["own-gradient", "plain-backward"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_every_per_tensor_verdict_equals_the_per_entry_verdict(kind: str, shape: ConvShape, exact: bool):
    spec = CheckSpec(name="t", shape=shape, activation=Activation.NONE, method=Method.FULL)
    layer = NonLocal(kind, shape.stride, shape.padding, exact)
    grouped = run_check(spec, layer=layer)
    single = run_check(
        CheckSpec(name="t", shape=shape, activation=Activation.NONE, method=Method.ENTRYWISE), layer=layer
    )
    assert grouped.forward is not None and not grouped.forward.ok
    assert verdicts(grouped) == verdicts(single)
    assert any(note.kind is NoteKind.FALLBACK for note in grouped.notes), grouped.notes
    if exact:  # the backward is right for its own forward: only the forward check fails the layer
        assert all(verdicts(grouped).values()), verdicts(grouped)


def test_a_correct_layer_keeps_its_grouped_estimate():
    shape = ConvShape(2, 6, 6, 2, 3, 3, 1, 0)
    result = run_check(CheckSpec(name="t", shape=shape, method=Method.FULL))
    assert result.passed and result.method is Method.FULL
    assert not any(note.kind is NoteKind.FALLBACK for note in result.notes)


def _estimate(central: list[float], noise: float = 0.0) -> Estimate:
    est = Estimate.empty("input", (len(central),), np.zeros(len(central)))
    est.central[:] = central
    est.lo[:] = central
    est.hi[:] = central
    est.noise[:] = noise
    est.measured[:] = True
    return est


def test_estimates_that_agree_within_their_noise_agree_and_others_do_not():
    entries = np.arange(3)
    grouped = _estimate([1.0, 2.0, 3.0], noise=1e-9)
    assert disagreement(grouped, _estimate([1.0 + 1e-9, 2.0, 3.0], noise=1e-9), entries, 0.0, 0.0) is None
    found = disagreement(grouped, _estimate([1.0, 2.5, 3.0], noise=1e-9), entries, 0.0, 0.0)
    assert found is not None and found.index == (1,)
    assert disagreement(grouped, _estimate([1.0, np.nan, 3.0]), entries, 0.0, 0.0) is not None
