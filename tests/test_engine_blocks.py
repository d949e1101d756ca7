"""The engine's scans over blocks of output positions change nothing but the memory traffic: estimates with one
block for the whole output equal, bit for bit, those taken over many small blocks."""

from __future__ import annotations

import numpy as np
import pytest

from convcheck import tolerance
from convcheck.layer import MatrixConvLayer
from convcheck.numeric import Engine, reduce
from convcheck.spec import Activation, ConvShape, DType

F64 = tolerance.resolve(DType.FLOAT64)
U64 = tolerance.unit_roundoff(DType.FLOAT64)
FIELDS = ("central", "lo", "hi", "crossed", "noise", "truncation", "measured")
SHAPES = [ConvShape(2, 9, 7, 3, 4, 3, 1, 1), ConvShape(1, 8, 9, 2, 3, 2, 2, 0), ConvShape(2, 6, 6, 2, 1, 3, 1, 2)]


def estimates(shape: ConvShape, activation: Activation) -> list:
    rng = np.random.default_rng(5)
    x, w, b, g = (rng.standard_normal(s) for s in (shape.x_shape, shape.w_shape, shape.b_shape, shape.out_shape))
    layer = MatrixConvLayer(shape.stride, shape.padding, activation)
    analytic = layer.backward(g, layer.forward(x, w, b)[1])
    noise = tolerance.analytic_noise(x, w, b, g, shape.window, U64)
    engine = Engine(layer.output, x, w, b, g, shape, activation, F64.eps, U64)
    found = []
    for tensor in range(3):
        args = (tensor, analytic[tensor], noise[tensor], F64.rtol, F64.atol)
        found += [engine.grouped(*args), engine.entrywise(*args, entries=np.array([0]))]
        found.append(engine.directional(tensor, analytic[tensor], noise[tensor], 2, np.random.default_rng(1)))
    return found


@pytest.mark.parametrize("activation", [Activation.RELU, Activation.TANH, Activation.LEAKY_RELU])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.describe())
def test_one_block_and_many_small_blocks_give_the_same_estimates(
    shape: ConvShape, activation: Activation, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert shape.out_shape[0] * np.prod(shape.out_shape[1:-1]) * shape.out_depth <= reduce.SCAN_BLOCK
    whole = estimates(shape, activation)
    monkeypatch.setattr(reduce, "SCAN_BLOCK", 2 * shape.out_depth)  # two positions per block
    blocks = estimates(shape, activation)
    for one, many in zip(whole, blocks, strict=True):
        for name in FIELDS:
            np.testing.assert_array_equal(getattr(one, name), getattr(many, name), err_msg=f"{one.name} {name}")
