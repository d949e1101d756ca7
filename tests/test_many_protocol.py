"""A batch request's points and its answer's outputs as they cross between a check and its layer's process.

The points travel as two arrays (every point's indices, then every point's values) and their tensors and sizes;
the outputs come back as one array stacking them. Both directions give back exactly what was sent, and the check
refuses an answer that is not a stack.
"""

from __future__ import annotations

import numpy as np
import pytest

from convcheck.isolation.channel import Arena, Outgoing, ProtocolViolation, decode_array
from convcheck.isolation.many import _batch, encode_points, serve_many
from convcheck.isolation.remote import _Block
from convcheck.numeric.fanout import Point


class _Session:
    """What ``_Block.read`` uses of a session: decoding a description in the arena."""

    def __init__(self, arena: Arena) -> None:
        self.arena = arena

    def array(self, meta, blobs, *, copy=True):
        return decode_array(meta, self.arena, 1, blobs, copy=copy)


def _points(dtype) -> list[Point]:
    rng = np.random.default_rng(3)
    return [
        Point(0, np.array([1, 5, 7]), rng.standard_normal(3).astype(dtype)),
        Point(1, np.array([0]), rng.standard_normal(1).astype(dtype)),
        Point(0, np.array([], dtype=np.int64), np.array([], dtype=dtype)),
        Point(2, np.array([2, 3]), rng.standard_normal(2).astype(dtype)),
    ]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_points_of_a_request_are_decoded_as_they_were_sent(dtype) -> None:
    arena = Arena(1 << 16)
    sent = _points(dtype)
    request = {"args": [], "points": encode_points(sent, Outgoing(arena, 0)), "slots": None}
    request["slots"] = Outgoing(arena, 1).reserve((len(sent), 2), np.dtype(np.float64))[0]
    request["out"] = {"shape": [2], "dtype": "<f8"}
    got = _batch(request, arena, memoryview(b""), lambda *a: None).points
    assert [p.tensor for p in got] == [p.tensor for p in sent]
    for a, b in zip(got, sent, strict=True):
        assert a.where.tolist() == b.where.tolist()
        assert a.values.dtype == b.values.dtype and a.values.tobytes() == b.values.tobytes()


def test_a_batch_is_answered_with_one_stack_of_its_outputs_in_the_points_order() -> None:
    arena = Arena(1 << 16)
    base = [np.zeros(8), np.zeros(3), np.zeros(4)]
    outgoing = Outgoing(arena, 0)
    args = [{"array": outgoing.array(a)} for a in base]
    points = encode_points(_points(np.float64), outgoing)
    request = {"args": args, "points": points, "out": {"shape": [3], "dtype": "<f8"}}

    def forward(x, w, b):  # each output tells which entries the point changed
        return np.array([x.sum(), w.sum(), b.sum()]), None

    reply, _ = serve_many(request, memoryview(b""), arena, forward)
    stack = _Block().read(_Session(arena), reply, memoryview(b""))
    assert stack is not None and stack.shape == (4, 3)
    for row, point in zip(stack, _points(np.float64), strict=True):
        arrays = [a.copy() for a in base]
        arrays[point.tensor][point.where] = point.values
        np.testing.assert_array_equal(row, forward(*arrays)[0])


def test_an_answer_that_is_no_stack_or_lies_outside_the_layers_memory_is_refused() -> None:
    arena = Arena(1 << 12)
    session = _Session(arena)
    scalar = Outgoing(arena, 1).reserve((), np.dtype(np.float64))[0]
    assert _Block().read(session, {"outputs": scalar}, memoryview(b"")) is None
    assert _Block().read(session, {"outputs": None}, memoryview(b"")) is None
    outside = {**scalar, "offset": 0}  # the check's own half
    with pytest.raises(ProtocolViolation):
        _Block().read(session, {"outputs": outside}, memoryview(b""))
