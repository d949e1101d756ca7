"""Many forward passes at perturbed points in one request, measured by several forked processes at once.

A check of a user's layer spends its time in the layer's forward (hundreds of passes) and in the round trips to
the process that runs it. The engine's groups are independent: each is the base point with a few entries of one
tensor changed. So the process that runs the user's code takes a whole batch of them at once: ``evaluate`` forks
``workers`` processes from it (the user's module is already loaded there, nothing is imported again), worker
``j`` evaluates the points ``j, j + workers, …`` on fresh copies of the base arrays and writes each output into
its slot of shared memory, and the caller gets every output in the order the points were given. Which process
computed a point never changes its value (each call is the same function on the same arrays), so the estimates
the engine derives from them are bit-identical for any number of workers (``tests/test_fanout.py``).

User code is not assumed thread-safe, hence processes, not threads. With ``workers == 1`` the points are
evaluated in this process, in order, one after the other (the batching alone saves the round trips).

Nothing here judges anything: an output that is not an array of the expected shape and dtype, an exception, a
worker that dies — any of them makes ``evaluate`` return False, and the caller measures the batch again one call
at a time, where the same problem is reported as it always is.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from convcheck import parallel

__all__ = ["Point", "evaluate", "fits", "shared_slots"]

_PR_SET_PDEATHSIG = 1
_FAILED = 1  # a worker's exit code when one of its points could not be evaluated


@dataclass(frozen=True)
class Point:
    """The base point with ``values`` at the flat positions ``where`` of argument ``tensor`` (user layout)."""

    tensor: int
    where: np.ndarray  # (m,) int64 flat indices into the argument
    values: np.ndarray  # (m,) the argument's values there


Forward = Callable[[list[np.ndarray | None]], object]
Accept = Callable[[object], "np.ndarray | None"]


def fits(slots: int, out_bytes: int, room: int) -> bool:
    """Whether ``slots`` outputs of ``out_bytes`` each fit in ``room`` bytes (64-byte aligned, as in ``channel``)."""
    return slots * (-(-out_bytes // 64) * 64) <= room


def evaluate(
    forward: Forward,
    base: Sequence[np.ndarray | None],
    points: Sequence[Point],
    slots: Sequence[np.ndarray],
    accept: Accept,
    workers: int,
) -> bool:
    """Write ``accept(forward(point arrays))`` of each point into its slot; True when every point succeeded.

    Args:
        forward: calls the user's forward on a list of arguments (fresh arrays it may keep or modify).
        base: the arguments at the base point (never modified; None stays None: a layer without a bias).
        points: the perturbed points, as changes of the base.
        slots: one writable array per point, of the shape and dtype ``accept`` returns; in memory that every
            process forked from this one writes into (a shared mapping) when ``workers > 1``.
        accept: the output array of what forward returned, or None when it is not the expected array.
        workers: processes that evaluate points at once (1: this process, in order).
    """
    if len(points) != len(slots):
        raise ValueError("one slot per point")
    batch = _Batch(forward, base, points, slots, accept)
    if workers <= 1 or len(points) <= 1:
        return batch.run(range(len(points)))
    pids = []
    try:
        for j in range(min(workers, len(points))):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the worker never returns (coverage cannot follow it)
                batch.work(range(j, len(points), workers))
            pids.append(pid)
    finally:
        ok = _reap(pids) and len(pids) == min(workers, len(points))
    return ok


@dataclass(frozen=True)
class _Batch:
    """``evaluate``'s arguments, as each process (this one or a forked worker) needs them."""

    forward: Forward
    base: Sequence[np.ndarray | None]
    points: Sequence[Point]
    slots: Sequence[np.ndarray]
    accept: Accept

    def run(self, indices: range) -> bool:
        """Evaluate the points ``indices`` in this process, in order; False at the first that fails."""
        for k in indices:
            point = self.points[k]
            args = [None if a is None else a.copy() for a in self.base]  # fresh arrays each call, as one at a time
            target = args[point.tensor]
            if target is None:
                return False
            target.reshape(-1)[point.where] = point.values
            try:
                out = self.accept(self.forward(args))
            except Exception:  # noqa: BLE001 - the caller measures the point again, where it is reported
                return False
            if out is None:
                return False
            self.slots[k][...] = out
        return True

    def work(self, indices: range) -> None:  # pragma: no cover - runs in the forked worker
        """A forked worker's whole life: its points, then ``os._exit`` (0 when every one succeeded)."""
        code = _FAILED
        try:
            with contextlib.suppress(OSError, AttributeError):  # die with the process that forked it (Linux)
                ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            with parallel.limited_blas(1):  # the other workers have the other cores
                if self.run(indices):
                    code = 0
        except BaseException:  # noqa: BLE001 - nothing may unwind into the forking process's code here
            code = _FAILED
        finally:
            os._exit(code)


def _reap(pids: list[int]) -> bool:
    ok = True
    for pid in pids:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            ok = False
            continue
        ok = ok and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    return ok


def shared_slots(count: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> list[np.ndarray]:
    """``count`` arrays of ``shape`` and ``dtype`` in one fresh shared anonymous mapping, for callers without a
    mapping of their own (the mapping is freed with the last of them)."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    stride = -(-size // 64) * 64
    memory = mmap.mmap(-1, max(1, count * stride))
    entries = int(np.prod(shape))
    views = [np.frombuffer(memory, dtype=dtype, count=entries, offset=k * stride).reshape(shape) for k in range(count)]
    return views
