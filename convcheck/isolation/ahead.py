"""Half the round trips: the mirror of a perturbed point travels with the point.

The engine measures derivatives from pairs of forward passes, at ``θ + ε·v`` and then at ``θ − ε·v``
(``numeric.engine``). So when an unaudited forward call differs from the check's base point ``θ`` (its first
unaudited call) in one array, the parent sends the call at the mirrored point ``θ − (θ′ − θ)`` in the same request
(``Session.calls``), and keeps the answer. The next call is served from it if its arrays equal the mirrored ones
bit for bit; otherwise the answer is dropped and the call goes to the child as usual.

Nothing changes in what is computed: a kept answer is the child's answer at exactly the arrays of the call it
serves, and when the guess is right the child sees the same calls in the same order as without it, so estimates
are bit-identical for a deterministic layer (tested). A wrong guess costs the child one call nobody uses (never
seen by the engine nor sampled for the forward audit); after a wrong guess the next call is sent alone, and once
wrong guesses outnumber right ones by ``GIVE_UP``, guessing stops for the check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["GIVE_UP", "Arrays", "Lookahead", "mirrored"]

GIVE_UP = 8  # wrong guesses beyond the right ones after which a check stops guessing
Arrays = tuple[np.ndarray | None, ...]  # a forward call's (x, w, b) in the user's layout; b None without a bias


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))


def _alike(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and a.dtype == b.dtype


def mirrored(base: Arrays, arrays: Arrays) -> Arrays | None:
    """``base − (arrays − base)`` in the one array where ``arrays`` differs from ``base`` (float64 arithmetic,
    rounded to the array's dtype), the others as they are; None unless exactly one floating array differs."""
    moved = [i for i, (a, b) in enumerate(zip(arrays, base, strict=True)) if not _same(a, b)]
    if len(moved) != 1:
        return None
    index = moved[0]
    now, then = arrays[index], base[index]
    if now is None or then is None or now.dtype.kind != "f":
        return None
    before = then.astype(np.float64)
    mirror = (before - (now.astype(np.float64) - before)).astype(now.dtype)
    return tuple(mirror if i == index else a for i, a in enumerate(arrays))


@dataclass
class _Kept:
    arrays: Arrays
    reply: Any
    blobs: memoryview
    exchange: int  # the session's exchange the reply came with (its arrays are valid until the next one)


class Lookahead:
    """The guess and the kept answer of one ``RemoteLayer`` (see the module docstring).

    ``release(number)`` is called with the cache number of a kept answer that is dropped.
    """

    def __init__(self, release: Callable[[int], None]) -> None:
        self.release = release
        self.base: Arrays | None = None
        self.kept: _Kept | None = None
        self.right = 0
        self.wrong = 0
        self.pause = False  # the previous call was a wrong guess: send the next one alone

    def take(self, arrays: Arrays, exchange: int) -> tuple[Any, memoryview] | None:
        """The kept answer if it was for exactly ``arrays`` (and is still readable); else None, dropping it."""
        kept, self.kept = self.kept, None
        if kept is None:
            return None
        if kept.exchange == exchange and all(_same(a, b) for a, b in zip(arrays, kept.arrays, strict=True)):
            self.right += 1
            return kept.reply, kept.blobs
        self.wrong += 1
        self.pause = True
        number = kept.reply.get("cache") if isinstance(kept.reply, dict) else None
        if isinstance(number, int):
            self.release(number)
        return None

    def guess(self, arrays: Arrays) -> Arrays | None:
        """The call to send along with ``arrays``, or None (no guess: send it alone)."""
        if self.base is None or not all(_alike(a, b) for a, b in zip(arrays, self.base, strict=True)):
            self.base = tuple(None if a is None else a.copy() for a in arrays)
            return None
        if self.pause or self.wrong >= self.right + GIVE_UP:
            self.pause = False
            return None
        return mirrored(self.base, arrays)

    def keep(self, arrays: Arrays, replies: Sequence[Any], blobs: memoryview, exchange: int) -> None:
        """Keep the answer to the guessed call ``arrays`` (the second of ``replies``, if the child made it)."""
        if len(replies) > 1:
            self.kept = _Kept(arrays, replies[1], blobs, exchange)
