"""Every planted bug is a real bug, independently of the checker.

For each catalogue entry and each layer of the selftest sweep, the buggy layer's forward is compared with the
reference convolution and its gradients with the true gradients of its own forward: the correct layer's when
the forward is right, plain central differences when it is not (the two forward bugs). The set of tensors that
differ must be empty exactly where ``bug.exposes`` says the geometry hides the bug, and its union over the
sweep must equal the declared ``bug.tensors``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from convcheck import bugs, reference
from convcheck.bugs import CATALOGUE, TENSOR_ORDER, PlantedBug, StepwiseLayer
from convcheck.bugs.col2im import col2im_assign_by_window, col2im_variant
from convcheck.layer import MatrixConvLayer
from convcheck.selftest import DEFAULT_SWEEP, GEOMETRY_SWEEP, sweep_of
from convcheck.spec import Activation, CheckSpec, ConvShape
from convcheck.windows import col2im

RTOL, ATOL = 1e-9, 1e-9


def _data(shape: ConvShape, seed: int, dtype: type = np.float64) -> tuple[np.ndarray, ...]:
    """x, w, b and the upstream gradient G, standard normal (no pre-activation lands on a ReLU kink)."""
    rng = np.random.default_rng(seed)
    x, w, b, g = (rng.standard_normal(s) for s in (shape.x_shape, shape.w_shape, shape.b_shape, shape.out_shape))
    return tuple(a.astype(dtype) for a in (x, w, b, g))


def _numeric_gradients(layer: object, x, w, b, g, eps: float = 1e-6) -> tuple[np.ndarray, ...]:
    """Central differences of ``L = Σ layer.forward(x, w, b) ⊙ g`` for every entry of x, w and b."""
    params = [x.copy(), w.copy(), b.copy()]
    grads = []
    for i, p in enumerate(params):
        grad = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            saved = p[idx]
            p[idx] = saved + eps
            up = float(np.sum(layer.forward(*params)[0] * g))
            p[idx] = saved - eps
            down = float(np.sum(layer.forward(*params)[0] * g))
            p[idx] = saved
            grad[idx] = (up - down) / (2 * eps)
        grads.append(grad)
        params[i] = p
    return tuple(grads)


def _differs(a: np.ndarray, b: np.ndarray, rtol: float = RTOL, atol: float = ATOL) -> bool:
    return a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=atol)


def layers_of(bug: PlantedBug) -> tuple[CheckSpec, ...]:
    """The selftest's layers for this bug: the seed's sweep, or the N-d one for a bug of the whole space."""
    return sweep_of(bug, DEFAULT_SWEEP, GEOMETRY_SWEEP)


def make(bug: PlantedBug, shape: ConvShape, activation: Activation) -> StepwiseLayer:
    return bug.make_for(shape, activation) if bug.any_geometry else bug.make(shape.stride, shape.padding, activation)


def differing_tensors(bug: PlantedBug, spec: CheckSpec, seed: int = 0) -> set[str]:
    """Which of forward / input / weights / bias the bug gets wrong on this layer (float64, seeded data).

    ``backward`` is called twice on the same cache and both calls are judged, so a stateful bug shows.
    """
    s = spec.shape
    x, w, b, g = _data(s, seed)
    layer = make(bug, s, spec.activation)
    out, cache = layer.forward(x, w, b)
    found = set()
    if _differs(out, reference.forward(x, w, b, s.window, spec.activation)):
        found.add("forward")
        expected = _numeric_gradients(layer, x, w, b, g)
        tol = {"rtol": 1e-5, "atol": 1e-6}
    else:
        correct = MatrixConvLayer.for_shape(s, spec.activation)
        expected = correct.backward(g, correct.forward(x, w, b)[1])
        tol = {}
    for _ in range(2):
        for name, got, want in zip(("input", "weights", "bias"), layer.backward(g, cache), expected, strict=True):
            if _differs(got, want, **tol):
                found.add(name)
    return found


@pytest.fixture(scope="module")
def differences() -> dict[tuple[str, str], set[str]]:
    return {(bug.id, spec.name): differing_tensors(bug, spec) for bug in CATALOGUE for spec in layers_of(bug)}


def test_catalogue_is_large_with_unique_kebab_case_ids():
    ids = bugs.ids()
    assert len(ids) >= 18
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", i) for i in ids)


def test_entries_are_described_and_declare_known_tensors():
    for bug in CATALOGUE:
        assert bug.description and bug.hint and bug.exposed_by
        assert set(bug.tensors) <= set(TENSOR_ORDER)
        assert issubclass(bug.layer, StepwiseLayer) and bug.layer is not StepwiseLayer


def test_get_finds_each_entry_and_names_the_known_ones_when_it_cannot():
    for bug in CATALOGUE:
        assert bugs.get(bug.id) is bug
    with pytest.raises(KeyError, match="relu-mask-missing"):
        bugs.get("no-such-bug")


def test_tensors_must_be_a_known_ordered_subset():
    with pytest.raises(ValueError):
        PlantedBug("x", "d", ("weights", "input"), "h", "any", lambda s, a: True, StepwiseLayer)
    with pytest.raises(ValueError):
        PlantedBug("x", "d", ("gradient",), "h", "any", lambda s, a: True, StepwiseLayer)


@pytest.mark.parametrize("activation", list(Activation))
@pytest.mark.parametrize("spec", DEFAULT_SWEEP, ids=lambda s: s.name)
def test_stepwise_layer_is_the_matrix_layer(spec: CheckSpec, activation: Activation):
    """The base every bug starts from is exactly the correct layer: each bug's diff is only its override."""
    s = spec.shape
    x, w, b, g = _data(s, 1)
    correct = MatrixConvLayer(s.stride, s.padding, activation)
    stepwise = StepwiseLayer(s.stride, s.padding, activation)
    out, cache = correct.forward(x, w, b)
    out2, cache2 = stepwise.forward(x, w, b)
    np.testing.assert_array_equal(out, out2)
    for want, got in zip(correct.backward(g, cache), stepwise.backward(g, cache2), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("bug", CATALOGUE, ids=lambda b: b.id)
def test_bug_corrupts_exactly_its_declared_tensors_over_the_sweep(bug: PlantedBug, differences):
    union = set().union(*(differences[bug.id, spec.name] for spec in layers_of(bug)))
    assert union == set(bug.tensors)


@pytest.mark.parametrize("bug", CATALOGUE, ids=lambda b: b.id)
def test_bug_shows_exactly_on_the_layers_its_exposure_rule_names(bug: PlantedBug, differences):
    """``exposes`` is the documented geometry ("only when stride < filter_size", …), checked per layer."""
    for spec in layers_of(bug):
        shown = differences[bug.id, spec.name]
        assert bool(shown) == bug.exposes(spec.shape, spec.activation), (spec.name, shown)
        assert shown <= set(bug.tensors), spec.name


def test_every_bug_is_exposed_by_some_layer_of_the_sweep():
    for bug in CATALOGUE:
        assert any(bug.exposes(spec.shape, spec.activation) for spec in layers_of(bug)), bug.id


@pytest.mark.parametrize("bug", CATALOGUE, ids=lambda b: b.id)
def test_bug_keeps_the_dtype_and_leaves_its_arguments_alone(bug: PlantedBug):
    """A bug must show as wrong numbers, not as a dtype or mutation problem hiding which tensor is wrong."""
    spec = layers_of(bug)[0]
    s = spec.shape
    x, w, b, g = _data(s, 2, np.float32)
    copies = [a.copy() for a in (x, w, b, g)]
    layer = make(bug, s, spec.activation)
    out, cache = layer.forward(x, w, b)
    grads = layer.backward(g, cache)
    assert out.dtype == np.float32
    assert all(d.dtype == np.float32 for d in grads)
    for before, after in zip(copies, (x, w, b, g), strict=True):
        np.testing.assert_array_equal(before, after)


def test_stateful_bug_is_right_once_and_wrong_on_the_second_call():
    bug = bugs.get("weights-accumulate")
    spec = DEFAULT_SWEEP[0]
    s = spec.shape
    x, w, b, g = _data(s, 3)
    layer = bug.make(s.stride, s.padding, spec.activation)
    correct = MatrixConvLayer(s.stride, s.padding, spec.activation)
    want = correct.backward(g, correct.forward(x, w, b)[1])[1]
    cache = layer.forward(x, w, b)[1]
    np.testing.assert_allclose(layer.backward(g, cache)[1], want)
    np.testing.assert_allclose(layer.backward(g, cache)[1], 2 * want)
    fresh = bug.make(s.stride, s.padding, spec.activation)
    np.testing.assert_allclose(fresh.backward(g, cache)[1], want)


def test_seed_crop_empties_dx_only_without_padding():
    bug = bugs.get("padding-crop-unguarded")
    for spec in DEFAULT_SWEEP:
        s = spec.shape
        x, w, b, g = _data(s, 4)
        layer = bug.make(s.stride, s.padding, spec.activation)
        dx = layer.backward(g, layer.forward(x, w, b)[1])[0]
        assert dx.shape == ((s.batch, 0, 0, s.in_depth) if s.padding == 0 else s.x_shape)


@pytest.mark.parametrize("spec", DEFAULT_SWEEP, ids=lambda s: s.name)
def test_col2im_variant_with_its_knobs_at_rest_is_the_layers_col2im(spec: CheckSpec):
    """The shared col2im the bugs and the diagnosis hypotheses turn knobs on is exactly the layer's, untouched;
    where windows never overlap, assigning (either way) is accumulating."""
    s = spec.shape
    dcols = np.random.default_rng(5).standard_normal(
        (s.batch * s.out_height * s.out_width, s.filter_size**2 * s.in_depth)
    )
    geometry = (s.x_shape, s.filter_size, s.stride, s.padding)
    want = col2im(dcols, *geometry)
    np.testing.assert_allclose(col2im_variant(dcols, *geometry), want, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(col2im_variant(dcols, *geometry, place_stride=s.stride), want, rtol=1e-13, atol=1e-13)
    overlapping = s.stride < s.filter_size
    for assigned in (col2im_variant(dcols, *geometry, accumulate=False), col2im_assign_by_window(dcols, *geometry)):
        assert assigned.shape == s.x_shape
        assert np.allclose(assigned, want, rtol=1e-13, atol=1e-13) != overlapping, spec.name
