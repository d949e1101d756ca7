"""Both sides of a batch request: the outputs of the user's forward at many perturbed points in one round trip.

The engine's perturbed points differ from one base point in a few entries of one tensor. ``RemoteLayer`` sends the
base arrays once with the changes (``Session.call_later``); the child evaluates every point (``serve_many``, by
``numeric.fanout`` in its own process or on a pool of processes forked from it) and answers with every output in
shared memory, in order. The answer is received when the engine asks for it (``Pending``): meanwhile the engine
reduces the batch before, so the parent's reductions and the child's forwards run on the cores at once. The
parent then treats each output exactly as the answer of one forward call: the same shape check, layout
conversion and forward-point sample, in the same order, so a batch changes neither a verdict nor an estimate.

Anything unexpected in the child (no room, an exception, an output of another shape or dtype than the last one
the parent received, a worker that died) answers ``outputs: None``, and the engine measures that batch one
call at a time, where the problem is reported as it always is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import numpy as np

from convcheck.isolation.channel import Arena, Outgoing, decode_array
from convcheck.numeric.fanout import Batch, Point, Pool

__all__ = ["Pending", "encode_points", "serve_many"]

T = TypeVar("T")


class Pending(Generic[T]):
    """The answer to a request already sent, received once: by ``get`` or, if something else must use the channel
    first, by ``settle`` (``Session.call_later``). While the child and its workers measure one batch, the engine
    reduces the batch before it, on the same cores; the answers come back in the order they were asked for, so
    nothing computed from them changes.

    Args:
        receive: receives the answer and returns what is kept of it (copied out of shared memory: the next
            exchange overwrites it).
    """

    def __init__(self, receive: Callable[[], T]) -> None:
        self._receive: Callable[[], T] | None = receive
        self._value: T | None = None
        self._error: BaseException | None = None

    def settle(self) -> None:
        """Receive the answer now if it has not been; an exception doing so is kept for ``get``."""
        receive, self._receive = self._receive, None
        if receive is not None:
            try:
                self._value = receive()
            except Exception as exc:  # noqa: BLE001 - raised where the answer is asked for (``get``)
                self._error = exc

    def get(self) -> T:
        """What ``receive`` returned (received now if it was not yet), or the exception it raised."""
        self.settle()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set by settle when there was no error


def encode_points(points: list[Point], outgoing: Outgoing) -> dict[str, Any]:
    """The points' description: their tensors and sizes, and every point's index and value arrays one after the
    other in two arrays placed by ``outgoing`` (two arrays a request, not two a point: each costs a description
    to encode and decode)."""
    where = np.concatenate([np.asarray(p.where, dtype=np.int64).reshape(-1) for p in points] or [np.empty(0, np.int64)])
    values = np.concatenate([np.asarray(p.values).reshape(-1) for p in points] or [np.empty(0)])
    return {
        "tensors": [p.tensor for p in points],
        "sizes": [int(np.size(p.where)) for p in points],
        "where": outgoing.array(where),
        "values": outgoing.array(values),
    }


def serve_many(
    request: dict[str, Any],
    blobs: memoryview,
    arena: Arena,
    forward: Callable[..., object],
) -> tuple[dict[str, Any], Outgoing]:
    """The child's answer to a batch request: ``{"kind": "returned", "outputs": description or None}``, the
    description of one array ``(points, *out)`` that stacks the outputs in the points' order.

    ``forward(*args)``: the user's forward with its hyperparameters bound. Every output must have the shape and
    dtype of the request's ``out`` (those of the last output the parent received). With ``workers > 1`` the
    points are evaluated by this process's ``Pool`` (forked at the first such request, kept for the next ones);
    a request whose arrays did not all fit in shared memory is evaluated here (the workers cannot see them).
    """
    outgoing = Outgoing(arena, 1)
    failed = {"kind": "returned", "outputs": None}
    try:
        out = request["out"]
        shape, dtype = tuple(int(n) for n in out["shape"]), np.dtype(str(out["dtype"]))
        count = len(request["points"]["tensors"])
    except (KeyError, TypeError, ValueError):
        return failed, outgoing
    reserved = outgoing.reserve((count, *shape), dtype)
    if reserved is None:
        return failed, outgoing
    slots = reserved[0]
    workers = int(request.get("workers", 1))
    if workers > 1 and count > 1 and not _inline(request):
        message = json.dumps({**request, "slots": slots}).encode()
        ok = _pool(workers, arena, forward).run(message, count)
    else:
        ok = _batch({**request, "slots": slots}, arena, blobs, forward).run(range(count))
    return ({"kind": "returned", "outputs": slots} if ok else failed), outgoing


_pools: dict[int, Pool] = {}  # this process's pool, by worker count (the child serves one check: at most one)


def _pool(workers: int, arena: Arena, forward: Callable[..., object]) -> Pool:
    pool = _pools.get(workers)
    if pool is None or pool.owner != os.getpid():
        pool = _pools[workers] = Pool(workers, lambda message: _batch(json.loads(message), arena, _NO_BLOBS, forward))
    return pool


_NO_BLOBS = memoryview(b"")


def _inline(request: dict[str, Any]) -> bool:
    """Whether any array of the request travelled inline (in the socket's bytes, which only this process has)."""
    metas = [arg["array"] for arg in request.get("args", []) if "array" in arg]
    metas += [request["points"][key] for key in ("where", "values")]
    return any(meta.get("at") != "shared" for meta in metas)


def _batch(request: dict[str, Any], arena: Arena, blobs: memoryview, forward: Callable[..., object]) -> Batch:
    """The batch a request describes (``request["slots"]``: where the outputs go, in this side's half)."""
    base: list[np.ndarray | None] = []
    extra: list[Any] = []
    for arg in request.get("args", []):
        if "array" in arg:
            base.append(decode_array(arg["array"], arena, 0, blobs, copy=False))  # copied for every call
        elif "none" in arg:
            base.append(None)
        else:
            extra.append(arg.get("value"))
    described = request["points"]
    where = decode_array(described["where"], arena, 0, blobs, copy=False)
    values = decode_array(described["values"], arena, 0, blobs, copy=False)
    sizes = np.array(described["sizes"], dtype=np.int64)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    points = [
        Point(int(tensor), where[start:end], values[start:end])
        for tensor, start, end in zip(described["tensors"], starts, ends, strict=True)
    ]
    slots = list(decode_array(request["slots"], arena, 1, blobs, copy=False))
    out = request["out"]
    shape, dtype = tuple(int(n) for n in out["shape"]), np.dtype(str(out["dtype"]))

    def accept(returned: object) -> np.ndarray | None:
        if isinstance(returned, tuple | list) and len(returned) == 2:
            value = returned[0]
            if isinstance(value, np.ndarray) and value.shape == shape and value.dtype == dtype:
                return value
        return None

    return Batch(lambda args: forward(*args, *extra), base, points, slots, accept)
