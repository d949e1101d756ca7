"""Batches of forward passes, on one process or several forked ones, change nothing but the wall time.

``numeric.fanout.evaluate`` returns each point's output exactly as a call of its own would; the engine fed by
batches (``Engine(many=…)``) gives the estimates and pass counts of the engine that calls forward one point at a
time, bit for bit, for any number of worker processes; and a user's layer checked in its own process with its
batches on several processes gives the verdicts and figures of the check made in this process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from convcheck import methods, parallel, tolerance
from convcheck.checker import run_check
from convcheck.isolation import remote
from convcheck.isolation.check import isolated_check
from convcheck.layer import MatrixConvLayer
from convcheck.numeric import Engine, NotLocalError
from convcheck.numeric.fanout import Batch, Point, Pool, evaluate, shared_slots
from convcheck.results import CheckResult
from convcheck.spec import Activation, CheckSpec, ConvShape, DType, ImplRef, Layout, Method

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork and prctl: Linux")

F64 = tolerance.resolve(DType.FLOAT64)
U64 = tolerance.unit_roundoff(DType.FLOAT64)
FIELDS = ("central", "lo", "hi", "crossed", "noise", "truncation", "measured", "analytic")
IMPLS = Path(__file__).parent / "fixtures" / "impls"


def _points(rng: np.random.Generator, base: list[np.ndarray], count: int) -> list[Point]:
    points = []
    for k in range(count):
        tensor = k % len(base)
        where = rng.choice(base[tensor].size, size=min(3, base[tensor].size), replace=False)
        points.append(Point(tensor, where, rng.standard_normal(where.size)))
    return points


def _layer_forward(activation: Activation = Activation.TANH):
    layer = MatrixConvLayer(1, 1, activation)
    return lambda args: (layer.forward(*args)[0], "cache")


def _direct(forward, base, points) -> list[np.ndarray]:
    outputs = []
    for point in points:
        args = [a.copy() for a in base]
        args[point.tensor].reshape(-1)[point.where] = point.values
        outputs.append(forward(args)[0])
    return outputs


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_each_output_is_the_one_a_call_of_its_own_returns(workers: int):
    rng = np.random.default_rng(0)
    shape = ConvShape(2, 5, 6, 3, 4, 3, 1, 1)
    base = [rng.standard_normal(s) for s in (shape.x_shape, shape.w_shape, shape.b_shape)]
    points = _points(rng, base, 7)
    forward = _layer_forward()
    slots = shared_slots(len(points), shape.out_shape, np.dtype(np.float64))
    assert evaluate(forward, base, points, slots, lambda returned: returned[0], workers)
    for got, expected in zip(slots, _direct(forward, base, points), strict=True):
        np.testing.assert_array_equal(got, expected)


def _fails_at(call: int, how: str):
    """A forward that misbehaves at its ``call``-th point (counted from the base point's sum, so in any process)."""

    def forward(args):
        if round(float(args[0].reshape(-1)[0])) == call:
            if how == "raise":
                raise RuntimeError("the user's forward failed")
            if how == "exit":
                os._exit(3)
            return "not an array", None
        return args[0] * 2.0, None

    return forward


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("how", ["raise", "exit", "return"])
def test_any_trouble_in_any_point_fails_the_batch_and_leaves_no_process_behind(monkeypatch, workers, how):
    forked = _record_forks(monkeypatch)
    if how == "exit" and workers == 1:
        pytest.skip("os._exit in this process would end the test run (the layer's process ends then)")
    base = [np.zeros(4)]
    points = [Point(0, np.array([0]), np.array([float(k)])) for k in range(5)]
    slots = shared_slots(len(points), (4,), np.dtype(np.float64))

    def accept(returned):
        out = returned[0]
        return out if isinstance(out, np.ndarray) else None

    assert not evaluate(_fails_at(3, how), base, points, slots, accept, workers)
    assert evaluate(_fails_at(99, how), base, points, slots, accept, workers)
    assert len(forked) == (0 if workers == 1 else 2 * workers)
    _assert_reaped(forked)


def _record_forks(monkeypatch) -> list[int]:
    """The process ids ``os.fork`` returns in this process from now on (the test's)."""
    forked: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid:
            forked.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    return forked


def _assert_reaped(pids: list[int]) -> None:
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # no such child any more: it ended and was reaped


def test_a_pool_serves_every_batch_with_the_workers_it_forked_once_and_replaces_a_dead_one(monkeypatch):
    forked = _record_forks(monkeypatch)
    base = [np.zeros(4)]
    slots = shared_slots(4, (4,), np.dtype(np.float64))

    def batch_of(message: bytes) -> Batch:
        fails_at = int(message.decode())
        points = [Point(0, np.array([0]), np.array([float(k)])) for k in range(4)]
        return Batch(_fails_at(fails_at, "exit"), base, points, slots, lambda returned: returned[0])

    pool = Pool(2, batch_of)
    try:
        assert pool.run(b"99", 4)
        workers = pool.pids
        assert len(workers) == 2
        for k, slot in enumerate(slots):
            np.testing.assert_array_equal(slot, np.array([2.0 * k, 0, 0, 0]))
        assert pool.run(b"98", 4) and pool.pids == workers  # the same processes
        assert not pool.run(b"2", 4)  # one worker died: the batch failed, the pool ended
        assert pool.pids == ()
        assert pool.run(b"99", 4) and len(pool.pids) == 2 and set(pool.pids).isdisjoint(workers)
    finally:
        pool.close()
    assert len(forked) == 4
    _assert_reaped(forked)


def _local_many(forward, workers: int, calls: list[int]):
    """A ``ManyFn`` evaluating in this process (or workers forked from it) with fresh shared slots."""

    def many(params, points):
        calls.append(len(points))
        out_shape = forward(list(params)).shape
        slots = shared_slots(len(points), out_shape, np.dtype(np.float64))
        ok = evaluate(lambda args: (forward(args), None), params, points, slots, lambda r: r[0], workers)
        outputs = [s.copy() for s in slots] if ok else None
        return outputs

    return many


@pytest.mark.parametrize("activation", [Activation.RELU, Activation.TANH])
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("batch", [1, 3])
def test_the_engine_fed_by_batches_gives_the_estimates_of_calls_one_at_a_time(activation, workers, batch):
    shape = ConvShape(2, 7, 6, 3, 4, 3, 1, 1)
    (x, w, b, g), forward, analytic = _problem(shape, activation, seed=1)
    noise = tolerance.analytic_noise(x, w, b, g, shape.window, U64)
    calls: list[int] = []
    many = _local_many(lambda args: forward(*args), workers, calls)
    one = Engine(forward, x, w, b, g, shape, activation, F64.eps, U64)
    fed = Engine(forward, x, w, b, g, shape, activation, F64.eps, U64, many=many, batch=batch)
    for tensor in range(3):
        args = (tensor, analytic[tensor], noise[tensor], F64.rtol, F64.atol)
        _assert_same(one.grouped(*args), fed.grouped(*args))
        picked = np.array([0, 2])
        _assert_same(one.entrywise(*args, entries=picked), fed.entrywise(*args, entries=picked))
        rngs = (np.random.default_rng(3), np.random.default_rng(3))
        _assert_same(
            one.directional(tensor, analytic[tensor], noise[tensor], 3, rngs[0]),
            fed.directional(tensor, analytic[tensor], noise[tensor], 3, rngs[1]),
        )
    assert one.forward_passes == fed.forward_passes
    assert calls and max(calls) == 2 * batch  # the batches were used, two points per group


def test_a_batch_that_cannot_be_had_is_measured_one_call_at_a_time():
    shape = ConvShape(1, 5, 5, 2, 2, 3, 1, 1)
    (x, w, b, g), forward, analytic = _problem(shape, Activation.TANH, seed=2)
    refused: list[int] = []
    one = Engine(forward, x, w, b, g, shape, Activation.TANH, F64.eps, U64)
    fed = Engine(
        forward, x, w, b, g, shape, Activation.TANH, F64.eps, U64, many=lambda p, pts: refused.append(1), batch=4
    )
    zeros = np.zeros_like(analytic[1])
    _assert_same(one.grouped(1, analytic[1], zeros, F64.rtol, F64.atol), fed.grouped(1, analytic[1], zeros, 0, 0))
    assert refused and one.forward_passes == fed.forward_passes


def _problem(shape: ConvShape, activation: Activation, seed: int):
    """Random ``(x, w, b, G)``, the built-in layer's forward (the output only) and its analytic gradients."""
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s) for s in (shape.x_shape, shape.w_shape, shape.b_shape, shape.out_shape)]
    layer = MatrixConvLayer(shape.stride, shape.padding, activation)
    return arrays, lambda *xwb: layer.forward(*xwb)[0], layer.backward(arrays[3], layer.forward(*arrays[:3])[1])


def _assert_same(a, b) -> None:
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


# -- a user's layer in its own process ---------------------------------------------------------------------------


SHAPE = ConvShape(batch=2, in_height=6, in_width=5, in_depth=2, out_depth=3, filter_size=3, stride=1, padding=1)


def _spec(module: str, **options: object) -> CheckSpec:
    return CheckSpec(module, SHAPE, impl=ImplRef(module, base_dir=IMPLS), timeout=60.0, **options)  # type: ignore[arg-type]


def fingerprint(result: CheckResult) -> tuple[object, ...]:
    grads = tuple(
        (
            g.name,
            g.passed,
            g.max_abs_error,
            g.max_rel_error,
            g.checked,
            g.kinks,
            g.worst,
            *map(_bytes, (g.numeric, g.allowed)),
        )
        for g in result.gradients
    )
    forward = None if result.forward is None else (result.forward.ok, result.forward.max_abs_error)
    notes = tuple(n.kind for n in result.notes)  # (auto's note quotes a measured time)
    return result.status, result.error, grads, forward, tuple(str(p) for p in result.contract), notes


def _bytes(array: np.ndarray | None) -> bytes | None:
    return None if array is None else array.tobytes()


CASES = [
    _spec("good_nhwc.py"),
    _spec("good_nhwc.py", method=Method.FULL),
    _spec("good_nhwc.py", activation=Activation.RELU, method=Method.DIRECTIONAL),
    _spec("good_nchw.py", layout=Layout.NCHW, activation=Activation.RELU),
    _spec("good_nhwc.py", dtype=DType.FLOAT32),
    _spec("flipped_kernel.py"),
    _spec("global_state.py"),
    _spec("raises_forward.py"),
    _spec("wrong_out_shape.py"),
]


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("spec", CASES, ids=lambda s: f"{s.name}-{s.dtype.value}-{s.method.value}")
def test_a_users_layer_measured_by_batches_on_several_processes_gets_the_in_process_result(monkeypatch, spec, workers):
    monkeypatch.setattr(parallel, "fanout_workers", lambda shape, passes: workers)
    used: list[bool] = []
    original = remote.RemoteLayer.forward_many

    def watched(self, *args, **kwargs):
        outputs = original(self, *args, **kwargs)
        used.append(outputs is not None)
        return outputs

    monkeypatch.setattr(remote.RemoteLayer, "forward_many", watched)
    isolated = isolated_check(spec)
    assert fingerprint(isolated) == fingerprint(run_check(spec))
    if isolated.gradients:
        assert any(used)  # the check did go through batches


def test_the_forward_point_sample_keeps_the_same_calls_with_batches(monkeypatch):
    spec = _spec("good_nhwc.py")
    samples = []
    original = remote.RemoteLayer.forward_many

    for batched in (False, True):
        if batched:
            monkeypatch.setattr(remote.RemoteLayer, "forward_many", original, raising=False)
        else:
            monkeypatch.delattr(remote.RemoteLayer, "forward_many")
        with remote.remote_layer(spec, None) as layer:
            run_check(spec, layer=layer)
            assert layer.points is not None
            samples.append([(p.number, p.x.tobytes(), p.w.tobytes(), p.out.tobytes()) for p in layer.points.points])
    assert samples[0] == samples[1]


# -- what a check has already computed, reused --------------------------------------------------------------------


@pytest.mark.parametrize("activation", [Activation.RELU, Activation.TANH])
def test_an_engine_given_the_output_and_magnitude_at_the_point_estimates_as_one_computing_them(activation):
    from convcheck import reference

    shape = ConvShape(2, 6, 7, 3, 4, 3, 2, 1)
    (x, w, b, g), forward, analytic = _problem(shape, activation, seed=4)
    noise = tolerance.analytic_noise(x, w, b, g, shape.window, U64)
    given = {"base": forward(x.copy(), w.copy(), b.copy()), "magnitude": reference.magnitude(x, w, b, shape.window)}
    fresh = Engine(forward, x, w, b, g, shape, activation, F64.eps, U64)
    reused = Engine(forward, x, w, b, g, shape, activation, F64.eps, U64, **given)
    np.testing.assert_array_equal(fresh.f0, reused.f0)
    for tensor in range(3):
        args = (tensor, analytic[tensor], noise[tensor], F64.rtol, F64.atol)
        _assert_same(fresh.grouped(*args), reused.grouped(*args))
        rngs = (np.random.default_rng(5), np.random.default_rng(5))
        _assert_same(
            fresh.directional(tensor, analytic[tensor], noise[tensor], 4, rngs[0]),
            reused.directional(tensor, analytic[tensor], noise[tensor], 4, rngs[1]),
        )
    assert fresh.forward_passes == reused.forward_passes  # the output given counts as the pass it was


def test_an_engine_given_an_output_that_a_second_call_does_not_repeat_refuses_the_forward():
    shape = ConvShape(1, 5, 5, 2, 2, 3, 1, 1)
    (x, w, b, g), forward, _ = _problem(shape, Activation.TANH, seed=6)
    with pytest.raises(NotLocalError, match="not deterministic"):
        Engine(forward, x, w, b, g, shape, Activation.TANH, F64.eps, U64, base=forward(x, w, b) + 1e-9)


def test_a_large_users_layer_fans_out_to_the_cores_its_process_may_use(monkeypatch):
    large, small = ConvShape(8, 32, 48, 16, 32, 3, 1, 1), ConvShape(2, 5, 6, 2, 3, 3, 1, 1)
    for name in (*parallel.BLAS_THREAD_VARIABLES, parallel.CORES_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(parallel, "available_cores", lambda: 4)
    passes = 678  # the seed layer's full check
    assert parallel.fanout_workers(large, passes) == 4 and parallel.fanout_workers(small, passes) == 1
    assert parallel.fanout_workers(large, parallel.FANOUT_MIN_PASSES - 1) == 1  # a quick check's few passes
    with parallel.one_blas_thread_environment(2):  # the one worker of --jobs 1 on two of the four cores
        assert parallel.fanout_workers(large, passes) == 2 and parallel.fanout_workers(small, passes) == 1
    with parallel.one_blas_thread_environment():  # a worker of --jobs N beside others
        assert parallel.fanout_workers(large, passes) == 1
    assert parallel.CORES_VARIABLE not in os.environ and parallel.fanout_workers(large, passes) == 4
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")  # held to one thread by someone else (a Dask worker)
    assert parallel.fanout_workers(large, passes) == 1


@pytest.mark.parametrize(("method", "fans_out"), [(Method.DIRECTIONAL, False), (Method.SAMPLED, True)])
def test_a_check_of_few_passes_evaluates_its_batches_in_the_layers_own_process(monkeypatch, method, fans_out):
    """A large layer fans out to every core, but not for a check that plans fewer than ``FANOUT_MIN_PASSES``
    passes (the quick tier: the pool's start costs more than it saves there)."""
    for name in (*parallel.BLAS_THREAD_VARIABLES, parallel.CORES_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(parallel, "available_cores", lambda: 2)
    monkeypatch.setattr(parallel, "FANOUT_MIN_MACS", 0)  # this small layer counts as large
    asked: list[int] = []
    original = remote.RemoteLayer.forward_many

    def watched(self, *args, **kwargs):
        asked.append(kwargs["workers"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(remote.RemoteLayer, "forward_many", watched)
    spec = _spec("good_nhwc.py", activation=Activation.RELU, method=method)
    assert (methods.planned_passes(spec)[1] >= parallel.FANOUT_MIN_PASSES) is fans_out
    isolated = isolated_check(spec)
    assert isolated.status.value == "pass", isolated.error
    assert asked and set(asked) == {2 if fans_out else 1}


def test_a_batch_too_large_for_shared_memory_is_measured_one_call_at_a_time():
    # Directional points change all of x: 8 of them need far more room than this layer's small output reserves.
    example = Path(__file__).parent.parent / "examples" / "im2col_nhwc.py"
    shape = ConvShape(batch=2, in_height=60, in_width=60, in_depth=8, out_depth=2, filter_size=3, stride=5, padding=1)
    spec = CheckSpec("wide", shape, method=Method.DIRECTIONAL, impl=ImplRef(str(example)), timeout=60.0)
    isolated = isolated_check(spec)
    assert isolated.status.value == "pass", isolated.error
    assert fingerprint(isolated) == fingerprint(run_check(spec))
