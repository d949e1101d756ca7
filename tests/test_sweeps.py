"""What a sweep says: the condition found separates failures from passes exactly, and is the simplest one.

The planted-bug catalogue states, per bug, the geometry that exposes it (``bug.exposes``); a sweep whose
statuses are those predicates must yield a condition for every bug whose rule is one of the simple forms, and
checks run for real must agree.
"""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convcheck import bugs
from convcheck.checker import run_check
from convcheck.results import Status
from convcheck.spec import Activation, CheckSpec, ConvShape, Method
from convcheck.sweeps import (
    MIN_CHECKS,
    KeyCondition,
    Relation,
    Relop,
    Shape,
    SweepCondition,
    condition_of,
    describe_values,
    features,
    find_condition,
    value_shape,
)

ACTIVATIONS = (Activation.RELU, Activation.NONE, Activation.LEAKY_RELU)


def _spec(k=3, s=1, p=1, h=5, w=5, n=1, c_in=1, c_out=1, activation=Activation.RELU) -> CheckSpec:
    shape = ConvShape(n, h, w, c_in, c_out, filter_size=k, stride=s, padding=p)
    return CheckSpec(
        name=f"k{k}s{s}p{p}h{h}w{w}n{n}c{c_in}-{c_out}-{activation.value}", shape=shape, activation=activation
    )


def _grid() -> list[CheckSpec]:
    """Every valid layer of a small grid: filter, stride and padding 0..2, square and non-square inputs."""
    specs = []
    for k, s, p, (h, w), n, c_in, c_out, activation in itertools.product(
        (1, 2, 3), (1, 2, 3), (0, 1, 2), ((5, 5), (5, 7), (7, 5)), (1, 2), (1, 2), (1, 2), ACTIVATIONS
    ):
        spec = _spec(k, s, p, h, w, n, c_in, c_out, activation)
        if not spec.shape.problems():
            specs.append(spec)
    return specs


GRID = _grid()


def _separates(condition: SweepCondition, specs: list[CheckSpec], statuses: list[Status]) -> bool:
    """Every failure satisfies every atom; every pass fails at least one (errors are not judged)."""
    for spec, status in zip(specs, statuses, strict=True):
        holds = all(atom.holds(features(spec)) for atom in condition.atoms)
        if status in (Status.PASS, Status.FAIL) and holds != (status is Status.FAIL):
            return False
    return True


def _statuses(bug: bugs.PlantedBug, specs: list[CheckSpec]) -> list[Status]:
    return [Status.FAIL if bug.exposes(s.shape, s.activation) else Status.PASS for s in specs]


# The bugs whose exposing rule is one or two of the simple forms on this grid, and what the sweep says.
EXPECTED = {
    "relu-mask-missing": "activation = relu",
    "activation-after-params": "activation ≠ none",
    "leaky-slope-forgotten": "activation = leaky_relu",
    "col2im-assign": "filter_size > stride",
    "col2im-row-order": "in_depth = 2 and filter_size ≥ 2",
    "padding-crop-off-by-one": "padding ≥ 1",
    "padding-crop-unguarded": "padding = 0",
    "kernel-flipped-backward": "filter_size ≥ 2",
    "dout-transposed": "out_height ≥ 2 and out_width ≥ 2",
    "weights-channels-swapped": "in_depth = 2 and out_depth = 2",
    "bias-grad-one-sample": "batch = 2",
    "forward-flipped-kernel": "filter_size ≥ 2",
}


@pytest.mark.parametrize("bug_id", sorted(EXPECTED))
def test_sweep_of_a_planted_bug_names_its_exposing_condition(bug_id: str):
    statuses = _statuses(bugs.get(bug_id), GRID)
    condition = find_condition(GRID, statuses)
    assert condition is not None
    assert condition.condition == EXPECTED[bug_id]
    assert _separates(condition, GRID, statuses)
    assert condition.failures == statuses.count(Status.FAIL) and condition.passes == statuses.count(Status.PASS)


@pytest.mark.parametrize("bug", bugs.CATALOGUE, ids=lambda bug: bug.id)
def test_any_condition_found_for_a_planted_bug_separates_exactly(bug: bugs.PlantedBug):
    statuses = _statuses(bug, GRID)
    condition = find_condition(GRID, statuses)
    assert condition is None or _separates(condition, GRID, statuses)


def test_padding_bugs_read_as_the_issue_says():
    statuses = _statuses(bugs.get("padding-crop-unguarded"), GRID)
    condition = find_condition(GRID, statuses)
    assert condition is not None
    assert condition.sentence == (
        f"all {statuses.count(Status.FAIL)} failures have padding = 0; "
        f"all {statuses.count(Status.PASS)} passes have padding ≥ 1"
    )
    assert str(condition) == condition.sentence


@pytest.mark.parametrize(("bug_id", "expected"), [("padding-crop-off-by-one", "padding ≥ 1"), ("col2im-assign", None)])
def test_checks_run_for_real_agree_with_the_catalogue(bug_id: str, expected: str | None):
    """Statuses from the checker itself, on a small sweep of a planted bug."""
    bug = bugs.get(bug_id)
    specs = [
        _spec(k, s, p, h=5, w=6, n=1, c_in=2, c_out=2).with_overrides(method=Method.FULL)
        for k, s, p in itertools.product((1, 2, 3), (1, 2), (0, 1, 2))
    ]
    results = [
        run_check(spec, layer=bug.make(spec.shape.stride, spec.shape.padding, spec.activation)) for spec in specs
    ]
    condition = condition_of(results)
    assert condition is not None
    assert _separates(condition, specs, [r.status for r in results])
    assert condition.condition == (expected or "filter_size > stride")


def test_one_value_an_end_a_range_and_all_but_one():
    assert value_shape((0,), (1, 2, 3)) is Shape.VALUE
    assert value_shape((2, 3), (1,)) is Shape.END
    assert value_shape((2, 3), (1, 4)) is Shape.RANGE
    assert value_shape((1, 3, 4), (2,)) is Shape.EXCEPT
    assert value_shape((1, 4), (2, 3, 5)) is None
    assert value_shape(("relu", "tanh"), ("none",)) is Shape.EXCEPT
    assert value_shape(("relu", "tanh"), ("none", "sigmoid")) is None
    assert describe_values("stride", (2, 3), (1,)) == "stride ≥ 2"
    assert describe_values("in_height", (4, 5), (6, 7)) == "in_height ≤ 5"
    assert describe_values("filter_size", (2, 3), (1, 5)) == "2 ≤ filter_size ≤ 3"
    assert describe_values("in_depth", (1, 3, 4), (2,)) == "in_depth ≠ 2"
    assert describe_values("padding", (0, 3), (1, 2, 4)) == "padding ∈ {0, 3}"


def test_a_range_of_one_key():
    specs = [_spec(h=h, w=9) for h in (3, 4, 5, 6, 7)]
    statuses = [Status.FAIL if h in (4, 5) else Status.PASS for h in (3, 4, 5, 6, 7)]
    condition = find_condition(specs, statuses)
    assert condition is not None
    assert condition.sentence == ("both failures have 4 ≤ in_height ≤ 5; all 3 passes have in_height ∈ {3, 6, 7}")


def test_a_relation_between_two_keys():
    specs = [_spec(h=h, w=w) for h, w in itertools.product((4, 5, 6), (4, 5, 6))]
    statuses = [Status.FAIL if s.shape.in_height != s.shape.in_width else Status.PASS for s in specs]
    condition = find_condition(specs, statuses)
    assert condition is not None
    assert condition.atoms == (Relation("in_height", Relop.NE, "in_width"),)
    assert condition.sentence == "all 6 failures have in_height ≠ in_width; all 3 passes have in_height = in_width"


def test_one_key_is_preferred_to_a_relation_that_splits_the_same_way():
    # With filter_size fixed at 3, "filter_size > stride" and "stride ≤ 2" are the same split.
    specs = [_spec(k=3, s=s, p=p) for s, p in itertools.product((1, 2, 3), (0, 1))]
    statuses = [Status.FAIL if s.shape.stride < 3 else Status.PASS for s in specs]
    condition = find_condition(specs, statuses)
    assert condition is not None and condition.atoms == (KeyCondition("stride", (1, 2), (3,), Shape.END),)


def test_no_condition_when_none_separates_exactly():
    # Failures exactly when stride and padding differ in parity: no one or two atoms say that.
    specs = [_spec(k=3, s=s, p=p, h=7, w=7) for s, p in itertools.product((1, 2, 3), (0, 1, 2))]
    statuses = [Status.FAIL if (s.shape.stride + s.shape.padding) % 2 else Status.PASS for s in specs]
    assert find_condition(specs, statuses) is None


def test_nothing_to_say_without_both_classes_or_with_too_few_checks():
    specs = [_spec(p=p) for p in (0, 1, 2, 0)]
    assert find_condition(specs, [Status.PASS] * 4) is None
    assert find_condition(specs, [Status.FAIL] * 4) is None
    assert find_condition(specs[: MIN_CHECKS - 1], [Status.FAIL, Status.PASS, Status.PASS]) is None
    with pytest.raises(ValueError, match="4 specs but 3 statuses"):
        find_condition(specs, [Status.PASS] * 3)


def test_errors_are_left_out_and_counted():
    specs = [_spec(p=p) for p in (0, 0, 1, 2, 1)]
    statuses = [Status.FAIL, Status.FAIL, Status.PASS, Status.PASS, Status.ERROR]
    condition = find_condition(specs, statuses)
    assert condition is not None and condition.left_out == 1
    assert condition.sentence == "both failures have padding = 0; both passes have padding ≥ 1 (1 error not counted)"
    assert condition.to_json() == {
        "condition": "padding = 0",
        "sentence": condition.sentence,
        "failures": 2,
        "passes": 2,
        "left_out": 1,
        "atoms": [{"key": "padding", "values": [0]}],
    }


def test_the_answer_does_not_depend_on_the_order_of_the_checks():
    statuses = _statuses(bugs.get("col2im-row-order"), GRID)
    pairs = list(zip(GRID, statuses, strict=True))
    random.Random(0).shuffle(pairs)
    shuffled = find_condition([p[0] for p in pairs], [p[1] for p in pairs])
    assert shuffled == find_condition(GRID, statuses)


LAYERS = st.builds(
    _spec,
    k=st.integers(1, 3),
    s=st.integers(1, 3),
    p=st.integers(0, 2),
    h=st.integers(3, 6),
    w=st.integers(3, 6),
    n=st.integers(1, 2),
    activation=st.sampled_from(ACTIVATIONS),
)


@given(st.lists(st.tuples(LAYERS, st.sampled_from([Status.PASS, Status.FAIL, Status.ERROR])), max_size=30))
def test_a_returned_condition_really_separates(checks):
    specs, statuses = [c[0] for c in checks], [c[1] for c in checks]
    condition = find_condition(specs, statuses)
    if condition is not None:
        assert _separates(condition, specs, statuses)
        assert len(condition.atoms) in (1, 2)
        assert condition.failures == statuses.count(Status.FAIL)
        assert condition.left_out == statuses.count(Status.ERROR)


@given(st.lists(LAYERS, min_size=MIN_CHECKS, max_size=30), st.sampled_from(["padding", "stride", "filter_size"]))
def test_a_planted_one_value_split_is_always_found(specs, key):
    value = getattr(specs[0].shape, key)
    statuses = [Status.FAIL if getattr(s.shape, key) == value else Status.PASS for s in specs]
    condition = find_condition(specs, statuses)
    if Status.PASS in statuses:
        assert condition is not None and len(condition.atoms) == 1 and _separates(condition, specs, statuses)


# ----------------------------------------------------------------------------------------------------
# The bugs of the whole N-d space: real checks over sweeps of their hyperparameter, and the condition found.


def _nd(kernel=3, stride=1, padding=1, dilation=1, groups=1, size=(7, 8), c_in=4, c_out=4, bias=True) -> CheckSpec:
    shape = ConvShape.nd(1, size, c_in, c_out, kernel, stride, padding, dilation, groups, bias)
    return CheckSpec(f"nd-{shape.describe()}", shape, Activation.NONE, Method.FULL)


def _condition(bug_id: str, specs: list[CheckSpec]) -> SweepCondition | None:
    bug = bugs.get(bug_id)
    results = [run_check(spec, layer=bug.make_for(spec.shape, spec.activation)) for spec in specs]
    assert [r.status is Status.FAIL for r in results] == [bug.exposes(s.shape, s.activation) for s in specs]
    return condition_of(results)


ND_SWEEPS = [
    ("fold-ignores-dilation", [_nd(dilation=d, stride=s) for d in (1, 2, 3) for s in (1, 2)], "dilation ≥ 2"),
    ("dilation-times-stride", [_nd(dilation=d, stride=s) for d in (1, 2) for s in (1, 2)], "dilation = 2"),
    ("kernel-axes-swapped", [_nd(kernel=k) for k in (3, (3, 5), (5, 3), 5, (3, 1), (1, 3))], "kh ≠ kw"),
    ("strides-swapped", [_nd(stride=s) for s in (1, 2, (1, 2), (2, 1), (3, 1))], "stride_h ≠ stride_w"),
    ("groups-mixed-in-dx", [_nd(groups=g, c_out=8, size=z) for g in (1, 2, 4) for z in ((7, 8), (6, 6))], "groups ≥ 2"),
    (
        "depthwise-dx-summed",
        [_nd(groups=g, c_in=c, c_out=c) for c in (2, 4) for g in (1, 2, 4) if c % g == 0],
        "groups ≥ in_depth",  # groups ≤ in_depth always: an order before an equality, as for every relation
    ),
    (
        "padding-cropped-symmetrically",
        [_nd(padding=p) for p in (0, 1, 2, ((0, 1), (1, 1)), ((1, 0), (1, 1)), ((2, 1), (1, 1)), ((1, 1), (1, 1)))],
        "pad_h_before ≠ pad_h_after",
    ),
    ("bias-grad-without-bias", [_nd(bias=b, groups=g) for b in (True, False) for g in (1, 2)], "bias = false"),
]


@pytest.mark.parametrize(("bug_id", "specs", "expected"), ND_SWEEPS, ids=[case[0] for case in ND_SWEEPS])
def test_a_sweep_of_an_nd_bugs_hyperparameter_states_its_condition(bug_id, specs, expected):
    found = _condition(bug_id, specs)
    assert found is not None and found.condition == expected, found


def test_per_axis_keys_appear_only_where_every_check_has_them():
    square, wide = features(_nd(kernel=3, stride=(2, 1))), features(_nd(kernel=(3, 5), stride=2))
    assert square["filter_size"] == square["kh"] == square["kw"] == 3 and "stride" not in square
    assert (square["stride_h"], square["stride_w"]) == (2, 1) and wide["stride"] == 2 and "filter_size" not in wide
    one_d = features(_nd(kernel=3, size=(9,), padding="same"))
    assert "kh" not in one_d and one_d["kw"] == 3 and one_d["dims"] == 1 and one_d["bias"] == "true"
