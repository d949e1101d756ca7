"""The channel between convcheck and the process that runs a user's code: framed messages, arrays in shared memory.

A message is one frame on a Unix socket: a header ``MAGIC · key · sequence number · payload length`` and the
payload, ``JSON length · JSON · blobs``. The key is drawn afresh for every check and the sequence numbers run in
step on both sides, so a frame that is not the answer to the request just sent (a stray write, a replayed or
forged frame, garbage) is refused as a protocol violation. Nothing received is ever unpickled: the JSON holds
plain values and array descriptions (dtype, shape, where the bytes are), and an array's bytes lie either in the
sender's half of a shared anonymous mapping (``Arena``, set up before the fork) or inline among the blobs.

Only numeric arrays cross (``bool``, integers, floats, complex): anything else is sent as its description.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import socket
import struct
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Arena", "ArenaPool", "Channel", "Outgoing", "ProtocolViolation", "decode_array"]

MAGIC = b"CCK1"
KEY_BYTES = 16
_HEADER = struct.Struct("!4s16sQQ")
_LENGTH = struct.Struct("!Q")
_ALIGN = 64
_KINDS = "biufc"  # numpy dtype kinds that cross: bool, int, uint, float, complex
LAST_WORDS_BYTES = 8192  # the end of the mapping, for a message when the socket itself is gone


class ProtocolViolation(Exception):  # noqa: N818 - a violation, reported as such
    """A frame that is not what the protocol allows (bad header, key, sequence, size or description)."""


@dataclass(eq=False)  # an arena is itself: identity (and hashable, for ``_MAPPED_HERE``)
class Arena:
    """A shared anonymous mapping made before the fork: the parent writes its arrays in the first half, the
    child in the second, and the last ``LAST_WORDS_BYTES`` hold the child's last words (see ``child``)."""

    half: int
    memory: mmap.mmap = field(init=False)
    fd: int = field(init=False, default=-1)  # a memfd where the system has them (passed to the fork server)
    owner: int = field(init=False, default=-1)  # the process that mapped it: only that one may unmap it

    def __post_init__(self) -> None:
        self.half = max(_ALIGN, -(-self.half // _ALIGN) * _ALIGN)
        size = 2 * self.half + LAST_WORDS_BYTES
        if hasattr(os, "memfd_create"):
            self.fd = os.memfd_create("convcheck-arena", os.MFD_CLOEXEC)
            os.ftruncate(self.fd, size)
            self.memory = mmap.mmap(self.fd, size)
        else:  # pragma: no cover - non-Linux systems
            self.memory = mmap.mmap(-1, size)
        self.forked_with(False)
        self._mapped_here()

    @classmethod
    def attach(cls, fd: int, half: int) -> Arena:
        """The arena whose memfd ``fd`` another process passed (the fork server's copy; ``fd`` is closed)."""
        arena = cls.__new__(cls)
        arena.half, arena.fd = half, -1
        try:
            arena.memory = mmap.mmap(fd, 2 * half + LAST_WORDS_BYTES)
        finally:
            os.close(fd)
        arena._mapped_here()
        return arena

    def _mapped_here(self) -> None:
        self.owner = os.getpid()
        _MAPPED_HERE.add(self)

    def forked_with(self, inherited: bool) -> None:
        """Whether a process forked now gets this mapping (Linux ``MADV_DOFORK``/``MADV_DONTFORK``): only the
        child of the session that uses it must, never the child of another session of this process (threads
        of a Dask worker), which could otherwise write into it while that session reads it."""
        option = getattr(mmap, "MADV_DOFORK" if inherited else "MADV_DONTFORK", None)
        if option is not None:
            with contextlib.suppress(OSError, ValueError):
                self.memory.madvise(option)

    def region(self, side: int) -> tuple[int, int]:
        """``(start, end)`` of side 0 (the parent's) or 1 (the child's)."""
        return side * self.half, (side + 1) * self.half

    def close(self) -> None:
        """Unmap it and close its memfd; in a process forked from its owner, nothing (see ``_keep_inherited``)."""
        if self.owner != os.getpid():
            return
        self.memory.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def write_last_words(self, text: str) -> None:
        data = text.encode("utf-8", "replace")[: LAST_WORDS_BYTES - 8]
        start = 2 * self.half
        self.memory[start + 8 : start + 8 + len(data)] = data
        self.memory[start : start + 8] = _LENGTH.pack(len(data))

    def read_last_words(self) -> str | None:
        start = 2 * self.half
        (length,) = _LENGTH.unpack(self.memory[start : start + 8])
        if not 0 < length <= LAST_WORDS_BYTES - 8:
            return None
        return bytes(self.memory[start + 8 : start + 8 + length]).decode("utf-8", "replace")


# The arenas this process mapped, and those of the process it was forked from, kept for good (``_keep_inherited``).
_MAPPED_HERE: weakref.WeakSet[Arena] = weakref.WeakSet()
_INHERITED: list[Arena] = []


def _keep_inherited() -> None:
    """In a process just forked: keep every arena of its parent alive, unused, until this process ends.

    An arena is not mapped in a forked process (``MADV_DONTFORK``), but its ``mmap`` object is there, and freed it
    would unmap its address range, where this process may have mapped something else since (a large numpy
    array, another arena): that memory would vanish under it, and the process crash (SIGSEGV) when it next
    touched it. A batch worker forked after a check had kept arenas did exactly that. Kept, the objects cost a
    few hundred bytes each; ``Arena.close`` does nothing for them either (nor closes their descriptor numbers,
    which this process may have reused)."""
    _INHERITED.extend(_MAPPED_HERE)
    _MAPPED_HERE.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_keep_inherited)


class ArenaPool:
    """Arenas kept between checks by the process that forks the children (at most ``keep`` of them, each at most
    ``largest`` bytes): a fresh mapping costs a page fault on every page each side touches, at every check, and a
    kept one only in the child (whose mapping is fresh). A kept arena holds what the last check left in it; a
    child may read that (another check's arrays: nothing it could not compute itself), and nothing is read from an
    arena but what the current check's messages describe; its last words are cleared before it is handed out."""

    def __init__(self, keep: int = 2, largest: int = 2**26) -> None:
        self.keep, self.largest = keep, largest
        self.free: list[Arena] = []
        self.owner = os.getpid()
        self.lock = threading.Lock()  # sessions may run in several threads (a Dask worker's)

    def take(self, half: int) -> Arena:
        """An arena with halves of at least ``half`` bytes (a kept one if one is large enough)."""
        with self.lock:
            if self.owner != os.getpid():  # a forked copy of this process: its arenas are the parent's
                self.free, self.owner = [], os.getpid()
            for arena in self.free:
                if arena.half >= half:
                    self.free.remove(arena)
                    arena.write_last_words("")
                    return arena
        return Arena(half)

    def give_back(self, arena: Arena) -> None:
        with self.lock:
            if self.owner != os.getpid() or len(arena.memory) > self.largest:
                dropped = [arena]
            else:
                self.free.append(arena)
                self.free.sort(key=lambda a: a.half)
                dropped = self.free[: max(0, len(self.free) - self.keep)]  # the smallest first
                del self.free[: len(dropped)]
        for old in dropped:
            with contextlib.suppress(BufferError):  # an array view still alive keeps it; the GC frees it
                old.close()


class Outgoing:
    """A message being composed: arrays go to the sender's half of the arena while they fit, else inline."""

    def __init__(self, arena: Arena, side: int) -> None:
        self.arena = arena
        self.cursor, self.end = arena.region(side)
        self.blobs: list[bytes] = []
        self.inline = 0

    def array(self, value: np.ndarray) -> dict[str, Any]:
        """The description of ``value`` (numeric), its bytes placed in shared memory or inline."""
        value = np.ascontiguousarray(value)
        meta: dict[str, Any] = {"dtype": value.dtype.str, "shape": list(value.shape), "nbytes": int(value.nbytes)}
        start = -(-self.cursor // _ALIGN) * _ALIGN
        if start + value.nbytes <= self.end:
            target = np.frombuffer(self.arena.memory, dtype=value.dtype, count=value.size, offset=start)
            target[...] = value.reshape(-1)
            self.cursor = start + value.nbytes
            meta.update(at="shared", offset=start)
        else:
            self.blobs.append(value.tobytes())
            meta.update(at="inline", offset=self.inline)
            self.inline += value.nbytes
        return meta

    def reserve(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[dict[str, Any], np.ndarray] | None:
        """Room for an array in the sender's half, to be filled in place (by this process or one forked from it):
        its description and a writable view, or None when it does not fit."""
        dtype = np.dtype(dtype)
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        start = -(-self.cursor // _ALIGN) * _ALIGN
        if start + nbytes > self.end:
            return None
        self.cursor = start + nbytes
        view = np.frombuffer(self.arena.memory, dtype=dtype, count=count, offset=start).reshape(shape)
        meta = {"dtype": dtype.str, "shape": list(shape), "nbytes": nbytes, "at": "shared", "offset": start}
        return meta, view


def crosses(value: object) -> bool:
    """Whether ``value`` can be sent as an array (a numeric numpy array)."""
    return isinstance(value, np.ndarray) and value.dtype.kind in _KINDS and not value.dtype.hasobject


def decode_array(meta: object, arena: Arena, side: int, blobs: memoryview, *, copy: bool = True) -> np.ndarray:
    """A fresh array from its description, which is checked against the protocol before anything is read
    (``copy=False``: a view of the bytes where they lie, valid until the sender writes again).

    Raises:
        ProtocolViolation: a description that is not a dict of the expected fields, a non-numeric dtype, a shape
            that does not match the byte count, or bytes outside the sender's region.
    """
    if not isinstance(meta, dict):
        raise ProtocolViolation("an array description is not an object")
    try:
        dtype = np.dtype(str(meta["dtype"]))
        shape = tuple(int(n) for n in meta["shape"])
        nbytes, offset, at = int(meta["nbytes"]), int(meta["offset"]), meta["at"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolViolation(f"a malformed array description ({exc})") from None
    if dtype.kind not in _KINDS or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise ProtocolViolation(f"an array of dtype {dtype} cannot cross")
    if any(n < 0 for n in shape) or math.prod(shape) * dtype.itemsize != nbytes or offset < 0:
        raise ProtocolViolation("an array description whose shape does not match its size")
    count = nbytes // dtype.itemsize if dtype.itemsize else 0
    if at == "shared":
        start, end = arena.region(side)
        if offset < start or offset + nbytes > end:
            raise ProtocolViolation("an array outside the sender's shared memory")
        flat = np.frombuffer(arena.memory, dtype=dtype, count=count, offset=offset)
    elif at == "inline":
        if offset + nbytes > len(blobs):
            raise ProtocolViolation("an inline array beyond the message")
        flat = np.frombuffer(blobs, dtype=dtype, count=count, offset=offset)
    else:
        raise ProtocolViolation("an array description with an unknown location")
    return flat.reshape(shape).copy() if copy else flat.reshape(shape)


class Channel:
    """One end of the framed, keyed protocol on a connected Unix socket (see the module docstring).

    ``limit`` bounds the payload this end accepts (a peer cannot make it allocate more). ``wakes``: seconds after
    which a wait for the peer returns to Python code and resumes, so that an exception set asynchronously in the
    waiting thread (the Dask executor's timeout, ``batch.dask``) is raised while it waits; None waits in one call.
    """

    def __init__(self, sock: socket.socket, key: bytes, limit: int, wakes: float | None = None) -> None:
        self.sock = sock
        sock.settimeout(wakes)
        self.key = key
        self.limit = limit
        self.sent = 0
        self.received = 0

    def send(self, message: dict[str, Any], outgoing: Outgoing | None = None) -> None:
        blobs = outgoing.blobs if outgoing is not None else []
        body = json.dumps(message, separators=(",", ":"), allow_nan=True).encode()
        length = _LENGTH.size + len(body) + sum(len(b) for b in blobs)
        self.sent += 1
        header = _HEADER.pack(MAGIC, self.key, self.sent, length)
        self._all(b"".join([header, _LENGTH.pack(len(body)), body]))
        for blob in blobs:
            self._all(blob)

    def _all(self, data: bytes) -> None:
        """``sendall``, also on a socket with a timeout (``wakes``): a timeout only means that the peer is busy."""
        if self.sock.gettimeout() is None:
            self.sock.sendall(data)
            return
        view, sent = memoryview(data), 0
        while sent < len(view):
            with contextlib.suppress(TimeoutError):
                sent += self.sock.send(view[sent:])

    def receive(self) -> tuple[dict[str, Any], memoryview]:
        """The next message and its blobs.

        Raises:
            EOFError: the peer closed the socket (or died) before a whole frame arrived.
            ProtocolViolation: anything but the next frame of this channel.
        """
        magic, key, sequence, length = _HEADER.unpack(self._exactly(_HEADER.size))
        if magic != MAGIC or key != self.key:
            raise ProtocolViolation("a frame without this check's key")
        if sequence != self.received + 1:
            raise ProtocolViolation(f"frame {sequence} where frame {self.received + 1} was due")
        if not _LENGTH.size <= length <= self.limit:
            raise ProtocolViolation(f"a frame of {length} bytes (at most {self.limit} allowed)")
        self.received = sequence
        payload = memoryview(self._exactly(length))
        (body_length,) = _LENGTH.unpack(payload[: _LENGTH.size])
        if body_length > length - _LENGTH.size:
            raise ProtocolViolation("a frame whose message is longer than the frame")
        try:
            message = json.loads(bytes(payload[_LENGTH.size : _LENGTH.size + body_length]))
        except ValueError:
            raise ProtocolViolation("a frame whose message is not JSON") from None
        if not isinstance(message, dict):
            raise ProtocolViolation("a frame whose message is not an object")
        return message, payload[_LENGTH.size + body_length :]

    def _exactly(self, count: int) -> bytearray:
        data = bytearray(count)
        view = memoryview(data)
        got = 0
        while got < count:
            try:
                n = self.sock.recv_into(view[got:], count - got)
            except TimeoutError:  # a socket that ``wakes``: Python code runs between waits (see ``Channel``)
                continue
            if n == 0:
                raise EOFError("the channel was closed")
            got += n
        return data
