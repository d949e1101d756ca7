"""``MatrixConvLayer.output``, the engine's path to the built-in layer: ``forward``'s output bit for bit, however
the input changes between calls, on any thread, and the same estimates as differencing through ``forward``."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import example, given, settings

from convcheck import bugs, tolerance
from convcheck.bugs.forward import ForwardMissingBias
from convcheck.bugs.stepwise import StepwiseLayer
from convcheck.layer import MatrixConvLayer, output_function
from convcheck.numeric import Engine
from convcheck.spec import Activation, ConvShape, DType
from tests.layer_draws import SEED_LIKE, arrays, layer_calls

F64 = tolerance.resolve(DType.FLOAT64)
U64 = tolerance.unit_roundoff(DType.FLOAT64)
FIELDS = ("central", "lo", "hi", "crossed", "noise", "truncation", "measured")


def assert_bits(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    assert got.tobytes() == want.tobytes()


@settings(max_examples=60, deadline=None)
@given(**layer_calls(max_size=8))
@example(shape=SEED_LIKE, seed=0, activation=Activation.RELU, dtype=DType.FLOAT64)
@example(shape=ConvShape(1, 5, 5, 2, 3, 1, 2, 0), seed=1, activation=Activation.TANH, dtype=DType.FLOAT64)
def test_output_is_forwards_output_bit_for_bit_as_the_arrays_change_in_place(
    shape: ConvShape, seed: int, activation: Activation, dtype: DType
) -> None:
    layer = MatrixConvLayer.for_shape(shape, activation)
    x, w, b = arrays(shape, seed, dtype)
    outputs = []
    # The engine's pattern: the same arrays, changed in place: x, then w, then b, then x back.
    for change in (None, (x, 0), (w, -1), (b, 0), (x, 0), (x, -1)):
        if change is not None and change[0].size:
            change[0].reshape(-1)[change[1]] += change[0].dtype.type(0.25)
        got = layer.output(x, w, b)
        assert_bits(got, layer.forward(x, w, b)[0])
        outputs.append(got)
    assert len({id(out) for out in outputs}) == len(outputs)  # every call hands back an array of its own


def test_output_follows_a_change_of_geometry_dtype_or_a_non_contiguous_input() -> None:
    small, other = ConvShape(1, 6, 6, 2, 3, 3, 1, 1), ConvShape(2, 5, 7, 2, 3, 2, 2, 0)
    f64, f32 = DType.FLOAT64, DType.FLOAT32
    for shape, dtype in ((small, f64), (other, f64), (small, f32), (small, f64)):
        layer = MatrixConvLayer.for_shape(shape)
        x, w, b = arrays(shape, 3, dtype)
        assert_bits(layer.output(x, w, b), layer.forward(x, w, b)[0])
    x, w, b = arrays(small, 4)
    strided = np.repeat(x, 2, axis=-1)[..., ::2]  # the same values, not C-contiguous
    assert_bits(MatrixConvLayer(1, 1).output(strided, w, b), MatrixConvLayer(1, 1).forward(x, w, b)[0])


def test_output_on_two_threads_at_once_gives_each_its_own_inputs_output() -> None:
    layer = MatrixConvLayer(1, 1)
    shape = SEED_LIKE
    failures: list[str] = []

    def run(seed: int) -> None:
        x, w, b = arrays(shape, seed)
        for step in range(40):
            x.reshape(-1)[step % x.size] += 0.5
            if layer.output(x, w, b).tobytes() != layer.forward(x, w, b)[0].tobytes():
                failures.append(f"thread {seed}, call {step}")

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_output_function_is_output_only_where_forward_is_the_built_in_one() -> None:
    built_in, stepwise = MatrixConvLayer(1, 1), StepwiseLayer(1, 1)
    assert output_function(built_in) == built_in.output
    assert output_function(stepwise) == stepwise.output  # changes backward only
    assert output_function(ForwardMissingBias(1, 1)) is None
    assert output_function(object()) is None
    for bug in bugs.CATALOGUE:  # the planted bugs in a forward are differenced through that forward
        layer = bug.layer(stride=1, padding=1)
        own = type(layer).forward is not MatrixConvLayer.forward
        assert (output_function(layer) is None) == own, bug.id


@pytest.mark.parametrize("activation", [Activation.RELU, Activation.TANH])
@pytest.mark.parametrize("shape", [SEED_LIKE, ConvShape(1, 8, 9, 2, 3, 2, 2, 0)], ids=lambda s: s.describe())
@pytest.mark.parametrize("workers", [1, 2])
def test_the_engine_gives_the_same_estimates_through_output_as_through_forward(
    shape: ConvShape, activation: Activation, workers: int
) -> None:
    x, w, b = arrays(shape, 0)
    g = np.random.default_rng(9).standard_normal(shape.out_shape)
    layer = MatrixConvLayer(shape.stride, shape.padding, activation)
    analytic = layer.backward(g, layer.forward(x, w, b)[1])
    noise = tolerance.analytic_noise(x, w, b, g, shape.window, U64)
    through_forward, through_output = (
        Engine(fn, x, w, b, g, shape, activation, F64.eps, U64, workers=workers)
        for fn in (lambda *a: layer.forward(*a)[0], layer.output)
    )
    for tensor in range(3):
        args = (tensor, analytic[tensor], noise[tensor], F64.rtol, F64.atol)
        one, two = through_forward.grouped(*args), through_output.grouped(*args)
        for name in FIELDS:
            np.testing.assert_array_equal(getattr(one, name), getattr(two, name), err_msg=name)
    assert through_forward.forward_passes == through_output.forward_passes
