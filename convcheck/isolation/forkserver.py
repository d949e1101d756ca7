"""The fork server: a small idle process that forks every check's child, so that the judging process never forks.

Why. A fork makes every page of the forking process copy-on-write for as long as the child lives, and the
judging process, busy computing the verdict meanwhile, then takes a page fault and a 4 KB copy on every page it
writes: about 1,500 per small check (~3 µs each on the machine measured), more than the check's own work. A process
forked once from the judging one (``ForkServer``, started at its first isolated check, before any user code ran
anywhere) does nothing but fork, so it writes almost nothing, and the judging process writes its pages freely.
The children start from the server's memory: the same pre-imported, clean state. The server also compiles the
user's file for them (``isolation.compiled``).

Protocol, on a Unix socket pair only these two processes hold (a child closes it with every other descriptor before
the user's code runs): ``spawn`` (the child's socket and the shared memory's file descriptor passed along) answers
the child's pid; ``wait`` (pid, block) its wait status, or None while it runs. Each reply is a line of JSON
carrying its request's number, so that the reply to a request whose sender was interrupted is never taken for the
next one's. The judging process kills a child itself (``os.kill``); the server reaps only when asked, so a pid is
never reused before the judging process has read its status. When the judging process's end of the socket closes
(it exited, or was killed), the server kills its children and exits; its children die with it
(``PR_SET_PDEATHSIG``), as they did with the judging one.

Framework layers. Importing torch or JAX takes seconds, far more than a small check, and every check's process
used to pay it. The first check of a framework starts that framework's own server (``_FrameworkServer``): a
process forked from this one that imports the framework's adapter (``user.frameworks.load_framework``: the
framework itself, configured as convcheck needs it; no user code) and then serves exactly as this one does. The
server passes it that framework's ``spawn`` requests, and the ``wait`` requests of its children. A check's process
thus starts from a state that depends on its framework only, never on which checks ran before it: numpy layers
still start from this server, without torch or JAX. Importing either starts no thread and opens no file (checked
by ``tests/test_isolation_frameworks.py``), so forking after it is as safe as forking after numpy's import.
While a framework's server imports, this one answers nobody; an import that outlasts
``FRAMEWORK_READY_SECONDS`` (it hangs) ends that server, and the framework's checks fork from this one.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

from convcheck.isolation.channel import Arena
from convcheck.isolation.child import child_main
from convcheck.isolation.compiled import code_for
from convcheck.spec import Framework, ImplRef, Signature

__all__ = ["ForkServer", "available", "fork_server", "ref_from_json", "ref_to_json"]

_MESSAGE_BYTES = 1 << 16
#: Seconds a framework's server may take to import its framework (torch: about 3.5 s on a quiet 2-core machine).
#: Meanwhile the fork server answers nobody, so an import that hangs (a broken install, a driver that never
#: answers) must not hold every later check: past this, that framework's checks fork from this server and import
#: it themselves, as if it had no server, each within its own timeout.
FRAMEWORK_READY_SECONDS = 30.0
_PR_SET_DUMPABLE = 4
_PR_SET_PDEATHSIG = 1


def available() -> bool:
    """Whether this system has what the fork server needs (Linux: ``memfd_create``, passing descriptors)."""
    return hasattr(os, "memfd_create") and hasattr(socket, "send_fds") and hasattr(os, "fork")


class ForkServer:
    """The judging process's end: start the server, spawn children through it, ask for their statuses."""

    def __init__(self) -> None:
        mine, theirs = socket.socketpair()
        self.owner = os.getpid()
        self.lock = threading.Lock()  # one request at a time (sessions may run in several threads)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                stream.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the server never returns (coverage cannot follow it)
            mine.close()
            _serve(theirs)
        theirs.close()
        self.pid = pid
        self.sock = mine
        self.replies = _Lines(mine)
        self.asked = 0  # requests sent so far: each reply carries its request's number

    def spawn(self, sock: socket.socket, arena: Arena, key: bytes, ref: ImplRef, memory_limit: int | None) -> int:
        """Fork a child that serves ``ref``'s functions on ``sock`` (see ``child.child_main``); its pid.

        Raises:
            OSError: the server is gone or could not fork.
        """
        request = {
            "op": "spawn",
            "key": key.hex(),
            "half": arena.half,
            "ref": ref_to_json(ref),
            "memory_limit": memory_limit,
        }
        reply = self._ask(request, [sock.fileno(), arena.fd])
        if not isinstance(reply.get("pid"), int):
            raise OSError(f"the fork server could not start the check's process: {reply.get('error')}")
        return int(reply["pid"])

    def wait(self, pid: int, block: bool) -> int | None:
        """The wait status of the server's child ``pid`` once it has ended (``block``: wait for it), else None."""
        reply = self._ask({"op": "wait", "pid": pid, "block": block}, [])
        status = reply.get("status")
        return int(status) if isinstance(status, int) else None

    def _ask(self, request: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        """Send ``request`` and return its reply. A reply to an earlier request is skipped: one whose ``_ask`` was
        interrupted after sending (a check's timeout, by ``SIGALRM``, while the server started a framework's
        server), so that no request ever gets another's answer (a child's pid, a wait status)."""
        with self.lock:
            self.asked += 1
            socket.send_fds(self.sock, [json.dumps({**request, "n": self.asked}).encode() + b"\n"], fds)
            while True:
                reply = self.replies.next()
                if reply.get("n") == self.asked:
                    return reply

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.sock.fileno() >= 0

    def stop(self) -> None:
        """End the server (it kills and reaps its children) and reap it: at this process's exit, so that the
        CPU time of the checks' processes counts towards this one's (``RUSAGE_CHILDREN``)."""
        if self.owner != os.getpid():
            return
        with self.lock:
            self.sock.close()
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(self.pid, 0)


class _Lines:
    """The messages arriving on a stream socket, one JSON object per line, and the descriptors passed along with
    them, queued as they come (``take``). A stream keeps no message boundaries: a reply that waited for its reader
    may arrive joined to the next, and so may a request sent while the server was busy with the one before."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.fds: list[int] = []

    def next(self) -> dict[str, Any]:
        """The next message ({} for a line that is not a JSON object).

        Raises:
            OSError: the other end closed the socket.
        """
        while b"\n" not in self.buffer:
            data, fds, _, _ = socket.recv_fds(self.sock, _MESSAGE_BYTES, 16)
            if not data:
                raise OSError("the fork server's other end closed the socket")
            self.buffer += data
            self.fds += fds
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        return message if isinstance(message, dict) else {}

    def take(self, count: int) -> list[int]:
        """The first ``count`` descriptors received and not taken yet (a ``spawn`` request's two)."""
        taken, self.fds = self.fds[:count], self.fds[count:]
        return taken


_SERVER: ForkServer | None = None
_STARTING = threading.Lock()


def fork_server() -> ForkServer | None:
    """This process's fork server, started at the first call (None where the system cannot run one)."""
    global _SERVER
    if not available():  # pragma: no cover - non-Linux systems: sessions fork from this process
        return None
    with _STARTING:
        if _SERVER is None or not _SERVER.alive():
            _SERVER = ForkServer()
            atexit.register(_SERVER.stop)
        return _SERVER


# -- the server ----------------------------------------------------------------------------------------------------


def _serve(control: socket.socket, framework: Framework | None = None) -> NoReturn:
    """A server process: set up, answer requests until the process that asks goes, then end with its children.
    ``framework``: this is that framework's server (``_FrameworkServer``); it imports the framework first and
    says whether it could."""
    code = 0
    try:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        libc = ctypes.CDLL(None, use_errno=True)
        with contextlib.suppress(OSError, AttributeError):  # non-dumpable: no child can trace it or read its memory
            libc.prctl(_PR_SET_DUMPABLE, 0)
        fd = control.fileno()
        os.closerange(3, fd)
        os.closerange(fd + 1, max(fd + 2, os.sysconf("SC_OPEN_MAX")))
        if framework is not None:
            with contextlib.suppress(OSError, AttributeError):  # it ends with the server that started it
                libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            control.sendall(json.dumps({"ready": _imported(framework)}).encode() + b"\n")
        # Frozen objects are never visited by the collector, so the children's collections do not copy this
        # process's whole heap page by page (copy-on-write).
        gc.freeze()
        _loop(control, _Children(delegates=framework is None))
    except BaseException:  # noqa: BLE001 - nothing may unwind into the judging process's code in this process
        code = 70
    finally:
        os._exit(code)


def _imported(framework: Framework) -> bool:
    """Whether ``framework``'s adapter (and so the framework) could be imported here."""
    from convcheck.user.frameworks import load_framework

    try:
        load_framework(framework)
    except BaseException:  # noqa: BLE001 - not installed, or broken: each check's process reports it as before
        return False
    return True


class _FrameworkServer:
    """This server's end of one framework's server (see the module docstring): started once, asked as the judging
    process asks this one, over a socket pair only the two hold."""

    def __init__(self, framework: Framework) -> None:
        mine, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the framework's server never returns
            mine.close()
            _serve(theirs, framework)
        theirs.close()
        self.pid, self.sock, self.replies = pid, mine, _Lines(mine)
        mine.settimeout(FRAMEWORK_READY_SECONDS)
        try:
            self.ready = self.replies.next().get("ready") is True
        except OSError:  # it ended, or its import outlasted FRAMEWORK_READY_SECONDS (TimeoutError)
            self.ready = False
        mine.settimeout(None)
        if not self.ready:
            self.stop()

    def ask(self, request: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        socket.send_fds(self.sock, [json.dumps(request).encode() + b"\n"], fds)
        return self.replies.next()  # one request at a time: this process is never interrupted

    def stop(self) -> None:
        """Close its socket (it then kills its children and exits), and make sure: kill it and reap it."""
        self.sock.close()
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(self.pid, 0)


class _Children:
    """A server's children, and which of them a framework's server forked (it answers the waits for those).
    ``delegates``: whether this server passes framework checks on (a framework's own server forks them itself)."""

    def __init__(self, delegates: bool) -> None:
        self.delegates = delegates
        self.own: set[int] = set()
        self.delegated: dict[int, _FrameworkServer] = {}
        self.servers: dict[Framework, _FrameworkServer | None] = {}  # None: the framework could not be imported

    def server_for(self, framework: Framework) -> _FrameworkServer | None:
        if not self.delegates:
            return None
        if framework not in self.servers:
            try:
                server: _FrameworkServer | None = _FrameworkServer(framework)
            except OSError:
                server = None
            self.servers[framework] = server if server is not None and server.ready else None
        return self.servers[framework]

    def forget(self, server: _FrameworkServer) -> None:
        server.stop()
        self.servers = {framework: kept for framework, kept in self.servers.items() if kept is not server}

    def end(self) -> None:
        for pid in self.own:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in self.own:
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)
        for server in self.servers.values():
            if server is not None:
                server.stop()


def _loop(control: socket.socket, children: _Children) -> None:
    requests = _Lines(control)
    try:
        while True:
            try:
                request = requests.next()
            except OSError:  # the asking process is gone
                return
            fds = requests.take(2 if request.get("op") == "spawn" else 0)
            if request.get("op") == "spawn":
                reply = _spawn(request, fds, children)
            else:
                for fd in fds:
                    os.close(fd)
                reply = _wait(request, children)
            control.sendall(json.dumps({**reply, "n": request.get("n")}).encode() + b"\n")
    finally:
        children.end()


def _spawn(request: dict[str, Any], fds: list[int], children: _Children) -> dict[str, Any]:
    if len(fds) != 2:
        for fd in fds:
            os.close(fd)
        return {"error": "the descriptors did not arrive"}
    framework = request["ref"].get("framework")
    delegate = None if framework is None else children.server_for(Framework(framework))
    if delegate is not None:
        try:
            reply = delegate.ask(request, fds)
        except OSError:  # that framework's server is gone: start the next one afresh, fork this child from here
            children.forget(delegate)
        else:
            for fd in fds:
                os.close(fd)
            if isinstance(reply.get("pid"), int):
                children.delegated[reply["pid"]] = delegate
            return reply
    sock = socket.socket(fileno=fds[0])
    arena = Arena.attach(fds[1], int(request["half"]))
    ref = ref_from_json(request["ref"])
    compiled = code_for(ref)
    limit = request.get("memory_limit")
    server = os.getpid()
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            child_main(sock, bytes.fromhex(request["key"]), arena, ref, limit, server, compiled)
    except OSError as exc:
        return {"error": str(exc)}
    finally:
        sock.close()
        arena.close()
    children.own.add(pid)
    return {"pid": pid}


def _wait(request: dict[str, Any], children: _Children) -> dict[str, Any]:
    pid = int(request.get("pid", -1))
    server = children.delegated.get(pid)
    if server is not None:
        try:
            reply = server.ask(request, [])
        except OSError as exc:
            return {"status": None, "error": str(exc)}
        if reply.get("status") is not None or reply.get("error") is not None:
            del children.delegated[pid]
        return reply
    if pid not in children.own:
        return {"status": None, "error": "not a child of the fork server"}
    try:
        done, status = os.waitpid(pid, 0 if request.get("block") else os.WNOHANG)
    except ChildProcessError:
        children.own.discard(pid)
        return {"status": None, "error": "already reaped"}
    if done == 0:
        return {"status": None}
    children.own.discard(pid)
    return {"status": status}


def ref_to_json(ref: ImplRef) -> dict[str, Any]:
    base = None if ref.base_dir is None else str(ref.base_dir)
    return {
        "module": ref.module,
        "forward": ref.forward,
        "backward": ref.backward,
        "signature": ref.signature.value,
        "base_dir": base,
        "framework": None if ref.framework is None else ref.framework.value,
        "function": ref.function,
        "class_name": ref.class_name,
        "device": ref.device,
    }


def ref_from_json(data: dict[str, Any]) -> ImplRef:
    base = data.get("base_dir")
    return ImplRef(
        str(data["module"]),
        forward=str(data["forward"]),
        backward=str(data["backward"]),
        signature=Signature(data["signature"]),
        base_dir=None if base is None else Path(base),
        framework=None if data.get("framework") is None else Framework(data["framework"]),
        function=None if data.get("function") is None else str(data["function"]),
        class_name=None if data.get("class_name") is None else str(data["class_name"]),
        device=None if data.get("device") is None else str(data["device"]),
    )
