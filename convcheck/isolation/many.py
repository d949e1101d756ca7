"""Both sides of a batch request: the outputs of the user's forward at many perturbed points in one round trip.

The engine's perturbed points differ from one base point in a few entries of one tensor. ``RemoteLayer`` sends the
base arrays once with the changes (``request_many``); the child evaluates every point (``serve_many``, by
``numeric.fanout`` on one or several processes forked from it) and answers with every output in shared memory,
in order. The parent then treats each output exactly as the answer of one forward call: the same shape check,
layout conversion and forward-point sample, so a batch changes neither a verdict nor an estimate.

Anything unexpected in the child (no room, an exception, an output of another shape or dtype than the last one
the parent received, a worker that died) answers ``outputs: None``, and the engine measures that batch one
call at a time, where the problem is reported as it always is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from convcheck.isolation.channel import Arena, Outgoing, decode_array
from convcheck.numeric.fanout import Point, evaluate

__all__ = ["encode_points", "serve_many"]


def encode_points(points: list[Point], outgoing: Outgoing) -> list[dict[str, Any]]:
    """The points' descriptions, their index and value arrays placed by ``outgoing``."""
    return [{"tensor": p.tensor, "where": outgoing.array(p.where), "values": outgoing.array(p.values)} for p in points]


def serve_many(
    request: dict[str, Any],
    blobs: memoryview,
    arena: Arena,
    forward: Callable[..., object],
) -> tuple[dict[str, Any], Outgoing]:
    """The child's answer to a batch request: ``{"kind": "returned", "outputs": [descriptions] or None}``.

    ``forward(*args)``: the user's forward with its hyperparameters bound. Every output must have the shape and
    dtype of the request's ``out`` (those of the last output the parent received).
    """
    outgoing = Outgoing(arena, 1)
    failed = {"kind": "returned", "outputs": None}
    try:
        out = request["out"]
        shape, dtype = tuple(int(n) for n in out["shape"]), np.dtype(str(out["dtype"]))
    except (KeyError, TypeError, ValueError):
        return failed, outgoing
    base: list[np.ndarray | None] = []
    extra: list[Any] = []
    for arg in request.get("args", []):
        if "array" in arg:
            base.append(decode_array(arg["array"], arena, 0, blobs, copy=False))  # copied for every call
        elif "none" in arg:
            base.append(None)
        else:
            extra.append(arg.get("value"))
    points = [
        Point(
            int(p["tensor"]),
            decode_array(p["where"], arena, 0, blobs, copy=False),
            decode_array(p["values"], arena, 0, blobs, copy=False),
        )
        for p in request.get("points", [])
    ]
    reserved = [outgoing.reserve(shape, dtype) for _ in points]
    if any(r is None for r in reserved):
        return failed, outgoing
    slots = [r[1] for r in reserved if r is not None]

    def accept(returned: object) -> np.ndarray | None:
        if isinstance(returned, tuple | list) and len(returned) == 2:
            out = returned[0]
            if isinstance(out, np.ndarray) and out.shape == shape and out.dtype == dtype:
                return out
        return None

    ok = evaluate(lambda args: forward(*args, *extra), base, points, slots, accept, int(request.get("workers", 1)))
    if not ok:
        return failed, outgoing
    return {"kind": "returned", "outputs": [r[0] for r in reserved if r is not None]}, outgoing
