"""The process that runs a user's functions: forked for one check, it serves calls until its parent is done.

It holds nothing a verdict depends on. It loads the user's module, then answers each request (call forward or
backward on these arrays) with what the user's function returned: numeric arrays through shared memory, anything
else as its description, an exception as its type, message and the user's frame. Caches stay here; the parent
refers to them by number. Before the user's code runs, the process

- closes every file descriptor but 0, 1, 2 and its socket, which it moves to a high number (so the user's code
  cannot reach the parent's other channels, and does not stumble on this one);
- points stdout at stderr (results own the parent's stdout);
- ignores SIGINT, SIGTERM and SIGHUP (its parent decides when it ends) and dies with its parent (Linux);
- limits its address space to what it already maps plus ``max_memory`` (``RLIMIT_AS``), so a layer that
  allocates without bound gets a ``MemoryError`` (reported as its own) instead of taking the machine down.

When the user's code closes the socket, the process cannot answer: it leaves its last words (where the socket was
closed) at the end of the shared mapping and exits with ``EXIT_LAST_WORDS``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import resource
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import CodeType
from typing import Any, NoReturn

import numpy as np

from convcheck.isolation.channel import Arena, Channel, Outgoing, ProtocolViolation, crosses, decode_array
from convcheck.isolation.compiled import use_in_child
from convcheck.isolation.many import serve_many
from convcheck.spec import ImplRef
from convcheck.user.adapter import describe
from convcheck.user.arguments import accepted_keywords, keywords_for
from convcheck.user.errors import (
    Frame,
    ImplementationError,
    exception_lineage,
    exception_name,
    innermost_frame,
    is_library,
    shorten,
)
from convcheck.user.loader import load_impl  # imported here, before the fork: the child only uses it

__all__ = ["EXIT_LAST_WORDS", "child_main", "frame_to_json"]

EXIT_LAST_WORDS = 86  # the child's exit code when it left its last words in shared memory
_PR_SET_PDEATHSIG = 1
_HIGH_FD = 600
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)
_MMAP_THRESHOLD = 32 * 2**20  # glibc's largest on 64-bit systems
_TRIM_THRESHOLD = 2**30


def frame_to_json(frame: Frame | None) -> dict[str, Any] | None:
    if frame is None:
        return None
    return {"file": frame.file, "line": frame.line, "function": frame.function, "source": frame.source}


def child_main(
    sock: socket.socket,
    key: bytes,
    arena: Arena,
    ref: ImplRef,
    memory_limit: int | None,
    parent: int,
    compiled: tuple[str, CodeType] | None = None,
) -> NoReturn:
    """The forked child: set itself up, serve, and end with ``os._exit`` (it never returns to the caller).
    ``compiled``: the user's file compiled by the parent (``isolation.compiled``)."""
    code = 70
    try:
        fd = _prepare(sock, parent, memory_limit)
        use_in_child(compiled)
        code = _Server(fd, key, arena, ref).serve()
    except BaseException:  # noqa: BLE001 - nothing may unwind into the parent's code in this process
        code = 70
    finally:
        os._exit(code)


def _prepare(sock: socket.socket, parent: int, memory_limit: int | None) -> int:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(70)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    with contextlib.suppress(OSError):
        os.dup2(2, 1)
    # Fresh streams: the parent's buffers may hold text it has not flushed yet, which must not appear twice.
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    high = _HIGH_FD + random.randrange(400)
    fd = os.dup2(sock.fileno(), high, inheritable=False)
    sock.detach()
    os.closerange(3, fd)
    os.closerange(fd + 1, max(fd + 2, os.sysconf("SC_OPEN_MAX")))
    keep_freed_memory()
    if memory_limit is not None:
        _limit_memory(memory_limit)
    return fd


def keep_freed_memory() -> None:
    """glibc's ``malloc`` keeps what the user's code frees (``mallopt``; nothing where glibc is absent).

    By default large arrays (from 128 KiB, adjusted as they come) are mapped afresh and unmapped when freed, and
    freed memory at the top of the heap is given back: in a process that starts fresh for each check, a numpy
    layer then takes a page fault on every 4 KiB of every large temporary at every call (3,700 per call at the seed
    geometry's 14 MB im2col matrix, measured). Up to ``_MMAP_THRESHOLD`` bytes, arrays now come from the heap, and
    the heap is not trimmed below ``_TRIM_THRESHOLD``: memory freed by one call is reused by the next (190 faults
    a call, 1.8× less CPU; see ``benchmarks/RESULTS.md``). The process lives for one check, under its memory limit.
    """
    with contextlib.suppress(OSError, AttributeError, ValueError):
        mallopt = ctypes.CDLL(None).mallopt
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)


def _limit_memory(allowed: int) -> None:
    """``RLIMIT_AS``: what this process maps now (the interpreter, numpy, the arena) plus ``allowed`` bytes."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return
    limit = mapped + allowed
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class _Server:
    """The request loop (see the module docstring)."""

    def __init__(self, fd: int, key: bytes, arena: Arena, ref: ImplRef) -> None:
        self.fd = fd
        self.inode = os.fstat(fd).st_ino
        self.arena = arena
        self.channel = Channel(socket.socket(fileno=fd), key, limit=2 * arena.half + 2**20)
        self.ref = ref
        self.caches: dict[int, tuple[Any, list[np.ndarray], list[np.ndarray] | None]] = {}
        self.next_cache = 0
        self.functions: dict[str, Callable[..., Any]] = {}
        self.roots: tuple[Path, ...] = ()
        self.role = "load"
        self.closed_at: Frame | None = None
        self.keyword_cache: dict[str, dict[str, Any]] = {}
        self._watch_descriptors()

    def serve(self) -> int:
        if not self._load():
            return 0
        while True:
            try:
                request, blobs = self.channel.receive()
            except (EOFError, OSError, ProtocolViolation):
                return 0 if self._channel_alive() else self._last_words()
            if request.get("op") == "stop":
                return 0
            if request.get("op") == "cpu":  # asked for, not sent with every answer: the clock is a slow system call
                self.channel.send({"kind": "cpu", "cpu": time.process_time()})
                continue
            for number in request.get("release", []):
                self.caches.pop(int(number), None)
            outgoing = Outgoing(self.arena, 1)
            if request.get("op") == "calls":
                reply = {"kind": "replies", "replies": self._calls(request.get("calls"), blobs, outgoing)}
            elif request.get("op") == "many":
                reply, outgoing = self._many(request, blobs)
            else:
                reply = self._call(request, blobs, outgoing)
            if not self._channel_alive():
                return self._last_words()
            try:
                self.channel.send(reply, outgoing)
            except OSError:
                return self._last_words()

    def _load(self) -> bool:
        try:
            impl = load_impl(self.ref)
        except ImplementationError as exc:
            self.channel.send({"kind": "load_failed", "message": str(exc), "file": exc.file, "line": exc.line})
            return False
        self.functions = {"forward": impl.forward, "backward": impl.backward}
        self.signature = impl.ref.signature
        self.roots = impl.roots
        if not self._channel_alive():  # the module closed it at import time
            self._last_words()
            return False
        accepts, shown = accepted_keywords(impl.forward, impl.ref.signature)
        self.channel.send({"kind": "ready", "origin": impl.origin, "accepts": accepts, "forward_signature": shown})
        return True

    # -- one call -------------------------------------------------------------------------------------------

    def _calls(self, calls: object, blobs: memoryview, outgoing: Outgoing) -> list[dict[str, Any]]:
        """Several calls in one request, in order, their answers in one reply (``session.Session.calls``); a
        call that raised ends the list: the parent would not have made the calls after it."""
        replies: list[dict[str, Any]] = []
        for call in calls if isinstance(calls, list) else []:
            replies.append(self._call(call, blobs, outgoing))
            if replies[-1]["kind"] != "returned":
                break
        return replies

    def _call(self, request: dict[str, Any], blobs: memoryview, outgoing: Outgoing) -> dict[str, Any]:
        role = str(request.get("role"))
        self.role = role
        audit = bool(request.get("audit"))
        shared: list[np.ndarray] = []  # the arrays as the parent sent them (pristine)
        handed: list[np.ndarray] = []  # the fresh copies the user gets
        args: list[Any] = []
        record = None
        for arg in request.get("args", []):
            if "array" in arg:
                # A view of the parent's half: it stays as sent until the next request. The user gets a copy.
                pristine = decode_array(arg["array"], self.arena, 0, blobs, copy=False)
                shared.append(pristine)
                handed.append(pristine.copy())
                args.append(handed[-1])
            elif "cache" in arg:
                record = self.caches[int(arg["cache"])]
                args.append(record[0])
            elif "none" in arg:
                args.append(None)
            else:
                args.append(_tuples(arg.get("value")))
        function = self.functions[role]
        keywords = self._keywords(function, request.get("keywords")) if role == "forward" else {}
        try:
            returned = function(*args, **keywords)
        except BaseException as exc:  # noqa: BLE001 - whatever the user's code raises is its answer
            return self._raised(exc)
        reply: dict[str, Any] = {"kind": "returned"}
        if audit:
            reply["modified"] = {
                str(i): outgoing.array(new)
                for i, (new, old) in enumerate(zip(handed, shared, strict=True))
                if not np.array_equal(new, old, equal_nan=True)
            }
            if record is not None:
                reply["cached_modified"] = self._cached_changes(record, outgoing)
        if role == "forward":
            if audit:  # the contract's calls (the only ones whose output reuse is reported)
                self._watch_output(returned, reply)
            reply["value"], cache = self._forward_value(returned, outgoing)
            if cache is not None and request.get("keep_cache") is False:  # a call sent ahead: no backward follows
                reply["value"]["items"][1] = {"none": True}
            elif cache is not None:
                self.next_cache += 1
                snapshots = [a.copy() for a in handed] if audit else None
                self.caches[self.next_cache] = (cache[0], handed, snapshots)
                reply["cache"] = self.next_cache
        else:
            reply["value"] = self._sequence(returned, 3, outgoing)
        return reply

    def _keywords(self, function: Callable[..., Any], offered: object) -> dict[str, Any]:
        """``keywords_for`` the forward and the keywords' values the parent sent, worked out once per distinct
        values (they are the same at every call of a check; reading a signature costs more than the call)."""
        values = dict(offered) if isinstance(offered, dict) else {}
        key = json.dumps(values, sort_keys=True)
        known = self.keyword_cache.get(key)
        if known is None:
            known = {k: _tuples(v) for k, v in keywords_for(function, values, self.signature).items()}
            self.keyword_cache[key] = known
        return known

    def _many(self, request: dict[str, Any], blobs: memoryview) -> tuple[dict[str, Any], Outgoing]:
        """A batch of forward calls at perturbed points (``convcheck.isolation.many``)."""
        self.role = "forward"
        function = self.functions["forward"]
        bound = self._keywords(function, request.get("keywords"))  # read once per check, not per batch
        forward = lambda *args: function(*(_tuples(a) for a in args), **bound)  # noqa: E731
        return serve_many(request, blobs, self.arena, forward)

    def _watch_output(self, returned: object, reply: dict[str, Any]) -> None:
        """Keep the first array forward returned and a copy of it; tell the parent once a later call changed it
        (a forward that writes every result into one buffer it keeps: the parent only ever sees copies)."""
        first = getattr(self, "first_output", None)
        if first is None:
            if isinstance(returned, tuple | list) and len(returned) == 2 and isinstance(returned[0], np.ndarray):
                self.first_output = (returned[0], returned[0].copy())
            return
        array, snapshot = first
        if not np.array_equal(array, snapshot, equal_nan=True):
            reply["output_reused"] = True

    def _forward_value(self, returned: object, outgoing: Outgoing) -> tuple[dict[str, Any], tuple[Any] | None]:
        if isinstance(returned, tuple | list) and len(returned) == 2:
            items = [_encode(returned[0], outgoing), {"kept": True}]
            return {"sequence": type(returned).__name__, "items": items}, (returned[1],)
        return {"describe": describe(returned)}, None

    @staticmethod
    def _sequence(returned: object, length: int, outgoing: Outgoing) -> dict[str, Any]:
        if isinstance(returned, tuple | list) and len(returned) == length:
            return {"sequence": type(returned).__name__, "items": [_encode(v, outgoing) for v in returned]}
        return {"describe": describe(returned)}

    @staticmethod
    def _cached_changes(record: tuple[Any, list[np.ndarray], list[np.ndarray] | None], outgoing: Outgoing) -> dict:
        _, handed, snapshots = record
        if snapshots is None:
            return {}
        changed = {}
        for i, (now, before) in enumerate(zip(handed, snapshots, strict=True)):
            if not np.array_equal(now, before, equal_nan=True):
                changed[str(i)] = outgoing.array(now)
                snapshots[i] = now.copy()
        return changed

    def _raised(self, exc: BaseException) -> dict[str, Any]:
        message = shorten(str(exc))
        if isinstance(exc, MemoryError):
            limit = resource.getrlimit(resource.RLIMIT_AS)[0]
            if limit != resource.RLIM_INFINITY:
                message = f"{message} (its process may use max_memory, beyond what it had mapped at the start)"
        frame = innermost_frame(exc.__traceback__, self.roots)
        lineage = list(exception_lineage(exc))  # for a config's expected_error (base classes match)
        reply = {"kind": "raised", "type": exception_name(exc), "message": message, "frame": frame_to_json(frame)}
        return {**reply, "lineage": lineage}

    # -- the socket, and the user's code closing it ---------------------------------------------------------

    def _channel_alive(self) -> bool:
        try:
            return os.fstat(self.fd).st_ino == self.inode
        except OSError:
            return False

    def _last_words(self) -> int:
        self.arena.write_last_words(
            json.dumps({"kind": "closed", "role": self.role, "fd": self.fd, "frame": frame_to_json(self.closed_at)})
        )
        return EXIT_LAST_WORDS

    def _watch_descriptors(self) -> None:
        """Remember where the user's code closes this process's socket (``os.close`` and friends)."""
        server, real_close, real_closerange, real_dup2 = self, os.close, os.closerange, os.dup2

        def note(touched: bool) -> None:
            if touched and server.closed_at is None:
                server.closed_at = _caller(server.roots)

        def close(fd: int) -> None:
            note(fd == server.fd)
            real_close(fd)

        def closerange(low: int, high: int) -> None:
            note(low <= server.fd < high)
            real_closerange(low, high)

        def dup2(fd: int, fd2: int, inheritable: bool = True) -> int:
            note(fd2 == server.fd)
            return real_dup2(fd, fd2, inheritable)

        os.close, os.closerange, os.dup2 = close, closerange, dup2


def _tuples(value: object) -> object:
    """JSON's lists back to the tuples the parent sent (stride and padding per axis, (before, after) pairs)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _encode(value: object, outgoing: Outgoing) -> dict[str, Any]:
    if crosses(value):
        assert isinstance(value, np.ndarray)
        return {"array": outgoing.array(value)}
    if value is None:
        return {"none": True}
    return {"describe": describe(value)}


def _caller(roots: tuple[Path, ...]) -> Frame | None:
    """The innermost frame of the current stack in the user's code (not convcheck's, not a library's)."""
    for summary in reversed(traceback.extract_stack()):
        path = Path(summary.filename)
        if summary.filename.startswith("<") or is_library(path.resolve()):
            continue
        if not roots or any(path.resolve().is_relative_to(r.resolve()) for r in roots):
            return Frame(summary.filename, summary.lineno or 0, summary.name, summary.line or None)
    return None
