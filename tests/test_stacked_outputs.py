"""``MatrixConvLayer.outputs``, the built-in layer's many perturbed points from one pipeline: each point's output
bit for bit ``output``'s, and the engine's estimates through it the same bytes as through one call per point, over
the whole N-d hyperparameter space, every activation, float64 and float32, kink retries and both step paths."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from convcheck import checker, parallel, reuse, tolerance
from convcheck import layer as layer_module
from convcheck.config import load_text
from convcheck.layer import MatrixConvLayer, stacked_groups
from convcheck.numeric import Engine
from convcheck.numeric import engine as engine_module
from convcheck.numeric.fanout import Point
from convcheck.results import Status, TensorResult
from convcheck.spec import Activation, CheckSpec, ConvShape, DType, Method
from tests.layer_draws import SEED_LIKE, arrays, layer_calls

FIELDS = ("analytic", "central", "lo", "hi", "crossed", "noise", "truncation", "measured", "analytic_noise")
SWEEP_LIKE = ConvShape(4, 12, 16, 6, 8, 4, 2, 1)


@settings(max_examples=60, deadline=None)
@given(**layer_calls(max_size=8), count=st.integers(1, 7), chunk=st.sampled_from([1, 2, 3, None]))
@example(shape=SEED_LIKE, seed=0, activation=Activation.TANH, dtype=DType.FLOAT64, count=5, chunk=2)
def test_each_stacked_point_is_outputs_bit_for_bit(
    shape: ConvShape, seed: int, activation: Activation, dtype: DType, count: int, chunk: int | None
) -> None:
    """Whatever the chunks the points are taken in (``reuse.CHUNK_BYTES``: the room of ``chunk`` input points, so
    one, two or three at a time and the rest in a last chunk; or the default, the whole stack here)."""
    kept = reuse.CHUNK_BYTES
    if chunk is not None:
        layer = MatrixConvLayer.for_shape(shape, activation)
        x, w, _ = arrays(shape, seed, dtype)
        space = reuse.unfolded(layer, x, w)
        reuse.CHUNK_BYTES = chunk * (space.cols.nbytes + space.padded.nbytes + 8 * math.prod(space.out_shape))
    try:
        _each_stacked_point_is_outputs_bit_for_bit(shape, seed, activation, dtype, count)
    finally:
        reuse.CHUNK_BYTES = kept


def _each_stacked_point_is_outputs_bit_for_bit(
    shape: ConvShape, seed: int, activation: Activation, dtype: DType, count: int
) -> None:
    layer = MatrixConvLayer.for_shape(shape, activation)
    params = arrays(shape, seed, dtype)
    rng = np.random.default_rng(seed)
    for tensor, base in enumerate(params):
        if base.size == 0:
            continue
        points = []
        for _ in range(count):
            where = np.sort(rng.choice(base.size, size=int(rng.integers(1, base.size + 1)), replace=False))
            values = (base.reshape(-1)[where] + rng.standard_normal(where.size)).astype(dtype.value)
            points.append(Point(tensor, where, values))
        got = layer.outputs(params, points)
        assert got is not None and len(got) == count
        for point, out in zip(points, got, strict=True):
            changed = [p.copy() for p in params]
            changed[tensor].reshape(-1)[point.where] = point.values
            want = layer.output(*changed)
            # The same layout too: the engine's sums add in the order the strides give.
            assert (out.shape, out.strides, out.dtype) == (want.shape, want.strides, want.dtype)
            assert out.tobytes() == want.tobytes()


def test_outputs_declines_points_of_several_arguments_and_mixed_dtypes() -> None:
    shape = SEED_LIKE
    layer = MatrixConvLayer(1, 1)
    x, w, b = arrays(shape, 1)
    mixed = [Point(0, np.array([0]), x.reshape(-1)[:1] + 1), Point(1, np.array([0]), w.reshape(-1)[:1] + 1)]
    assert layer.outputs([x, w, b], mixed) is None
    one = [Point(1, np.array([0]), w.reshape(-1)[:1] + 1)]
    assert layer.outputs([x, w.astype(np.float32), b], one) is None


def estimates(engine: Engine, shape: ConvShape, layer: MatrixConvLayer, params: list[np.ndarray], g: np.ndarray):
    """Every estimate a check takes: grouped, entrywise (the audit), directional; with a wrong analytic gradient
    (zeros) every crossed entry is retried with the smaller step."""
    x, w, b = params
    analytic = [np.zeros_like(a) for a in layer.backward(g, layer.forward(x, w, b)[1])]
    noise = tolerance.analytic_noise(x, w, b, g, shape.window, engine.unit_roundoff)
    found = []
    for tensor in range(3):
        args = (tensor, analytic[tensor], noise[tensor], 1e-6, 1e-9)
        found.append(engine.grouped(*args))
        found.append(engine.entrywise(*args, entries=np.arange(min(3, params[tensor].size))))
        found.append(engine.directional(tensor, analytic[tensor], noise[tensor], 2, np.random.default_rng(1)))
    return found


@settings(max_examples=40, deadline=None)
@given(
    **layer_calls(max_size=7),
    eps=st.sampled_from([None, 2.0**-3, 0.1]),
    batch=st.integers(1, 9),
    workers=st.sampled_from([1, 2]),
)
@example(shape=SEED_LIKE, seed=0, activation=Activation.RELU, dtype=DType.FLOAT64, eps=2.0**-3, batch=4, workers=1)
@example(shape=SWEEP_LIKE, seed=3, activation=Activation.TANH, dtype=DType.FLOAT64, eps=None, batch=8, workers=2)
def test_the_engine_gives_the_same_estimates_through_outputs_as_one_call_per_point(
    shape: ConvShape, seed: int, activation: Activation, dtype: DType, eps: float | None, batch: int, workers: int
) -> None:
    layer = MatrixConvLayer.for_shape(shape, activation)
    params = arrays(shape, seed, dtype)
    g = np.random.default_rng(seed + 1).standard_normal(shape.out_shape)
    u = tolerance.unit_roundoff(dtype)
    step = tolerance.resolve(dtype).eps if eps is None else eps  # 2^-3 and 0.1: kinks crossed, both step paths
    one_each = Engine(layer.output, *params, g, shape, activation, step, u, workers=workers)
    stacked = Engine(layer.output, *params, g, shape, activation, step, u, many=layer.outputs, batch=batch)
    for want, got in zip(
        estimates(one_each, shape, layer, params, g), estimates(stacked, shape, layer, params, g), strict=True
    ):
        for name in FIELDS:
            assert getattr(got, name).tobytes() == getattr(want, name).tobytes(), f"{want.name} {name}"
    assert stacked.forward_passes == one_each.forward_passes


def test_small_layers_are_stacked_and_large_ones_keep_one_point_per_call() -> None:
    assert stacked_groups(SWEEP_LIKE) >= 2
    assert stacked_groups(ConvShape(2, 9, 7, 3, 4, 3, 1, 1)) == layer_module.STACK_GROUPS
    assert stacked_groups(ConvShape(8, 64, 64, 16, 16, 3, 1, 1)) == 0  # its im2col matrix alone is 9 MiB


SWEEP = """\
checks:
  - name: small
    method: full
    batch: 2
    in_height: 7
    in_width: 6
    in_depth: [2, 3]
    out_depth: 4
    filter_size: [2, 3]
    stride: [1, 2]
    padding: 1
    activation: [relu, tanh, sigmoid]
    dtype: [float64, float32]
"""


def tensor_bytes(result: TensorResult) -> tuple:
    """Every field of a tensor's result, its arrays as bytes."""
    arrays = tuple(None if a is None else a.tobytes() for a in (result.analytic, result.numeric, result.allowed))
    more = tuple(None if a is None else a.tobytes() for a in (result.error, result.kink))
    return (result, *arrays, *more)


@pytest.mark.parametrize("workers", [1, 2])
def test_checks_with_and_without_stacking_give_the_same_results(workers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    specs = load_text(SWEEP).specs
    assert len(specs) == 48 and all(stacked_groups(spec.shape) >= 2 for spec in specs)
    calls, together = [], []
    outputs, exact_many = MatrixConvLayer.outputs, engine_module.exact_many
    monkeypatch.setattr(MatrixConvLayer, "outputs", lambda self, *a: calls.append(1) or outputs(self, *a))

    def reduced(*args):  # type: ignore[no-untyped-def]
        together.append(exact_many(*args))
        return together[-1]

    monkeypatch.setattr(engine_module, "exact_many", reduced)
    stacked = [checker.run_check(spec) for spec in specs]
    assert len(calls) >= len(specs) * 4  # the grouped passes of every tensor and the audit: stacked
    assert sum(found is not None for found in together) >= len(specs) * 2  # and reduced together
    # One call per point, on ``workers`` threads.
    monkeypatch.setattr(layer_module, "STACK_BYTES", 0)
    monkeypatch.setattr(checker.parallel, "engine_workers", lambda layer, shape: workers)
    assert not any(stacked_groups(spec.shape) for spec in specs)
    unstacked = [checker.run_check(spec) for spec in specs]
    for one, two in zip(stacked, unstacked, strict=True):
        assert (one.status, one.forward_passes, one.method) == (two.status, two.forward_passes, two.method)
        assert [tensor_bytes(t) for t in one.gradients] == [tensor_bytes(t) for t in two.gradients]


@pytest.mark.parametrize("most", [2, 5])
def test_results_do_not_depend_on_how_many_groups_a_call_stacks(most: int, monkeypatch: pytest.MonkeyPatch) -> None:
    specs = load_text(SWEEP).specs[::5]
    assert all(stacked_groups(spec.shape) > most for spec in specs)  # the default stacks more than ``most``
    default = [checker.run_check(spec) for spec in specs]
    monkeypatch.setattr(layer_module, "STACK_GROUPS", most)  # other batch boundaries, more calls
    fewer = [checker.run_check(spec) for spec in specs]
    for one, two in zip(default, fewer, strict=True):
        assert (one.status, one.forward_passes, one.method) == (two.status, two.forward_passes, two.method)
        assert [tensor_bytes(t) for t in one.gradients] == [tensor_bytes(t) for t in two.gradients]


@pytest.mark.parametrize(
    ("shape", "method"),
    [
        (ConvShape(2, 12, 16, 6, 8, 3, 1, 1), Method.FULL),
        (ConvShape(4, 16, 16, 6, 8, 5, 1, 1), Method.FULL),
        (ConvShape(4, 24, 24, 8, 16, 3, 1, 1), Method.FULL),
        (ConvShape(4, 24, 32, 16, 16, 3, 1, 1), Method.FULL),
        (ConvShape(4, 24, 32, 16, 16, 3, 1, 1), Method.DIRECTIONAL),
    ],
    ids=["stacked", "stacked-k5", "one point per call", "two threads", "directional side by side"],
)
def test_the_memory_estimate_covers_what_a_check_allocates(monkeypatch, shape: ConvShape, method: Method) -> None:
    for name in parallel.BLAS_THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(parallel, "available_cores", lambda: 2)  # the last two: two threads (engine_workers)
    spec = CheckSpec("memory", shape, method=method)
    tracemalloc.start()  # numpy reports its arrays' memory to tracemalloc
    try:
        result = checker.run_check(spec)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.status is Status.PASS
    assert peak <= checker.estimated_memory(spec)
    assert (layer_module.stacked_bytes(shape) > 0) == (stacked_groups(shape) > 0)
