"""The contract checks: one test per fault kind, each with a fixture implementation that commits it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convcheck import bugs
from convcheck.layer import MatrixConvLayer
from convcheck.results import Finding, FindingKind
from convcheck.spec import Activation, ConvShape, ImplRef, Layout, Signature
from convcheck.user.adapter import UserLayer
from convcheck.user.contract import exercise
from convcheck.user.errors import UserCodeError
from convcheck.user.loader import load_functions

FIXTURES = Path(__file__).parent / "fixtures" / "impls"
SHAPE = ConvShape(batch=2, in_height=5, in_width=6, in_depth=3, out_depth=4, filter_size=3, stride=1, padding=1)


def data(shape: ConvShape = SHAPE) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x (N, H, W, C_in), w (k, k, C_in, C_out), b (C_out,), dout (N, OH, OW, C_out)."""
    rng = np.random.default_rng(1)
    return tuple(rng.standard_normal(s) for s in (shape.x_shape, shape.w_shape, shape.b_shape, shape.out_shape))


def fixture(module: str, layout: Layout = Layout.NHWC, **ref: object) -> UserLayer:
    impl = load_functions(ImplRef(module, base_dir=FIXTURES, **ref))  # type: ignore[arg-type]
    return UserLayer(impl, stride=SHAPE.stride, padding=SHAPE.padding, layout=layout)


def problems_of(layer) -> tuple[Finding, ...]:
    return exercise(layer, *data()).problems


def only(problems: tuple[Finding, ...], kind: FindingKind) -> str:
    """The sentence of the one finding, which must be of ``kind``."""
    assert len(problems) == 1, problems
    assert problems[0].kind is kind, problems[0]
    return str(problems[0])


# -- layers that keep the contract --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [
        MatrixConvLayer(1, 1),
        fixture("good_nhwc.py"),
        fixture("good_nchw.py", Layout.NCHW),
        fixture(
            "good_cs231n.py",
            forward="conv_forward_naive",
            backward="conv_backward_naive",
            signature=Signature.CS231N,
        ),
    ],
    ids=["builtin", "nhwc", "nchw", "cs231n"],
)
def test_correct_layers_keep_the_contract(layer):
    x, w, b, dout = data()
    outcome = exercise(layer, x, w, b, dout)
    assert outcome.ok and outcome.usable
    out, cache = MatrixConvLayer(1, 1).forward(x, w, b)
    assert outcome.out.shape == out.shape and outcome.forward_seconds > 0
    for got, want in zip(outcome.gradients, MatrixConvLayer(1, 1).backward(dout, cache), strict=True):
        assert got.shape == want.shape


def test_exercise_never_modifies_its_arguments():
    x, w, b, dout = data()
    originals = [a.copy() for a in (x, w, b, dout)]
    for module in ("mutates_input.py", "mutates_dout.py", "cache_overwritten.py"):
        exercise(fixture(module), x, w, b, dout)
    for got, original in zip((x, w, b, dout), originals, strict=True):
        np.testing.assert_array_equal(got, original)


# -- shapes -------------------------------------------------------------------------------------------------


def test_wrong_gradient_shape_keeps_the_output_but_no_gradients():
    outcome = exercise(fixture("wrong_db_keepdims.py"), *data())
    assert "db has shape (1, 4)" in only(outcome.problems, FindingKind.SHAPE)
    assert "keepdims=True" in str(outcome.problems[0])
    assert (outcome.problems[0].tensor, outcome.problems[0].shape) == ("db", (1, 4))
    assert outcome.out is not None and outcome.gradients is None


def test_wrong_output_shape_leaves_nothing_usable():
    outcome = exercise(fixture("wrong_out_shape.py"), *data())
    assert "output size is off" in only(outcome.problems, FindingKind.SHAPE)
    assert outcome.out is None and not outcome.usable


def test_wrong_shape_from_a_layer_object_is_reported_in_nhwc():
    class Transposed(MatrixConvLayer):
        def backward(self, dout, cache):
            dx, dw, db = super().backward(dout, cache)
            return dx.transpose(0, 3, 1, 2), dw, db

    found = problems_of(Transposed(1, 1))
    problem = only(found, FindingKind.SHAPE)
    assert "dx has shape (2, 3, 5, 6)" in problem and "NCHW layout" in problem
    assert (found[0].tensor, found[0].shape) == ("dx", (2, 3, 5, 6))


# -- dtypes and values --------------------------------------------------------------------------------------


def test_float32_gradients_from_a_float64_layer_are_a_precision_bug():
    found = problems_of(fixture("float32_grads.py"))
    assert [(p.kind, p.tensor, p.dtype) for p in found] == [
        (FindingKind.LOWER_PRECISION, name, "float32") for name in ("dx", "dw", "db")
    ]
    assert all("float32 although" in str(p) and "float64" in str(p) and "precision bug" in str(p) for p in found)


def test_output_dtype_must_match_the_input():
    class Float32Out(MatrixConvLayer):
        def forward(self, x, w, b):
            out, cache = super().forward(x, w, b)
            return out.astype(np.float32), cache

    problem = only(problems_of(Float32Out(1, 1)), FindingKind.LOWER_PRECISION)
    assert "forward's out is float32 although x is float64" in problem


def test_nan_in_a_gradient_is_counted_and_located():
    problem = only(problems_of(fixture("nan_backward.py")), FindingKind.NOT_FINITE)
    assert problem.startswith("dw contains 81 NaN (of 108 entries")


def test_inf_in_the_output_is_reported():
    problem = only(problems_of(fixture("inf_forward.py")), FindingKind.NOT_FINITE)
    assert problem.startswith("forward's out contains 1 ±Inf")


def test_nan_index_is_given_in_the_users_layout():
    class NanDx(MatrixConvLayer):
        def backward(self, dout, cache):
            dx, dw, db = super().backward(dout, cache)
            dx[1, 2, 3, 0] = np.nan
            return dx, dw, db

    assert "first at [1, 2, 3, 0]" in only(problems_of(NanDx(1, 1)), FindingKind.NOT_FINITE)


# -- arguments modified in place ----------------------------------------------------------------------------


def test_forward_that_modifies_x_in_place():
    problem = only(problems_of(fixture("mutates_input.py")), FindingKind.MODIFIED_ARGUMENT)
    assert problem.startswith("forward modified its argument x in place (180 of 180 entries changed")


def test_backward_that_modifies_dout_in_place():
    problem = only(problems_of(fixture("mutates_dout.py")), FindingKind.MODIFIED_ARGUMENT)
    assert problem.startswith("backward modified its argument dout in place")


def test_backward_that_modifies_the_forward_input_it_cached():
    problem = only(problems_of(fixture("mutates_cached_x.py")), FindingKind.MODIFIED_ARGUMENT)
    assert problem.startswith("backward modified its argument x (kept in its cache from forward) in place")
    assert "in the nhwc layout" in problem


def test_modification_by_a_layer_object_is_located():
    class ModifiesW(MatrixConvLayer):
        def forward(self, x, w, b):
            w[0, 1, 2, 3] += 1.0
            return super().forward(x, w, b)

    problem = only(problems_of(ModifiesW(1, 1)), FindingKind.MODIFIED_ARGUMENT)
    assert "forward modified its argument w in place (1 of 108 entries changed, first at [0, 1, 2, 3])" in problem


# -- caches that do not survive use -------------------------------------------------------------------------


def test_gradient_buffers_that_accumulate_across_calls():
    # The fixture's buffer is module state: other tests in this process may have used it already.
    found = problems_of(fixture("accumulates.py"))
    assert len(found) == 1 and found[0].kind in (FindingKind.REPEAT_ACCUMULATES, FindingKind.REPEAT_DIFFERS)
    assert "second backward call on the same cache returned a different dw" in str(found[0])

    accumulates = bugs.get("weights-accumulate").make(SHAPE.stride, SHAPE.padding, Activation.RELU)
    problem = only(problems_of(accumulates), FindingKind.REPEAT_ACCUMULATES)
    assert "a different dw" in problem and "exactly twice the first" in problem


def test_backward_that_overwrites_its_cache():
    problem = only(problems_of(fixture("cache_overwritten.py")), FindingKind.REPEAT_DIFFERS)
    assert "second backward call on the same cache returned a different dx" in problem
    assert "modified something in the cache in place" in problem


def test_backward_that_consumes_its_cache():
    problem = only(problems_of(fixture("consumes_cache.py")), FindingKind.REPEAT_FAILED)
    assert "a second backward call on the same cache failed, although the first call worked" in problem
    assert "KeyError" in problem


def test_state_kept_outside_the_cache():
    problem = only(problems_of(fixture("global_state.py")), FindingKind.STATE_OUTSIDE_CACHE)
    assert "after another forward call" in problem and "keeps state outside the cache" in problem


def test_output_buffer_reused_across_forward_calls():
    class ReusesOutput(MatrixConvLayer):
        buffer = None

        def forward(self, x, w, b):
            out, cache = super().forward(x, w, b)
            if ReusesOutput.buffer is None:
                ReusesOutput.buffer = out
            ReusesOutput.buffer[...] = out
            return ReusesOutput.buffer, cache

    assert "forward reuses its output array" in only(problems_of(ReusesOutput(1, 1)), FindingKind.OUTPUT_REUSED)


def test_output_buffer_reused_by_a_user_layer_is_found_although_the_adapter_copies_it():
    """UserLayer copies every output it hands on, so the buffer is seen only as the user's forward returned it."""
    problem = only(problems_of(fixture("reuses_output.py")), FindingKind.OUTPUT_REUSED)
    assert "forward reuses its output array" in problem


def test_a_user_layer_returning_fresh_outputs_is_not_accused_of_reusing_them():
    assert problems_of(fixture("good_nhwc.py")) == ()


# -- user exceptions propagate ------------------------------------------------------------------------------


@pytest.mark.parametrize(("module", "role"), [("raises_forward.py", "forward"), ("raises_backward.py", "backward")])
def test_exceptions_in_the_first_calls_propagate(module, role):
    with pytest.raises(UserCodeError) as info:
        exercise(fixture(module), *data())
    assert info.value.role == role


def test_bit_equality_is_only_a_fast_path_of_equality_with_nan_equal():
    """``bits.same_bits`` says True only where ``np.array_equal(equal_nan=True)`` does; where it says False
    (-0.0 against 0.0, NaNs with different payloads, other dtypes or layouts) the callers ask that."""
    from convcheck.bits import same_bits
    from convcheck.user.adapter import modification

    a = np.array([1.0, np.nan, 0.0, -2.5])
    assert same_bits(a, a.copy()) and modification(a, a.copy()) is None
    signed = np.array([1.0, np.nan, -0.0, -2.5])
    payload = a.copy()
    payload.view(np.uint64)[1] ^= 1  # another NaN
    for other in (signed, payload, a.astype(np.float32), np.asfortranarray(np.stack([a, a]))[0]):
        assert not same_bits(a, other) or np.array_equal(a, other, equal_nan=True)
    assert not same_bits(a, signed) and modification(a, signed) is None  # equal, so not a modification
    assert not same_bits(a, payload) and modification(a, payload) is None
    changed = a.copy()
    changed[3] = 7.0
    assert not same_bits(a, changed) and modification(changed, a) is not None


def test_first_output_is_handed_on_before_the_backward_calls_and_only_when_usable():
    """``exercise``'s ``first_output`` gets the first forward's output (what it returns as ``out``) before any
    backward call, once; a forward whose output is unusable hands on nothing."""
    calls: list[str] = []

    class Traced(MatrixConvLayer):
        def forward(self, x, w, b):
            calls.append("forward")
            return super().forward(x, w, b)

        def backward(self, dout, cache):
            calls.append("backward")
            return super().backward(dout, cache)

    handed: list[np.ndarray] = []

    def first_output(out: np.ndarray) -> None:
        calls.append("handed")
        handed.append(out)

    outcome = exercise(Traced(1, 1, Activation.RELU), *data(), first_output=first_output)
    assert calls[:3] == ["forward", "handed", "backward"] and calls.count("handed") == 1
    assert handed[0] is outcome.out

    class WrongShape(MatrixConvLayer):
        def forward(self, x, w, b):
            out, cache = super().forward(x, w, b)
            return out[:, 1:], cache

    handed.clear()
    outcome = exercise(WrongShape(1, 1, Activation.RELU), *data(), first_output=handed.append)
    assert outcome.out is None and handed == []
