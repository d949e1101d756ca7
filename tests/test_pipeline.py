"""A user's layer's batches in flight while the engine reduces the batch before: nothing computed changes.

The engine asks ``many`` for batch k+1 before it reduces batch k when ``many`` answers later (a function); the
layer's process measures it meanwhile. Estimates and pass counts equal those of calls one at a time, with and
without the pipeline and for any number of workers; the request in flight is received before any other exchange
with the layer's process, and the outputs the engine reads are never overwritten by the next batch's. The pool's
workers take points in turn from one pipe: every point is evaluated once, however many there are.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from test_fanout import CASES, F64, U64, _assert_same, _direct, _local_many, _problem, fingerprint

from convcheck import parallel, tolerance
from convcheck.checker import run_check
from convcheck.isolation import remote
from convcheck.isolation.check import isolated_check
from convcheck.numeric import Engine
from convcheck.numeric import engine as engine_module
from convcheck.numeric.fanout import Point, evaluate, shared_slots
from convcheck.spec import Activation, ConvShape, Layout

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork and prctl: Linux")


def _later(many, events: list[tuple[str, int]]):
    """``many`` answering later: the request is counted when made, the answer when the engine asks for it."""
    sent = [0]

    def deferred(params, points):
        number = sent[0]
        sent[0] += 1
        events.append(("send", number))
        outputs = many(params, points)

        def answer():
            events.append(("receive", number))
            return outputs

        return answer

    return deferred


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("batch", [1, 2])
def test_an_engine_whose_batches_answer_later_estimates_as_calls_one_at_a_time(monkeypatch, workers, batch):
    shape = ConvShape(2, 6, 5, 2, 3, 3, 1, 1)
    (x, w, b, g), forward, analytic = _problem(shape, Activation.RELU, seed=4)
    noise = tolerance.analytic_noise(x, w, b, g, shape.window, U64)

    def estimates(engine: Engine) -> list[object]:
        found: list[object] = []
        for tensor in range(3):
            found.append(engine.grouped(tensor, analytic[tensor], noise[tensor], F64.rtol, F64.atol))
            rng = np.random.default_rng(5)
            found.append(engine.directional(tensor, analytic[tensor], noise[tensor], 2, rng))
        return found

    one = Engine(forward, x, w, b, g, shape, Activation.RELU, F64.eps, U64)
    expected = estimates(one)
    events: list[tuple[str, int]] = []
    many = _later(_local_many(lambda args: forward(*args), workers, []), events)
    reduce = Engine._reduce
    monkeypatch.setattr(Engine, "_reduce", lambda self, *a: events.append(("reduce", -1)) or reduce(self, *a))
    fed = Engine(forward, x, w, b, g, shape, Activation.RELU, F64.eps, U64, many=many, batch=batch)
    for want, got in zip(expected, estimates(fed), strict=True):
        _assert_same(want, got)
    assert one.forward_passes == fed.forward_passes
    in_flight = 0
    for kind, _ in events:
        in_flight += {"send": 1, "receive": -1}.get(kind, 0)
        assert 0 <= in_flight <= 1  # one request at a time in flight
    overlapped = [k for k in range(len(events) - 1) if events[k][0] == "send" and events[k + 1][0] == "reduce"]
    assert overlapped  # batch k+1 was asked for before batch k was reduced


def test_a_batch_answered_later_that_cannot_be_had_is_measured_with_no_request_in_flight():
    shape = ConvShape(1, 5, 5, 2, 2, 3, 1, 1)
    (x, w, b, g), forward, analytic = _problem(shape, Activation.TANH, seed=6)
    events: list[tuple[str, int]] = []

    def counted(*xwb):
        events.append(("call", 0))
        return forward(*xwb)

    refused = _later(lambda params, points: None, events)
    one = Engine(forward, x, w, b, g, shape, Activation.TANH, F64.eps, U64)
    fed = Engine(counted, x, w, b, g, shape, Activation.TANH, F64.eps, U64, many=refused, batch=2)
    zeros = np.zeros_like(analytic[1])
    _assert_same(one.grouped(1, analytic[1], zeros, 0, 0), fed.grouped(1, analytic[1], zeros, 0, 0))
    assert one.forward_passes == fed.forward_passes
    assert ("send", 1) in events
    in_flight = 0
    for kind, _ in events:
        in_flight += {"send": 1, "receive": -1}.get(kind, 0)
        assert kind != "call" or in_flight == 0
    assert in_flight == 0


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("spec", CASES[:5], ids=lambda s: f"{s.name}-{s.dtype.value}-{s.method.value}")
def test_a_users_layer_checked_with_and_without_the_pipeline_gets_the_in_process_result(monkeypatch, spec, workers):
    monkeypatch.setattr(parallel, "fanout_workers", lambda shape, passes: workers)
    expected = fingerprint(run_check(spec))
    assert fingerprint(isolated_check(spec)) == expected
    original = remote.RemoteLayer.__init__

    def serial(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.pipelined = False

    monkeypatch.setattr(remote.RemoteLayer, "__init__", serial)
    assert fingerprint(isolated_check(spec)) == expected


@pytest.mark.parametrize("workers", [1, 2])
def test_a_request_in_flight_is_received_before_any_other_exchange_and_its_outputs_are_kept(workers):
    spec = CASES[0]
    rng = np.random.default_rng(7)
    params = [rng.standard_normal(s) for s in (spec.shape.x_shape, spec.shape.w_shape, spec.shape.b_shape)]
    points = [Point(k % 2, np.array([k]), np.array([0.5 * k])) for k in range(4)]
    others = [Point(0, np.array([k]), np.array([-2.0 - k])) for k in range(3)]
    with remote.remote_layer(spec, None) as layer:
        layer.forward(*params)  # the layer now knows its output's shape and dtype
        later = layer.forward_many(params, points, workers)
        assert callable(later)
        layer.child_seconds()  # an exchange while the batch is in flight
        first = later()
        again = layer.forward_many(params, others, workers)  # its outputs go to the other block
        assert callable(again)
        second = again()
        assert first is not None and second is not None
        expected = []  # calls one at a time, after both batches
        for point in [*points, *others]:
            args = [p.copy() for p in params]
            args[point.tensor].reshape(-1)[point.where] = point.values
            expected.append(layer.forward(*args)[0])
    for got, want in zip([*first, *second], expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_each_of_many_points_is_taken_by_one_worker_once():
    rng = np.random.default_rng(8)
    base = [rng.standard_normal(3)]
    count = 1300  # more tasks than one write of the tasks pipe holds
    points = [Point(0, np.array([k % 3]), np.array([float(k)])) for k in range(count)]
    forward = lambda args: (args[0].copy(), None)  # noqa: E731
    slots = shared_slots(count, (3,), np.dtype(np.float64))
    assert evaluate(forward, base, points, slots, lambda returned: returned[0], 3)
    for got, want in zip(slots, _direct(forward, base, points), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("spec", [CASES[1], CASES[3], CASES[4]], ids=["nhwc", "nchw", "float32"])
def test_a_users_batches_in_the_engines_layout_are_reduced_together_as_calls_one_at_a_time(monkeypatch, spec):
    """A batch of a layer in the engine's layout (NHWC) comes back as one stack, which the engine reduces in one
    pass (``exact_many``); in another layout it comes back as a list. Either way: the in-process result."""
    expected = fingerprint(run_check(spec))
    together = []
    real = engine_module.exact_many

    def counted(*args, **kwargs):
        together.append(len(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_module, "exact_many", counted)
    assert fingerprint(isolated_check(spec)) == expected
    if spec.layout is Layout.NHWC:
        assert together and max(together) > 1
    else:
        assert not together
