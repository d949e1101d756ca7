"""The judging side: a fresh process per check for the user's code, and a ``UserLayer`` whose calls go there.

``Session`` has the child (``convcheck.isolation.child``) forked by this process's fork server
(``isolation.forkserver``: a clean process forked from this one, which never loaded user code) and talks to it
over the framed channel. ``RemoteLayer`` is a ``UserLayer`` like any other (layouts, shape checks, in-place
audits, the contract's messages all happen here), except that the two user functions run in the child: the arrays
handed to them go through shared memory, what they return comes back as raw arrays (or descriptions), caches stay
in the child as numbered handles, and in-place changes the user's code makes to its arguments are copied back onto
the arrays this side handed over, so the contract sees them exactly as in one process.

Speed: the engine's calls are predicted and sent ahead, many to one request (``isolation.ahead``); the shared
memory is kept from one check to the next (``channel.ArenaPool``). Several sessions for one check (the
perturbation groups measured by several processes, each answering into its own half of its arena) fit the same
design: the engine's order of groups decides where each result goes, so estimates stay bit-identical.
A user's layer measures its perturbed points by batches (``RemoteLayer.forward_many``,
``convcheck.isolation.many``): one request carries the base arrays and a batch of changes, the child evaluates
them (on a pool of processes forked from it for a large layer) and answers with every output in its half of the
arena, in the engine's order of groups, so estimates stay bit-identical.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import secrets
import signal
import socket
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from convcheck.isolation.channel import KEY_BYTES, Arena, ArenaPool, Channel, Outgoing, ProtocolViolation, decode_array
from convcheck.isolation.child import EXIT_LAST_WORDS, child_main
from convcheck.isolation.compiled import code_for
from convcheck.isolation.forkserver import ForkServer, fork_server
from convcheck.isolation.many import Pending, encode_points
from convcheck.numeric.fanout import Point
from convcheck.spec import ImplRef
from convcheck.user.adapter import ForeignException
from convcheck.user.errors import Frame, ImplementationError, UserFault

__all__ = [
    "AHEAD_BYTES",
    "AHEAD_CALLS",
    "BYTES_PER_ENTRY",
    "MANY_OUTPUTS",
    "IsolationFault",
    "RemoteCache",
    "Session",
    "arena_half",
    "probe",
]

WAKE_SECONDS = 0.1  # how often a session off the main thread wakes while it waits for its child
END_GRACE = 2.0  # seconds a child that stopped answering has to exit before it is killed
AHEAD_CALLS = 16  # at most this many forward calls sent ahead with one (``isolation.ahead``)
AHEAD_BYTES = 2**23  # and at most as many as fit this many bytes of float64 arrays (large layers: one)
_FORKING = threading.Lock()
ARENAS = ArenaPool()  # the shared memory of this process's sessions, kept from one check to the next
BYTES_PER_ENTRY = 16  # room per array entry in shared memory (complex128); larger replies go inline
T = TypeVar("T")
MANY_OUTPUTS = 12  # float64 outputs a batch of forward calls (``RemoteLayer.forward_many``) can answer with


def arena_half(entries: int, ahead: int) -> int:
    """Bytes of each half of a session's shared memory: room for ``entries`` array entries (x, w, b and out) in
    complex128, or for ``ahead`` + 2 calls' worth of them in float64 (``isolation.ahead``), whichever is more."""
    return max(2 * BYTES_PER_ENTRY, 8 * (ahead + 2)) * entries + 4096


class IsolationFault(UserFault):
    """The user's process ended, closed its channel, or broke the protocol: the check cannot go on."""


def _cause(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"killed by {name}" + ("; out of memory?" if name == "SIGKILL" else "")
    return f"exit code {os.WEXITSTATUS(status)}" if os.WIFEXITED(status) else f"status {status}"


def _frame(data: object) -> Frame | None:
    if not isinstance(data, dict):
        return None
    try:
        source = data.get("source")
        return Frame(str(data["file"]), int(data["line"]), str(data["function"]), str(source) if source else None)
    except (KeyError, TypeError, ValueError):
        return None


class Session:
    """One child process running the user's functions named by ``ref`` (see the module docstring).

    Args:
        ref: the implementation to load in the child.
        entries: the entries of x, w, b and out together (sizes the shared memory).
        ahead: the calls that may be sent ahead with one call (``calls``; room for them in the shared memory).
        memory_limit: bytes the child may allocate beyond what it maps at the start; None for no limit.
    Raises:
        ImplementationError: the child could not load the implementation (the message is the child's).
        IsolationFault: the child died or broke the protocol while loading.
    """

    def __init__(self, ref: ImplRef, entries: int, memory_limit: int | None, ahead: int = 0) -> None:
        self.arena_returned = False
        self.arena = ARENAS.take(arena_half(entries, ahead))
        key = secrets.token_bytes(KEY_BYTES)
        mine, theirs = socket.socketpair()
        self.server = fork_server()
        try:
            pid = _start(self.server, theirs, mine, key, self.arena, ref, memory_limit)
        except BaseException:
            self.arena_returned = True
            raise
        theirs.close()
        self.pid: int | None = pid
        self.status: int | None = None
        # Off the main thread no signal can interrupt a wait for the child (a timeout there is an asynchronous
        # exception: ``batch.dask``), so the waits wake up regularly to let it be raised.
        wakes = None if threading.current_thread() is threading.main_thread() else WAKE_SECONDS
        self.channel = Channel(mine, key, limit=2 * self.arena.half + 2**20, wakes=wakes)
        self.released: list[int] = []
        self.pending: Pending[Any] | None = None  # a ``call_later`` whose answer is on its way
        self.exchanges = 0  # requests sent so far (see ``_exchange``)
        self.cpu = 0.0  # the child's CPU seconds so far, as it reports them
        self.role = "load"
        try:
            self._ready(ref)
        except BaseException:
            self.close()
            raise

    def _ready(self, ref: ImplRef) -> None:
        reply, _ = self._receive()
        if reply.get("kind") == "load_failed":
            line = reply.get("line")
            raise ImplementationError(
                str(reply.get("message")),
                file=str(reply["file"]) if reply.get("file") else None,
                line=int(line) if isinstance(line, int) else None,
            )
        if reply.get("kind") != "ready":
            raise self._violation(ProtocolViolation("no ready message"))
        self.origin = str(reply.get("origin", ref.module))
        accepts = reply.get("accepts")
        # The forward's own keywords (None: any), for a check that needs dilation or groups (``refused_keywords``).
        self.accepts = [str(name) for name in accepts] if isinstance(accepts, list) else None
        self.forward_signature = str(reply.get("forward_signature", "(...)"))

    # -- calls ----------------------------------------------------------------------------------------------

    def call(
        self,
        role: str,
        args: list[Any],
        audit: bool,
        keywords: dict[str, Any] | None = None,
        many: tuple[list[Point], int, dict[str, Any]] | None = None,
    ) -> tuple[dict[str, Any], memoryview]:
        """Call the user's ``role`` function with ``args`` (arrays, ``RemoteCache`` or JSON values); ``keywords``:
        the values of the keywords the child passes where the function takes them (``keywords_for``).
        ``many = (points, workers, out)``: forward at each of those changes of ``args`` instead, every output of
        the shape and dtype ``out`` describes (``isolation.many``)."""
        reply, blobs = self._exchange(*self._call_request(role, args, audit, keywords, many))
        return self.answer(reply), blobs

    def call_later(
        self,
        args: list[Any],
        keywords: dict[str, Any] | None,
        many: tuple[list[Point], int, dict[str, Any]],
        read: Callable[[dict[str, Any], memoryview], T],
    ) -> Callable[[], T]:
        """``call("forward", args, False, keywords, many)`` sent now, its answer received later: the function
        returned gives ``read(answer, blobs)``, which runs once, when that function is called or before the next
        exchange, whichever comes first (``read`` must copy what it keeps out of shared memory)."""
        self._settle()
        request, outgoing = self._call_request("forward", args, False, keywords, many)
        self.exchanges += 1
        try:
            self.channel.send(request, outgoing)
        except OSError:
            raise self._ended() from None
        self.pending = Pending(lambda: read(*self._answered()))
        return self.pending.get

    def _answered(self) -> tuple[dict[str, Any], memoryview]:
        reply, blobs = self._receive()
        return self.answer(reply), blobs

    def _settle(self) -> None:
        """Receive the answer to a request sent by ``call_later`` if it is still on its way."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.settle()

    def _call_request(
        self,
        role: str,
        args: list[Any],
        audit: bool,
        keywords: dict[str, Any] | None,
        many: tuple[list[Point], int, dict[str, Any]] | None,
    ) -> tuple[dict[str, Any], Outgoing]:
        self.role = role
        outgoing = Outgoing(self.arena, 0)
        request = {
            "op": "call",
            **self._request(role, args, audit, keywords, outgoing, nones=many is not None),
            "release": self._release(),
        }
        if many is not None:
            request.update(op="many", points=encode_points(many[0], outgoing), workers=many[1], out=many[2])
        return request, outgoing

    def calls(self, calls: Sequence[tuple[str, list[Any], dict[str, Any] | None]]) -> tuple[list[Any], memoryview]:
        """Several unaudited forward calls ``(role, args, keywords)`` in one request, made in order by the child
        (which stops after one that raised); their replies, each to be read with ``answer``, and the blobs they
        share. The child keeps the user's cache of the first call only: the others' come back as None (these are
        the engine's calls, whose caches are never used; keeping them all would only grow the child's memory).
        Their arrays together must fit this side's half of the arena, or travel inline."""
        self.role = calls[0][0]
        outgoing = Outgoing(self.arena, 0)
        encoded = [self._request(role, args, False, keywords, outgoing) for role, args, keywords in calls]
        for later in encoded[1:]:
            later["keep_cache"] = False
        reply, blobs = self._exchange({"op": "calls", "calls": encoded, "release": self._release()}, outgoing)
        replies = reply.get("replies")
        if reply.get("kind") != "replies" or not isinstance(replies, list) or not 0 < len(replies) <= len(calls):
            raise self._violation(ProtocolViolation("an answer that is not the replies to the calls sent"))
        return replies, blobs

    def answer(self, reply: object) -> dict[str, Any]:
        """A reply to one call, checked: what the user's function returned, or its exception raised here.

        Raises:
            ForeignException: the user's function raised (its type, message and frame).
            IsolationFault: the reply is not one the protocol allows.
        """
        if not isinstance(reply, dict):
            raise self._violation(ProtocolViolation("a reply that is not an object"))
        if reply.get("kind") == "raised":
            lineage = tuple(str(name) for name in reply.get("lineage", ()))
            raise ForeignException(
                str(reply.get("type")), str(reply.get("message", "")), _frame(reply.get("frame")), lineage
            )
        if reply.get("kind") != "returned":
            raise self._violation(ProtocolViolation(f"an answer of kind {reply.get('kind')!r}"))
        return reply

    @staticmethod
    def _request(
        role: str,
        args: list[Any],
        audit: bool,
        keywords: dict[str, Any] | None,
        outgoing: Outgoing,
        nones: bool = False,
    ) -> dict[str, Any]:
        encoded: list[dict[str, Any]] = []
        for arg in args:
            if isinstance(arg, np.ndarray):
                encoded.append({"array": outgoing.array(arg)})
            elif isinstance(arg, RemoteCache):
                encoded.append({"cache": arg.number})
            elif arg is None and nones:
                encoded.append({"none": True})
            else:
                encoded.append({"value": arg})
        request = {"role": role, "args": encoded, "audit": audit}
        if keywords:
            request["keywords"] = keywords
        return request

    def _release(self) -> list[int]:
        release, self.released = self.released, []
        return release

    def _exchange(self, request: dict[str, Any], outgoing: Outgoing | None) -> tuple[dict[str, Any], memoryview]:
        """Send ``request`` and receive the answer. Every exchange may overwrite both halves of the arena, so
        ``exchanges`` counts them: an array description read later must come from the latest one."""
        self._settle()
        self.exchanges += 1
        try:
            self.channel.send(request, outgoing)
        except OSError:
            raise self._ended() from None
        return self._receive()

    def array(self, meta: object, blobs: memoryview, *, copy: bool = True) -> np.ndarray:
        try:
            return decode_array(meta, self.arena, 1, blobs, copy=copy)
        except ProtocolViolation as exc:
            raise self._violation(exc) from None

    def _receive(self) -> tuple[dict[str, Any], memoryview]:
        try:
            return self.channel.receive()
        except (EOFError, OSError):
            raise self._ended() from None
        except ProtocolViolation as exc:
            raise self._violation(exc) from None

    def child_cpu(self) -> float:
        """The CPU seconds the child has used so far, as it says (never decreasing)."""
        self._settle()
        try:
            self.channel.send({"op": "cpu"})
        except OSError:
            return self.cpu
        reply, _ = self._receive()
        cpu = reply.get("cpu")
        if reply.get("kind") == "cpu" and isinstance(cpu, int | float) and math.isfinite(cpu) and cpu >= self.cpu:
            self.cpu = float(cpu)
        return self.cpu

    # -- endings --------------------------------------------------------------------------------------------

    def _ended(self) -> UserFault:
        """What to say when the child stopped answering: its last words, or how it ended (a child that closed
        its socket but goes on is killed after ``END_GRACE`` seconds)."""
        deadline = time.monotonic() + END_GRACE
        status = self._reap(wait=False)
        while status is None and self.pid is not None and time.monotonic() < deadline:
            time.sleep(0.002)
            status = self._reap(wait=False)
        if status is None and self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            status = self._reap(wait=True)
        words = self.arena.read_last_words() if status is not None and _exit_code(status) == EXIT_LAST_WORDS else None
        if words is not None:
            fault = _closed_fault(words, self.role)
            if fault is not None:
                return fault
        during = "while loading it" if self.role == "load" else f"during a {self.role} call"
        cause = _cause(status) if status is not None else "it stopped answering"
        return IsolationFault(
            f"the implementation crashed the worker process ({cause}) {during} (os._exit, a crash in native code, "
            "or its memory limit, max_memory); the check ran in its own process, so the other checks were not "
            "affected"
        )

    def _violation(self, exc: ProtocolViolation) -> IsolationFault:
        self.close()
        return IsolationFault(
            f"the implementation's process broke convcheck's protocol during a {self.role} call ({exc}): code under "
            "check wrote on the channel convcheck uses to talk to it"
        )

    def _reap(self, wait: bool) -> int | None:
        """The child's wait status once it has ended (``wait``: wait for that), else None."""
        if self.pid is None:
            return self.status
        if self.server is not None:
            try:
                status = self.server.wait(self.pid, wait)
            except OSError:  # the fork server is gone, and its children with it
                status = None
                wait = True
            if status is None and not wait:
                return None
            self.status = status
        else:  # pragma: no cover - no fork server on this system
            with contextlib.suppress(ChildProcessError):
                pid, status = os.waitpid(self.pid, 0 if wait else os.WNOHANG)
                if pid == 0:
                    return None
                self.status = status
        self.pid = None
        return self.status

    def close(self) -> None:
        """Kill the child (whatever it is doing) and reap it; free the channel and the shared memory."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._reap(wait=True)
        with contextlib.suppress(OSError):
            self.channel.sock.close()
        if not self.arena_returned:
            self.arena_returned = True
            ARENAS.give_back(self.arena)  # nothing of this check reads it any more (decoded arrays are copies)


def _start(
    server: ForkServer | None,
    theirs: socket.socket,
    mine: socket.socket,
    key: bytes,
    arena: Arena,
    ref: ImplRef,
    memory_limit: int | None,
) -> int:
    """Start a session's child (through ``server``, or from here without one) and return its pid. If it cannot be
    started, both sockets are closed and the arena is given back or, after an interruption, closed.

    Raises:
        IsolationFault: the child could not be started (``OSError``).
        BaseException: the check's timeout (or Ctrl-C) while the fork server started the child, as raised.
    """
    try:
        if server is not None:
            return server.spawn(theirs, arena, key, ref, memory_limit)
        return _fork_here(theirs, mine, key, arena, ref, memory_limit)  # pragma: no cover - no fork server here
    except OSError as exc:
        mine.close()
        theirs.close()
        ARENAS.give_back(arena)
        raise IsolationFault(f"convcheck could not start the process to run the implementation in ({exc})") from None
    except BaseException:
        mine.close()
        theirs.close()
        # A child may still start with this arena mapped, after its request's reply was skipped: the arena is
        # never pooled for another check, whose shared memory that child could then write.
        with contextlib.suppress(BufferError):
            arena.close()
        raise


def _fork_here(
    theirs: socket.socket, mine: socket.socket, key: bytes, arena: Arena, ref: ImplRef, memory_limit: int | None
) -> int:  # pragma: no cover - used where there is no fork server (non-Linux systems)
    """Fork the child from this process (where no fork server can run)."""
    parent = os.getpid()
    compiled = code_for(ref)
    gc.freeze()  # the collector then never visits the inherited objects: no copy of the whole heap
    try:
        with _FORKING:  # this session's arena, and no other, goes to the child (``Arena.forked_with``)
            arena.forked_with(True)
            try:
                pid = os.fork()
                if pid == 0:
                    mine.close()
                    child_main(theirs, key, arena, ref, memory_limit, parent, compiled)
            finally:
                arena.forked_with(False)
    finally:
        gc.unfreeze()
    return pid


def _exit_code(status: int) -> int | None:
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else None


def _closed_fault(words: str, role: str) -> IsolationFault | None:
    import json

    try:
        data = json.loads(words)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("kind") != "closed":
        return None
    frame = _frame(data.get("frame"))
    where = f" at {frame.describe()}" if frame else ""
    during = "while being imported" if data.get("role") == "load" else f"during a {data.get('role', role)} call"
    return IsolationFault(
        f"the implementation closed the file descriptor convcheck talks to it through {during}{where}: code under "
        "check must close only the files it opened"
    )


class RemoteCache:
    """A cache that stays in the child, by number; dropping it tells the child to drop the user's cache."""

    def __init__(self, number: int, session: Session, handed: tuple[np.ndarray, ...]) -> None:
        self.number = number
        self.handed = handed  # this side's arrays the forward was given (in-place changes are copied onto them)
        weakref.finalize(self, session.released.append, number)


def probe(ref: ImplRef) -> None:
    """Load the implementation ``ref`` in a fresh process and end it: whether it loads, without running its
    import-time code here.

    Raises:
        ImplementationError: it cannot be loaded, or its process ended while loading it.
    """
    try:
        Session(ref, 0, None).close()
    except IsolationFault as exc:
        raise ImplementationError(str(exc)) from None
