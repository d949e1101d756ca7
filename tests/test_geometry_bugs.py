"""The planted bugs of the whole N-d space are caught exactly where their geometry exposes them, and named.

``exposes`` is proven both ways on random geometries of every hyperparameter (``strategies.nd_geometries``:
1-3 axes, per-axis kernels, strides and dilations, per-side, ``same`` and ``valid`` padding, groups, with and
without a bias): with generic data (standard normal, no activation, so no gradient entry is masked) the buggy
layer differs from the correct one exactly where ``exposes`` is true, and the checker fails it there, in
float64 and float32, with the bug's hint, and passes it elsewhere. Every diagnosis rule is also run directly
(without ``diagnose``'s guard) on correct and buggy layers of the space: none raises, none speaks for a
correct layer.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from strategies import geometries, nd_geometries

from convcheck import bugs, reference
from convcheck.bugs import CATALOGUE, PlantedBug
from convcheck.bugs.col2im import col2im_variant
from convcheck.bugs.fold import fold_assigning, fold_variant, reads_input, rewires_fold
from convcheck.checker import run_check
from convcheck.diagnosis import RULES
from convcheck.diagnosis.evidence import Evidence
from convcheck.layer import MatrixConvLayer
from convcheck.results import Status
from convcheck.selftest import GEOMETRY_SWEEP, with_dtype
from convcheck.spec import Activation, CheckSpec, ConvShape, DType, Method
from convcheck.windows import fold

ND_BUGS = tuple(bug for bug in CATALOGUE if bug.any_geometry)
ND_HINTS = {bug.hint for bug in ND_BUGS}
TORCH_STYLE = ConvShape.nd(1, (7, 9), 4, 8, (3, 5), (2, 1), "same", 2, 4, False)
ODD_SAME_1D = ConvShape.nd(2, (11,), 3, 3, 4, 2, "same", 1, 3)
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


#: The seed's 2-D mistakes whose layer runs on the whole space (``make_for``), and which geometries the mistake
#: is defined on: a bias reduction needs a bias; the dW layout mistakes are written for one weight matrix.
SEED_BUGS_ANYWHERE = {
    "col2im-assign": lambda s: True,
    "col2im-ignores-stride": lambda s: True,
    "col2im-row-order": lambda s: True,
    "col2im-last-window-dropped": lambda s: True,
    "padding-crop-off-by-one": lambda s: True,
    "kernel-flipped-backward": lambda s: True,
    "bias-grad-mean": lambda s: s.bias,
    "bias-grad-one-sample": lambda s: s.bias,
    "grads-scaled-by-batch": lambda s: True,
    "weights-row-order": lambda s: s.groups == 1,
    "weights-channels-swapped": lambda s: s.groups == 1,
    "weights-product-transposed": lambda s: s.groups == 1,
    "dout-transposed": lambda s: s.dims == 2,
}
NO_BIAS_3X5 = ConvShape(2, 7, 9, 3, 4, (3, 5), 2, 2, bias=False)
RECT_2D = ConvShape(2, 7, 9, 3, 4, (3, 5), 1, 1)
NO_BIAS_2D = ConvShape(2, 6, 7, 3, 4, 3, 1, 1, bias=False)


SEED_ANYWHERE = tuple(map(bugs.get, SEED_BUGS_ANYWHERE))
SEED_HINTS = {bug.hint for bug in SEED_ANYWHERE}


def _data(shape: ConvShape, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(s) for s in (shape.x_shape, shape.w_shape, shape.b_shape, shape.out_shape))


#: The condition in each bug's ``exposed_by`` words, which ``exposes`` must imply (it is the simple necessary
#: condition; ``exposes`` adds only that the mistake reaches a real input entry).
NEEDS = {
    "fold-ignores-dilation": lambda s: any(d > 1 and k > 1 for d, k in zip(s.dilations, s.kernel, strict=True)),
    "dilation-times-stride": lambda s: any(d > 1 and o > 1 for d, o in zip(s.dilations, s.spatial_out, strict=True)),
    "kernel-axes-swapped": lambda s: s.dims > 1 and s.kernel[-1] != s.kernel[-2],
    "strides-swapped": lambda s: s.dims > 1 and s.strides[-1] != s.strides[-2],
    "padding-cropped-symmetrically": lambda s: any(before != after for before, after in s.pads),
    "same-padding-before": lambda s: s.padding_mode.value == "same",
    "groups-mixed-in-dx": lambda s: s.groups > 1 and s.out_depth > s.groups,
    "grouped-dw-channel-order": lambda s: s.groups > 1 and s.fan_in > 1,
    "depthwise-dx-summed": lambda s: s.groups == s.in_depth > 1,
    "bias-grad-without-bias": lambda s: not s.bias,
}


def differing(bug: PlantedBug, shape: ConvShape, activation: Activation = Activation.NONE) -> set[str]:
    """What the bug gets wrong on this layer: the forward against the reference; the gradients (or their
    shapes) against the correct layer's, when the forward is right."""
    x, w, b, g = _data(shape)
    layer = bug.make_for(shape, activation)
    out, cache = layer.forward(x, w, b)
    if not np.allclose(out, reference.forward(x, w, b, shape.window, activation), rtol=1e-9, atol=1e-9):
        return {"forward"}
    correct = MatrixConvLayer.for_shape(shape, activation)
    want = correct.backward(g, correct.forward(x, w, b)[1])
    got = layer.backward(g, cache)
    return {
        name
        for name, a, e in zip(("input", "weights", "bias"), got, want, strict=True)
        if a.shape != e.shape or not np.allclose(a, e, rtol=1e-9, atol=1e-9)
    }


@SETTINGS
@pytest.mark.parametrize("bug", ND_BUGS, ids=lambda b: b.id)
@given(shape=nd_geometries())
@example(shape=TORCH_STYLE)
@example(shape=ODD_SAME_1D)
def test_the_bug_differs_exactly_where_it_is_exposed(bug: PlantedBug, shape: ConvShape) -> None:
    shown = differing(bug, shape)
    exposed = bug.exposes(shape, Activation.NONE)
    assert bool(shown) == exposed, (shape.describe(), shown)
    assert shown <= set(bug.tensors), shape.describe()
    assert NEEDS[bug.id](shape) or not exposed, shape.describe()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@pytest.mark.parametrize("bug", ND_BUGS, ids=lambda b: b.id)
@given(shape=nd_geometries(max_size=6), dtype=st.sampled_from(list(DType)))
@example(shape=TORCH_STYLE, dtype=DType.FLOAT32)
@example(shape=ODD_SAME_1D, dtype=DType.FLOAT32)
def test_the_checker_fails_it_exactly_where_exposed_and_names_it(bug: PlantedBug, shape: ConvShape, dtype: DType):
    spec = CheckSpec("nd-bug", shape, Activation.NONE, Method.FULL, dtype)
    result = run_check(spec, layer=bug.make_for(shape, spec.activation))
    exposed = bug.exposes(shape, spec.activation)
    assert result.status is (Status.FAIL if exposed else Status.PASS), (shape.describe(), result.error)
    labels = [label for hint in result.diagnosis for label in hint.label.split(" / ")]
    # One hint naming the bug; on a tiny layer where another mistake gives the identical gradient, both.
    assert (bug.hint in labels and len(result.diagnosis) == 1) if exposed else labels == [], (
        shape.describe(),
        [str(h) for h in result.diagnosis],
    )
    assert set(labels) <= ND_HINTS


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=nd_geometries(max_size=6),
    activation=st.sampled_from(list(Activation)),
    dtype=st.sampled_from(list(DType)),
    bug=st.sampled_from((None, *ND_BUGS, *SEED_ANYWHERE)),
)
def test_no_rule_raises_or_speaks_for_a_correct_layer(shape, activation, dtype, bug: PlantedBug | None) -> None:
    """Each rule runs on its own (``diagnose`` would skip a rule that raises): on the whole space none raises, a
    correct layer gets no hint from any, and a buggy one (of the new hyperparameters, or one of the seed's
    mistakes built on this geometry) gets hints only from the mistakes the rules name on the whole space."""
    spec = CheckSpec("rules", shape, activation, Method.FULL, dtype)
    layer = MatrixConvLayer.for_shape(shape, activation) if bug is None else bug.make_for(shape, activation)
    result = run_check(spec, layer=layer)
    ev = Evidence(result)
    hints = [hint for rule in RULES if (hint := rule(ev)) is not None]
    if bug is None or result.status is Status.PASS:
        assert hints == [] and result.diagnosis == (), (shape.describe(), [str(h) for h in hints])
    else:
        labels = {label for hint in result.diagnosis for label in hint.label.split(" / ")}
        allowed = ND_HINTS | {"never written"} | (SEED_HINTS | {"activation mask"} if bug in SEED_ANYWHERE else set())
        assert labels <= allowed, (shape.describe(), [str(h) for h in hints])


def test_the_shared_fold_with_its_knobs_at_rest_is_the_layers_fold() -> None:
    for shape in (TORCH_STYLE, ODD_SAME_1D, ConvShape(2, 5, 7, 2, 3, 3, 2, 1)):
        groups = shape.groups
        rows = shape.batch * int(np.prod(shape.spatial_out))
        per_group = int(np.prod(shape.kernel)) * shape.in_depth // groups
        dcols = np.random.default_rng(1).standard_normal((groups, rows, per_group) if groups > 1 else (rows, per_group))
        want = fold(dcols, shape.x_shape, shape.kernel, shape.window)
        got = fold_variant(
            dcols,
            shape.x_shape,
            shape.kernel,
            shape.window,
            starts=shape.strides,
            taps=shape.dilations,
            kernel_read=shape.kernel,
            crop=tuple(before for before, _ in shape.pads),
        )
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
        assert not rewires_fold(shape, starts=shape.strides)


def test_a_layer_whose_windows_read_only_padding_hides_every_input_bug() -> None:
    """k = 1, stride 3, padding 2 around one row: the windows read padded rows 0 and 3, the input is row 2."""
    shape = ConvShape.nd(1, (1,), 2, 2, 1, 3, 2, 1, 2)
    assert not reads_input(shape)
    for bug in ND_BUGS:
        if "input" in bug.tensors or "weights" in bug.tensors:
            assert not bug.exposes(shape, Activation.NONE) and differing(bug, shape) == set(), bug.id


def test_the_catalogue_names_each_new_hyperparameter() -> None:
    hints = {bug.hint for bug in ND_BUGS}
    assert hints == {
        "dilation",
        "dilated stride",
        "kernel axes",
        "stride axes",
        "asymmetric padding",
        "same padding",
        "group channels",
        "group order",
        "depthwise",
        "no bias",
    }
    assert bugs.get("bias-grad-without-bias").breaks_contract


@pytest.mark.parametrize("bug", [b for b in CATALOGUE if b.hint == "activation mask"], ids=lambda b: b.id)
def test_activation_mistakes_are_named_on_every_geometry(bug: PlantedBug) -> None:
    """The activation family's mistakes do not depend on the geometry: on the N-d sweep (every hyperparameter,
    float64 and float32) each is caught where its activation exposes it and named ``activation mask``."""
    for spec in (s for dtype in DType for s in with_dtype(GEOMETRY_SWEEP, dtype)):
        result = run_check(spec, layer=bug.layer.stepwise_for(spec.shape, spec.activation))
        if not bug.exposes(spec.shape, spec.activation):
            assert result.status is Status.PASS, spec.name
            continue
        assert result.status is Status.FAIL, spec.name
        assert [h.label for h in result.diagnosis] == ["activation mask"], (spec.name, result.diagnosis)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@pytest.mark.parametrize("bug_id", SEED_BUGS_ANYWHERE)
@given(shape=nd_geometries(max_size=6), dtype=st.sampled_from(list(DType)))
@example(shape=NO_BIAS_2D, dtype=DType.FLOAT32)
@example(shape=RECT_2D, dtype=DType.FLOAT32)
@example(shape=NO_BIAS_3X5, dtype=DType.FLOAT64)
@example(shape=TORCH_STYLE, dtype=DType.FLOAT32)
@example(shape=ODD_SAME_1D, dtype=DType.FLOAT32)
def test_the_seeds_mistakes_are_named_on_every_geometry_that_exposes_them(bug_id: str, shape, dtype) -> None:
    """The seed's 2-D mistakes built on the whole space (a bias-free layer, a 3x5 kernel, 1-D, 3-D, dilation,
    groups, ``same`` padding): where the buggy layer's gradients differ from the correct layer's, the checker
    fails it and names it with the seed's hint (alone, or with a mistake giving the identical gradient on this
    layer); where they do not, it passes with no hint."""
    bug = bugs.get(bug_id)
    if not SEED_BUGS_ANYWHERE[bug_id](shape):
        return
    spec = CheckSpec("seed-bug", shape, Activation.NONE, Method.FULL, dtype)
    result = run_check(spec, layer=bug.make_for(shape, spec.activation))
    shown = differing(bug, shape)
    assert shown <= set(bug.tensors), (shape.describe(), shown)
    labels = [label for hint in result.diagnosis for label in hint.label.split(" / ")]
    if not shown:
        assert result.status is Status.PASS and labels == [], (shape.describe(), labels)
        return
    assert result.status is Status.FAIL, (shape.describe(), result.error)
    assert bug.hint in labels or _same_as_named(bug, shape, labels), (
        shape.describe(),
        [str(h) for h in result.diagnosis],
    )


def _gradients(bug: PlantedBug, shape: ConvShape) -> tuple[np.ndarray, ...]:
    x, w, b, g = _data(shape)
    layer = bug.make_for(shape, Activation.NONE)
    return layer.backward(g, layer.forward(x, w, b)[1])


def _same_as_named(bug: PlantedBug, shape: ConvShape, labels: list[str]) -> bool:
    """Whether, on this layer, a mistake the hint names gives exactly the gradients ``bug`` gives (two mistakes
    that coincide on a tiny layer, e.g. a dilation put into the stride and a dropped last window when the last
    window then falls outside the input): the hint is then right, and the test builds that mistake to prove it."""
    mine = _gradients(bug, shape)
    candidates = [b for b in (*ND_BUGS, *map(bugs.get, SEED_BUGS_ANYWHERE)) if b.hint in labels and b is not bug]
    return any(
        all(a.shape == e.shape and np.allclose(a, e, rtol=1e-12, atol=1e-12) for a, e in zip(mine, theirs, strict=True))
        for theirs in (_gradients(other, shape) for other in candidates if not other.breaks_contract)
    )


@given(shape=geometries(max_size=6))
@settings(max_examples=30, deadline=None)
def test_the_n_d_assigning_fold_is_the_seeds_on_its_geometry(shape: ConvShape) -> None:
    """The seed's col2im mistakes, written once for the whole space, are the seed's formulas on its geometry."""
    rows = shape.batch * int(np.prod(shape.spatial_out))
    dcols = np.random.default_rng(2).standard_normal((rows, int(np.prod(shape.kernel)) * shape.in_depth))
    k, s, p = shape.filter_size, shape.stride, shape.padding
    np.testing.assert_array_equal(
        fold_assigning(dcols, shape.x_shape, shape.kernel, shape.window),
        col2im_variant(dcols, shape.x_shape, k, s, p, accumulate=False),
    )
    np.testing.assert_allclose(
        fold_variant(dcols, shape.x_shape, shape.kernel, shape.window, starts=(1, 1)),
        col2im_variant(dcols, shape.x_shape, k, s, p, place_stride=1),
        rtol=1e-13,
        atol=1e-13,
    )
