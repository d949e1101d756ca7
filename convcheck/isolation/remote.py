"""``RemoteLayer``: a ``UserLayer`` whose two user functions run in a ``Session``'s child (``isolation.session``).

Layouts, shape checks, in-place audits and the contract's messages all happen on this side, as for a layer in
one process: the arrays handed to the user's functions go through shared memory, what they return comes back as
raw arrays (or descriptions), caches stay in the child as numbered handles (``session.RemoteCache``), and
in-place changes the user's code makes to its arguments are copied back onto the arrays this side handed over.
The engine's perturbed points go by batches (``forward_many``, ``isolation.many``), and single calls are
predicted and sent ahead (``isolation.ahead``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import numpy as np

from convcheck.isolation.ahead import Lookahead
from convcheck.isolation.session import (
    AHEAD_BYTES,
    AHEAD_CALLS,
    MANY_OUTPUTS,
    RemoteCache,
    Session,
    arena_half,
)
from convcheck.numeric.fanout import Point
from convcheck.spec import CheckSpec, DType, Layout, Signature
from convcheck.tolerance import resolve
from convcheck.user.adapter import Foreign, LoadedImpl, UserCache, UserLayer
from convcheck.user.arguments import call_values, refused_keywords, window_keywords
from convcheck.user.errors import ImplementationError, display_path
from convcheck.user.shapes import layer_dims

__all__ = ["MANY_GROUPS", "RemoteLayer", "remote_layer"]

#: At most this many groups (two forward calls each) per batch the engine hands ``forward_many``: each batch is a
#: round trip (two context switches, the base arrays copied in and decoded again, the descriptions encoded and
#: decoded on both sides): 17 requests a small check instead of 31 (64 groups: 13, and no overlap left for
#: the pipelined batches, ``Pending``; the same CPU as 16 on the 300-check sweep). The request must
#: lie in the parent's half of the shared memory (else that batch is measured one call at a time); its point
#: arrays take 32 bytes an entry of the tensor at most (a tensor's groups perturb each entry once), and a small
#: layer's half holds 144 bytes an entry (``session.arena_half`` with calls sent ahead).
MANY_GROUPS = 16


class RemoteLayer(UserLayer):
    """A ``UserLayer`` whose user functions run in a ``Session``'s child (see the module docstring).

    The session starts at the first call, so that a check refused before it calls the layer (an impossible
    shape, too little memory) never starts a process; ``close`` ends it.
    """

    def __init__(self, spec: CheckSpec, memory_limit: int | None, *, lookahead: bool = True) -> None:
        ref = spec.impl
        assert ref is not None
        shape = spec.shape
        impl = LoadedImpl(_unreachable, _unreachable, ref, ModuleType(ref.module), display_path(ref.module))
        uniform = shape.window.uniform(shape.spatial_in, shape.kernel)
        stride, padding = uniform if uniform is not None else (shape.strides, shape.pads)
        super().__init__(
            impl,
            stride=stride,
            padding=padding,
            layout=spec.layout,
            window=shape.window,
            bias=shape.bias,
            bias_shape=spec.bias_shape,
        )
        # The function is in the child: it picks the keywords its forward takes from these (``keywords_for``).
        self._keywords = {}
        self._offered = window_keywords(shape.window)
        outputs = math.prod(shape.out_shape)
        self.entries = sum(math.prod(s) for s in (shape.x_shape, shape.w_shape, (shape.out_depth,))) + outputs
        # Room for a batch of outputs in the child's half (``forward_many``): at least MANY_OUTPUTS in float64.
        self.entries = max(self.entries, MANY_OUTPUTS * outputs // 2)
        self._positions: dict[int, np.ndarray] = {}
        self._out_shape = shape.out_shape
        self._out_kind: dict[str, Any] | None = None  # shape and dtype of the last array forward returned
        self.memory_limit = memory_limit
        self.session: Session | None = None
        self.output_reused = False  # the child saw forward overwrite the first array it returned
        self.lookahead = lookahead
        self.pipelined = True  # a batch's outputs are received when the engine asks for them (``forward_many``)
        self._blocks = [_Block(), _Block()]  # where batches' outputs are copied to, in turn
        depth = max(1, min(AHEAD_CALLS, AHEAD_BYTES // (8 * max(1, self.entries))))
        steps = [resolve(dtype, spec.eps, spec.rtol, spec.atol).eps for dtype in (DType.FLOAT64, spec.dtype)]
        self.ahead = Lookahead(shape, spec.seed, steps, depth, lambda number: self._session().released.append(number))
        self._engine_call: tuple[np.ndarray, ...] = ()

    def child_seconds(self) -> float:
        """CPU seconds the child has spent so far (for the cost estimate of ``auto``)."""
        return 0.0 if self.session is None else self.session.child_cpu()

    def close(self) -> None:
        if self.session is not None:
            self.session.close()

    def _session(self) -> Session:
        if self.session is None:
            self.session = Session(self.impl.ref, self.entries, self.memory_limit, ahead=self.ahead.depth)
            refused = refused_keywords(self.session.accepts, self.session.forward_signature, self.window)
            if refused:  # as ``UserLayer.for_shape`` refuses it in one process: never silently left out
                raise ImplementationError(refused, file=None)
        return self.session

    def batch_groups(self) -> int:
        """Groups (two forward calls each) per batch of ``forward_many``: as many as whose outputs fit the child's
        half of the shared memory in float64 (``session.arena_half``; a kept arena may be larger), at most
        ``MANY_GROUPS``."""
        half = arena_half(self.entries, self.ahead.depth)
        return max(1, min(MANY_GROUPS, half // (8 * math.prod(self._out_shape) + 64) // 2))

    def forward_many(
        self, params: list[np.ndarray], points: list[Point], workers: int
    ) -> Callable[[], list[np.ndarray] | np.ndarray | None] | None:
        """The engine's outputs (NHWC) of forward at each of ``points`` (changes of ``params`` = x, w, b), from
        one request: the child evaluates them on ``workers`` processes (``convcheck.numeric.fanout``). The request
        is sent now; the function returned receives the outputs (the engine reduces the previous batch meanwhile):
        one stacked array ``(len(points), N, *O, C_out)`` when the layer's layout is the engine's (the engine
        then reduces the batch in one pass over the stack, ``Reductions.exact_many``), else a list.
        Each output is checked, converted and offered to the forward-point sample as one ``forward`` call's would
        be. None, or a function that returns None, when the child could not answer that way (the caller makes
        the calls one at a time). ``pipelined = False``: the outputs are received before this returns."""
        x, w, b = params
        base = (self._to_user(x, "x"), self._to_user(w, "w"))
        bu = b.reshape(self._bias_shape(x.ndim, w.shape[-1])).copy() if self.bias else None
        if self._out_kind is None or any(p.tensor == 2 and bu is None for p in points):
            return None
        moved = [Point(p.tensor, self._user_positions(p.tensor, params)[p.where], p.values) for p in points]
        session = self._session()
        arrays = [a for a in (*base, bu) if a is not None] + [a for p in moved for a in (p.where, p.values)]
        if sum(a.nbytes + 64 for a in arrays) > session.arena.half:
            return None  # the request must lie in shared memory (where the child's workers read it)
        stride, padding = call_values(self.window, x.shape[1:-1], w.shape[:-2])
        extra, keywords = self._hyperparameters(stride, padding)
        request = ([*base, bu, *extra], keywords, (moved, workers, self._out_kind))
        self._blocks.reverse()  # this batch's outputs go to the block the batch before the last one used
        block = self._blocks[0]
        copies = session.call_later(*request, lambda reply, blobs: block.read(session, reply, blobs))

        def outputs() -> list[np.ndarray] | np.ndarray | None:
            received = copies()
            if received is None or len(received) != len(points) or not len(points):
                return None
            return self._accepted(received, params, points)

        if not self.pipelined:
            done = outputs()
            return lambda: done
        return outputs

    def _accepted(
        self, received: np.ndarray, params: list[np.ndarray], points: list[Point]
    ) -> list[np.ndarray] | np.ndarray:
        """The outputs the child sent for ``points`` (``_Block.read``'s stack, ``(len(points), *out)``: its rows
        have one shape, so one check is every output's), in the engine's layout, each offered to the
        forward-point sample as one call's output would be; the stack as it is when the user's layout is the
        engine's, else a list. A point's arrays are built only when the sample keeps it."""
        x, w, b = params
        self._check_array("out", "forward's out", "out", received[0], layer_dims(x.shape, w.shape, self.window))
        outputs = received if self.layout is Layout.NHWC else [self._to_engine(out, "out") for out in received]
        for point, out in zip(points, outputs, strict=True):
            slot = None if self.points is None else self.points.take()
            if slot is not None and self.points is not None:
                flat = params[point.tensor].reshape(-1)
                original = flat[point.where].copy()
                flat[point.where] = point.values
                self.points.keep(slot, x, w, b, out)
                flat[point.where] = original
        return outputs

    def _user_positions(self, tensor: int, params: list[np.ndarray]) -> np.ndarray:
        """For each flat index of engine tensor ``tensor``, the flat index of the same entry in the user's array."""
        if tensor not in self._positions:
            shape = params[tensor].shape
            engine_order = np.arange(math.prod(shape)).reshape(shape)
            user = engine_order.reshape(-1) if tensor == 2 else self._to_user(engine_order, "xw"[tensor]).reshape(-1)
            positions = np.empty_like(user)
            positions[user] = np.arange(user.size)
            self._positions[tensor] = positions
        return self._positions[tensor]

    def _hyperparameters(self, stride: object, padding: object) -> tuple[list[Any], dict[str, Any]]:
        """The arguments after x, w and b, and the keywords offered, in the user's signature."""
        if self.signature is Signature.CS231N:
            needed = {name: value for name, value in self._offered.items() if value != 1}
            return [{"stride": stride, "pad": padding, **needed}], {}
        return [stride, padding], self._offered

    def _call_forward(
        self, xu: np.ndarray, wu: np.ndarray, bu: np.ndarray | None, stride: object, padding: object
    ) -> object:
        session = self._session()
        extra, keywords = self._hyperparameters(stride, padding)
        handed = tuple(a for a in (xu, wu, bu) if a is not None)
        if self._audit is None:
            reply, blobs = self._unaudited(session, (xu, wu, bu), extra, keywords)
        else:
            reply, blobs = session.call("forward", [xu, wu, bu, *extra], True, keywords)
        self.output_reused = self.output_reused or reply.get("output_reused") is True
        self._copy_back(reply.get("modified"), handed, blobs)
        number = reply.get("cache")
        cache = RemoteCache(int(number), session, handed) if isinstance(number, int) else None
        value = self._value(reply.get("value"), blobs, cache)
        if isinstance(value, tuple | list) and value and isinstance(value[0], np.ndarray):
            self._out_kind = {"shape": list(value[0].shape), "dtype": value[0].dtype.str}
        return value

    def forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, UserCache]:
        self._engine_call = (x, w, b)  # the arrays the engine asked for, for ``ahead`` (in its own layout)
        return super().forward(x, w, b)

    def _unaudited(
        self, session: Session, arrays: tuple[np.ndarray | None, ...], extra: list[Any], keywords: dict[str, Any]
    ) -> tuple[dict[str, Any], memoryview]:
        """An unaudited forward call: answered from the calls sent ahead with an earlier one when it is the next
        of them, else sent with the calls expected to follow it (``isolation.ahead``)."""
        engine = self._engine_call
        kept = self.ahead.take(engine, session.exchanges)
        if kept is not None:
            return session.answer(kept[0]), kept[1]
        following = self.ahead.ahead(engine) if self.lookahead else []
        if not following:
            return session.call("forward", [*arrays, *extra], False, keywords)
        calls = [("forward", [*arrays, *extra], keywords)]
        calls += [("forward", [*self._user_arrays(*point), *extra], keywords) for point in following]
        replies, blobs = session.calls(calls)
        self.ahead.keep(following, replies, blobs, session.exchanges)
        return session.answer(replies[0]), blobs

    def _user_arrays(self, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray | None, ...]:
        """The engine's ``(x, w, b)`` as ``UserLayer.forward`` hands them to the user's function."""
        bu = b.reshape(self._bias_shape(x.ndim, w.shape[-1])).copy() if self.bias else None
        return self._to_user(x, "x"), self._to_user(w, "w"), bu

    def _call_backward(self, du: np.ndarray, user_cache: Any) -> object:
        session = self._session()
        if not isinstance(user_cache, RemoteCache):
            raise TypeError("the cache of a remote layer is a handle its forward returned")
        reply, blobs = session.call("backward", [du, user_cache], self._audit is not None)
        self._copy_back(reply.get("modified"), (du,), blobs)
        self._copy_back(reply.get("cached_modified"), user_cache.handed, blobs)
        return self._value(reply.get("value"), blobs, None)

    def _copy_back(self, changes: object, targets: tuple[np.ndarray, ...], blobs: memoryview) -> None:
        if not isinstance(changes, dict):
            return
        assert self.session is not None
        for key, meta in changes.items():
            index = int(key) if str(key).isdigit() else -1
            if not 0 <= index < len(targets):
                continue
            value = self.session.array(meta, blobs)
            if value.shape == targets[index].shape:
                np.copyto(targets[index], value, casting="unsafe")

    def _value(self, value: object, blobs: memoryview, cache: RemoteCache | None) -> object:
        """What the user's function returned, rebuilt from its description (arrays, None, descriptions)."""
        assert self.session is not None
        if not isinstance(value, dict):
            return Foreign("nothing convcheck could read")
        if "array" in value:
            return self.session.array(value["array"], blobs)
        if "none" in value:
            return None
        if "sequence" in value and isinstance(value.get("items"), list):
            items = [self._item(v, blobs, cache) for v in value["items"]]
            return list(items) if value["sequence"] == "list" else tuple(items)
        return Foreign(str(value.get("describe", "something convcheck could not read")))

    def _item(self, value: object, blobs: memoryview, cache: RemoteCache | None) -> object:
        return cache if isinstance(value, dict) and "kept" in value else self._value(value, blobs, None)


class _Block:
    """Where a batch's outputs are copied out of shared memory: one array kept from batch to batch.

    A fresh array per batch would cost a page fault per 4 KiB of it in this process (its memory is handed back
    to the system between batches) and a second copy for the engine's layout; the engine reads a batch's outputs
    before it asks for the batch after the next one, so two blocks, used in turn, are never overwritten early.
    """

    def __init__(self) -> None:
        self.memory = np.empty(0)

    def read(self, session: Session, reply: dict[str, Any], blobs: memoryview) -> np.ndarray | None:
        """The outputs of a batch, copied out of shared memory as one array stacking them (None when the child
        could not answer that way)."""
        meta = reply.get("outputs")
        if meta is None:
            return None
        view = session.array(meta, blobs, copy=False)  # a description that breaks the protocol raises here
        if view.ndim < 1:
            return None
        if self.memory.dtype != view.dtype or self.memory.shape[1:] != view.shape[1:] or len(self.memory) < len(view):
            self.memory = np.empty(view.shape, view.dtype)
        np.copyto(self.memory[: len(view)], view)
        return self.memory[: len(view)]


def _unreachable(*_: object) -> None:  # pragma: no cover - a RemoteLayer never calls its impl's functions here
    raise AssertionError("the user's functions run in the child")


@contextmanager
def remote_layer(spec: CheckSpec, memory_limit: int | None, *, lookahead: bool = True) -> Iterator[RemoteLayer]:
    """A ``RemoteLayer`` for ``spec`` whose process is ended when the block is left, however it is left."""
    layer = RemoteLayer(spec, memory_limit, lookahead=lookahead)
    try:
        yield layer
    finally:
        layer.close()
