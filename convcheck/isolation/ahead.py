"""Fewer round trips: the forward calls the engine is about to make travel with the call it makes now.

The engine measures derivatives from pairs of forward passes, at ``θ + ε·v`` and then at ``θ − ε·v``, group after
group (``numeric.engine``, ``numeric.groups``). Both are predictable from the check's base point ``θ`` (its first
unaudited forward call, in the engine's layout):

- the *plan*: when a call is the ``+`` point of the first group of a tensor (the engine's groups, every entry in
  turn, or the entries the grouped estimate is audited at), for the step of the check's float64 or own dtype,
  the next points are that group's ``−`` point, then the ``+`` and ``−`` points of each following group, built
  exactly as the engine builds them;
- the *mirror*: any other call that differs from ``θ`` in one array, by ``d``, is followed by ``θ − d``;
- the *repeat*: the base point itself is called twice (the engine's test that the forward is deterministic).

``Lookahead.ahead`` names the calls to send with the current one (``Session.calls``: the child makes them in
order and answers them in one reply); their answers are kept, and each following call is served from the first
kept answer when its arrays equal that answer's bit for bit. Any other call drops what was kept (the child then
drops the user's caches of those calls) and ends the plan for that tensor.

Nothing changes in what is computed: a kept answer is the child's answer at exactly the arrays of the call it
serves (compared with the lookahead's own copies, never with arrays the engine changes in place), and while the
predictions hold the child sees the same calls in the same order as without them, so the
estimates are bit-identical for any layer (tested; a stateful one included). A wrong prediction costs the child
calls nobody uses (never seen by the engine nor sampled for the forward audit): a plan starts only where its
first point is the call just made, and ends at its first miss (a kink retry, a fallback); the mirror pauses after
a miss and stops once misses outnumber hits by ``GIVE_UP``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from convcheck.numeric.audit import audit_entries
from convcheck.numeric.groups import single_entry_groups, tensor_groups
from convcheck.results import Tensor
from convcheck.spec import ConvShape

__all__ = ["GIVE_UP", "Arrays", "Lookahead", "mirrored"]

GIVE_UP = 8  # mirror misses beyond the hits after which a check stops guessing
KINDS = ("grouped", "entrywise", "audit")  # the plans tried (``_wheres``)
Arrays = tuple[np.ndarray, ...]  # a forward call's (x, w, b) in the engine's layout (NHWC; b (0,) without a bias)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))


def _alike(a: Arrays, b: Arrays) -> bool:
    return all(x.shape == y.shape and x.dtype == y.dtype for x, y in zip(a, b, strict=True))


def _moved(base: Arrays, arrays: Arrays) -> list[int]:
    return [i for i, (a, b) in enumerate(zip(arrays, base, strict=True)) if not _same(a, b)]


def mirrored(base: Arrays, arrays: Arrays) -> Arrays | None:
    """``base − (arrays − base)`` in the one array where ``arrays`` differs from ``base`` (float64 arithmetic,
    rounded to the array's dtype), the others ``base``'s (equal to ``arrays``'s, and never changed in place like
    the engine's own arrays may be later); None unless exactly one floating array differs."""
    moved = _moved(base, arrays)
    if len(moved) != 1 or arrays[moved[0]].dtype.kind != "f":
        return None
    index = moved[0]
    before = base[index].astype(np.float64)
    mirror = (before - (arrays[index].astype(np.float64) - before)).astype(arrays[index].dtype)
    return tuple(mirror if i == index else a for i, a in enumerate(base))


class _Plan:
    """The ``+`` and ``−`` points of the groups of one tensor, in the engine's order (``Engine._measure``)."""

    def __init__(self, base: Arrays, tensor: int, wheres: list[Any], eps: float) -> None:
        self.base, self.tensor, self.wheres, self.eps = base, tensor, wheres, eps
        self.position = 0  # the next point not yet sent

    def __len__(self) -> int:
        return 2 * len(self.wheres)

    def point(self, position: int) -> Arrays:
        param = self.base[self.tensor]
        perturbed = param.copy()
        flat = perturbed.reshape(-1)
        where = self.wheres[position // 2]
        original = flat[where].copy()
        step = self.eps * np.ones_like(original)
        flat[where] = (original + step if position % 2 == 0 else original - step).astype(param.dtype, copy=False)
        return tuple(perturbed if i == self.tensor else a for i, a in enumerate(self.base))


def _wheres(shape: ConvShape, tensor: int, kind: str, seed: int) -> list[Any]:
    """Where each group of ``kind`` perturbs ``tensor``: the engine's groups (``grouped``), every entry in turn
    (``entrywise``), or the entries the grouped estimate is audited at (``audit``: ``methods`` draws them from the
    stream ``[seed, 2]`` for x, w and b in turn, ``numeric.audit``)."""
    sizes = [math.prod(s) for s in (shape.x_shape, shape.w_shape, shape.b_shape)]
    if kind == "grouped":
        groups = tensor_groups(shape, Tensor(tensor))
    elif kind == "entrywise":
        groups = single_entry_groups(Tensor(tensor), np.arange(sizes[tensor]))
    else:
        rng = np.random.default_rng([seed, 2])
        audited = [audit_entries(size, rng) for size in sizes]
        groups = single_entry_groups(Tensor(tensor), audited[tensor])
    return [g.entries if g.span is None else g.span for g in groups]


@dataclass
class _Kept:
    arrays: Arrays
    reply: Any
    blobs: memoryview
    exchange: int  # the session's exchange the reply came with (its arrays are valid until the next one)


class Lookahead:
    """What to send ahead, and the answers kept, for one ``RemoteLayer`` (see the module docstring).

    Args:
        shape: the check's geometry (the engine's groups); seed: the check's (the audited entries).
        steps: the steps the engine may take (``eps`` for float64 and for the layer's dtype).
        depth: at most this many calls sent ahead with one call.
        release: called with the cache number of each kept answer that is dropped.
    """

    def __init__(
        self, shape: ConvShape, seed: int, steps: Sequence[float], depth: int, release: Callable[[int], None]
    ) -> None:
        self.shape, self.seed, self.steps = shape, seed, tuple(dict.fromkeys(steps))
        self.depth, self.release = depth, release
        self.base: Arrays | None = None
        self.kept: deque[_Kept] = deque()
        self.plan: _Plan | None = None
        self.started: set[tuple[int, str, str]] = set()  # (tensor, dtype, kind) of the plans started
        self.wheres: dict[tuple[int, str], list[Any]] = {}
        self.hits = 0
        self.misses = 0
        self.pause = False  # the previous call was a wrong guess: send the next one alone

    def take(self, arrays: Arrays, exchange: int) -> tuple[Any, memoryview] | None:
        """The kept answer for exactly ``arrays``, if it is the next one kept (and still readable); else None,
        and everything kept is dropped."""
        if not self.kept:
            return None
        first = self.kept[0]
        if first.exchange == exchange and _same_call(arrays, first.arrays):
            self.kept.popleft()
            self.hits += 1
            return first.reply, first.blobs
        self.misses += 1
        self.pause, self.plan = True, None
        while self.kept:
            number = self.kept.popleft().reply
            number = number.get("cache") if isinstance(number, dict) else None
            if isinstance(number, int):
                self.release(number)
        return None

    def ahead(self, arrays: Arrays) -> list[Arrays]:
        """The calls to send with ``arrays`` (none: send it alone)."""
        if self.base is None or not _alike(arrays, self.base):  # a base point: the engine calls it twice
            self.base, self.plan = tuple(a.copy() for a in arrays), None
            return [self.base]
        if self.plan is not None and self.plan.position >= len(self.plan):
            self.plan = None  # done: the next tensor's plan may start
        plan = self.plan if self.plan is not None else self._start(arrays)
        if plan is not None:
            if plan.position < len(plan) and _same_call(arrays, plan.point(plan.position)):
                start = plan.position + 1
                plan.position = min(len(plan), start + self.depth)
                return [plan.point(p) for p in range(start, plan.position)]
            self.plan = None
        if self.pause or self.misses >= self.hits + GIVE_UP:
            self.pause = False
            return []
        mirror = mirrored(self.base, arrays)
        return [] if mirror is None else [mirror]

    def _start(self, arrays: Arrays) -> _Plan | None:
        """The plan whose first point is ``arrays``, if there is one not started yet for that tensor and dtype."""
        assert self.base is not None
        moved = _moved(self.base, arrays)
        if len(moved) != 1 or arrays[moved[0]].dtype.kind != "f":
            return None
        tensor = moved[0]
        now, base = arrays[tensor].reshape(-1), self.base[tensor].reshape(-1)
        if now.size != math.prod((self.shape.x_shape, self.shape.w_shape, self.shape.b_shape)[tensor]):
            return None
        changed = np.flatnonzero(now != base)
        # After that tensor's grouped points come the audited entries; without them, every entry in turn.
        grouped = (tensor, now.dtype.str, "grouped") in self.started
        for kind in ("grouped", "audit", "entrywise") if grouped else KINDS:
            key = (tensor, now.dtype.str, kind)
            if key in self.started:
                continue
            if (tensor, kind) not in self.wheres:
                self.wheres[tensor, kind] = _wheres(self.shape, tensor, kind, self.seed)
            wheres = self.wheres[tensor, kind]
            if not wheres:
                continue
            first = np.arange(now.size)[wheres[0]]
            for eps in self.steps:
                expected = (base[first] + eps * np.ones_like(base[first])).astype(now.dtype, copy=False)
                # the call is the first point: it equals ``expected`` there and the base everywhere else
                if np.isin(changed, first).all() and np.array_equal(now[first], expected):
                    self.started.add(key)
                    self.plan = _Plan(self.base, tensor, wheres, eps)
                    return self.plan
        return None

    def keep(self, calls: Sequence[Arrays], replies: Sequence[Any], blobs: memoryview, exchange: int) -> None:
        """Keep the answers to the calls sent ahead (``replies[1:]``, as many as the child made)."""
        for arrays, reply in zip(calls, replies[1:], strict=False):
            self.kept.append(_Kept(arrays, reply, blobs, exchange))


def _same_call(a: Arrays, b: Arrays) -> bool:
    return all(_same(x, y) for x, y in zip(a, b, strict=True))
