"""Many forward passes at perturbed points in one request, measured by several forked processes at once.

A check of a user's layer spends its time in the layer's forward (hundreds of passes) and in the round trips to the
process that runs it. The engine's groups are independent: each is the base point with a few entries of one tensor
changed. So the process that runs the user's code takes a whole batch of them at once (a ``Batch``), and a ``Pool``
of ``workers`` processes forked from it (the user's module is already loaded there, nothing is imported again)
shares the work: each worker takes the next point not yet taken (from one pipe they all read), evaluates it on fresh
copies of the base arrays and writes its output into its slot of shared memory, and the caller gets every output in
the order the points were given. Taking points in turn, rather than a fixed share each, keeps every worker busy to
the end of a batch when one of them is slowed (by the engine reducing the previous batch on the same cores, or by
another process). Which process computed a point never changes its value (each call is the same function on the same
arrays), so the estimates the engine derives from them are bit-identical for any number of workers
(``tests/test_fanout.py``). The pool is forked once and serves every batch of the check (a fork of a process holding
a large layer's arrays costs milliseconds); its workers die with the process that forked them.

User code is not assumed thread-safe, hence processes, not threads. With one worker the points are evaluated in
the calling process, in order, one after the other (the batching alone saves the round trips).

Nothing here judges anything: an output that is not an array of the expected shape and dtype, an exception, a
worker that dies — any of them fails the batch, and the caller measures it again one call at a time, where the
same problem is reported as it always is.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import signal
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from convcheck import parallel

__all__ = ["Batch", "Point", "Pool", "evaluate", "shared_slots"]

_PR_SET_PDEATHSIG = 1
_FAILED = 1  # a worker's exit code when it failed outside a batch
_LENGTH = struct.Struct("!Q")
_STOP = 2**64 - 1  # the task that ends a worker's batch
_TASKS_PER_WRITE = 512  # tasks of 8 bytes written at once: 4 KiB, which a pipe takes whole (no torn task)


@dataclass(frozen=True)
class Point:
    """The base point with ``values`` at the flat positions ``where`` of argument ``tensor`` (user layout)."""

    tensor: int
    where: np.ndarray  # (m,) int64 flat indices into the argument
    values: np.ndarray  # (m,) the argument's values there


Forward = Callable[[list[np.ndarray | None]], object]
Accept = Callable[[object], "np.ndarray | None"]


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
        workers: processes that evaluate points at once (1: this process, in order), forked for this call.
    """
    batch = Batch(forward, base, points, slots, accept)
    if workers <= 1 or len(points) <= 1:
        return batch.run(range(len(points)))
    pool = Pool(workers, lambda _: batch)
    try:
        return pool.run(b"", len(points))
    finally:
        pool.close()


@dataclass(frozen=True)
class Batch:
    """One batch: the forward, the base arguments, the points and where each point's output goes."""

    forward: Forward
    base: Sequence[np.ndarray | None]
    points: Sequence[Point]
    slots: Sequence[np.ndarray]
    accept: Accept

    def __post_init__(self) -> None:
        if len(self.points) != len(self.slots):
            raise ValueError("one slot per point")

    def run(self, indices: Iterable[int]) -> bool:
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


class Pool:
    """``workers`` processes forked from this one at the first batch, serving batches until ``close``.

    Args:
        workers: processes (at least 2).
        decode: in a worker, the ``Batch`` a message describes (its arrays where every process sees them:
            shared memory mapped before the fork).
    """

    def __init__(self, workers: int, decode: Callable[[bytes], Batch]) -> None:
        self.workers = workers
        self.decode = decode
        self.owner = os.getpid()
        self._procs: list[tuple[int, int, int]] = []  # (pid, the pipe it reads messages from, the one it answers on)
        self._tasks = -1  # the pipe the points to evaluate are written to (every worker reads the other end)

    @property
    def pids(self) -> tuple[int, ...]:
        """The workers' process ids (none before the first batch and after ``close``)."""
        return tuple(pid for pid, _, _ in self._procs)

    def run(self, message: bytes, count: int) -> bool:
        """The batch ``message`` describes, of ``count`` points, on every worker; True when all succeeded (a
        worker that failed or died ends the pool; the next batch starts a new one)."""
        if not self._procs:
            self._start()
        ok = True
        try:
            for _, commands, _ in self._procs:
                _write_frame(commands, message)
            tasks = [*range(count), *[_STOP] * len(self._procs)]
            for start in range(0, len(tasks), _TASKS_PER_WRITE):
                chunk = tasks[start : start + _TASKS_PER_WRITE]
                os.write(self._tasks, struct.pack(f"!{len(chunk)}Q", *chunk))
            for _, _, answers in self._procs:
                ok = _read_exactly(answers, 1) == b"1" and ok
        except OSError:
            ok = False
        if not ok:
            self.close()
        return ok

    def close(self) -> None:
        """End the workers (whatever they are doing) and reap them."""
        procs, self._procs = self._procs, []
        if self._tasks >= 0:
            with contextlib.suppress(OSError):
                os.close(self._tasks)
            self._tasks = -1
        for pid, commands, answers in procs:
            for fd in (commands, answers):
                with contextlib.suppress(OSError):
                    os.close(fd)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    def _start(self) -> None:
        tasks_r, self._tasks = os.pipe()
        for _ in range(self.workers):
            commands_r, commands_w = os.pipe()
            answers_r, answers_w = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the worker never returns (coverage cannot follow it)
                for fd in (commands_w, answers_r, self._tasks, *(fd for _, c, a in self._procs for fd in (c, a))):
                    os.close(fd)
                self._serve(tasks_r, commands_r, answers_w)
            os.close(commands_r)
            os.close(answers_w)
            self._procs.append((pid, commands_w, answers_r))
        os.close(tasks_r)

    def _serve(self, tasks: int, commands: int, answers: int) -> None:  # pragma: no cover - in the forked worker
        """A worker's whole life: for each message, the points it takes from ``tasks`` until it takes a stop,
        answered 1 (done) or 0."""
        code = 0
        try:
            with contextlib.suppress(OSError, AttributeError):  # die with the process that forked it (Linux)
                ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            with parallel.limited_blas(1):  # the other workers have the other cores
                while (frame := _read_frame(commands)) is not None:
                    try:
                        done = self.decode(frame).run(_taken(tasks))
                    except Exception:  # noqa: BLE001 - a batch it cannot read is a batch it failed
                        done = False
                    os.write(answers, b"1" if done else b"0")
        except BaseException:  # noqa: BLE001 - nothing may unwind into the forking process's code here
            code = _FAILED
        finally:
            os._exit(code)


def _taken(tasks: int) -> Iterator[int]:  # pragma: no cover - in the forked worker
    """The points this worker takes, one at a time, until it takes a stop (a read of 8 bytes from a pipe written
    4 KiB at a time returns one whole task)."""
    while True:
        data = os.read(tasks, _LENGTH.size)
        if len(data) < _LENGTH.size:
            raise OSError("the tasks pipe ended")
        (index,) = _LENGTH.unpack(data)
        if index == _STOP:
            return
        yield index


def _write_frame(fd: int, payload: bytes) -> None:
    data = memoryview(_LENGTH.pack(len(payload)) + payload)
    while data:
        data = data[os.write(fd, data) :]


def _read_frame(fd: int) -> bytes | None:
    """The next length-prefixed frame, or None when the writer closed the pipe."""
    header = _read_exactly(fd, _LENGTH.size)
    if len(header) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(header)
    return _read_exactly(fd, length)


def _read_exactly(fd: int, count: int) -> bytes:
    chunks, got = [], 0
    while got < count:
        chunk = os.read(fd, count - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def shared_slots(count: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> list[np.ndarray]:
    """``count`` arrays of ``shape`` and ``dtype`` in one fresh shared anonymous mapping, for callers without a
    mapping of their own (the mapping is freed with the last of them)."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    stride = -(-size // 64) * 64
    memory = mmap.mmap(-1, max(1, count * stride))
    entries = int(np.prod(shape))
    views = [np.frombuffer(memory, dtype=dtype, count=entries, offset=k * stride).reshape(shape) for k in range(count)]
    return views
