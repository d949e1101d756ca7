"""What makes an isolated check cheaper changes none of its numbers: calls sent ahead, the module compiled once.

``isolation.ahead`` sends the mirror of a perturbed point with the point; ``isolation.compiled`` compiles the
user's file in the fork server. Both are checked against the plain path bit for bit, and shown to be used.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from convcheck.batch.guard import CheckTimeout
from convcheck.checker import run_check
from convcheck.isolation import compiled, forkserver
from convcheck.isolation.ahead import GIVE_UP, Lookahead, mirrored
from convcheck.isolation.check import isolated_check
from convcheck.isolation.remote import remote_layer
from convcheck.isolation.session import ARENAS, Session
from convcheck.results import CheckResult, Status
from convcheck.spec import Activation, CheckSpec, ConvShape, DType, ImplRef, Layout, Method

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork, prctl and /proc: Linux")

IMPLS = Path(__file__).parent / "fixtures" / "impls"
SHAPE = ConvShape(batch=2, in_height=5, in_width=6, in_depth=2, out_depth=3, filter_size=3, stride=1, padding=1)


def spec_of(module: str, folder: Path = IMPLS, **options: object) -> CheckSpec:
    return CheckSpec(module, SHAPE, impl=ImplRef(module, base_dir=folder), timeout=60.0, **options)  # type: ignore[arg-type]


def numbers(result: CheckResult) -> str:
    """Everything a check measured, as text (so that NaN equals NaN)."""
    grads = tuple((g.name, g.passed, g.max_abs_error, g.max_rel_error, g.checked, g.kinks) for g in result.gradients)
    forward = None if result.forward is None else (result.forward.ok, result.forward.max_abs_error)
    return repr((result.status, result.error, grads, forward, result.forward_passes, tuple(map(str, result.contract))))


def checked_remotely(spec: CheckSpec, *, lookahead: bool) -> tuple[CheckResult, Lookahead, int]:
    """The check with the engine's points sent one call at a time (as when a batch falls back), so that what
    is measured is the lookahead alone; batches of points (``forward_many``) are tested in test_fanout."""
    with remote_layer(spec, None, lookahead=lookahead) as layer:
        layer.forward_many = None  # type: ignore[assignment,method-assign]
        result = run_check(spec, layer=layer)
        exchanges = layer.session.exchanges if layer.session is not None else 0
        return result, layer.ahead, exchanges


# -- calls sent ahead --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        spec_of("good_nhwc.py"),
        spec_of("good_nhwc.py", method=Method.ENTRYWISE),
        spec_of("good_nhwc.py", method=Method.DIRECTIONAL),
        spec_of("good_nhwc.py", method=Method.SAMPLED, dtype=DType.FLOAT32),
        spec_of("good_nhwc.py", activation=Activation.TANH, eps=1e-5),  # a step that is not a power of two
        spec_of("good_nchw.py", layout=Layout.NCHW),
        spec_of("flipped_kernel.py"),  # wrong: falls back from grouping, fails
        spec_of("nan_backward.py"),  # wrong: fails
        spec_of("global_state.py"),  # stateful: its calls must come in the same order
    ],
    ids=lambda s: f"{s.name}-{s.method.value}-{s.dtype.value}-{s.activation.value}",
)
def test_sending_calls_ahead_changes_no_number_and_saves_round_trips(spec):
    ahead, ahead_layer, with_ahead = checked_remotely(spec, lookahead=True)
    plain, _, without = checked_remotely(spec, lookahead=False)
    assert numbers(ahead) == numbers(plain) == numbers(run_check(spec))
    # Each call served saved an exchange. ``directional`` makes one ± pair per tensor, each after a point the mirror
    # cannot foresee (a whole tensor moved along a new direction), so it may be served nothing.
    assert ahead_layer.hits > 0 or spec.method is Method.DIRECTIONAL
    assert with_ahead + ahead_layer.hits == without


@pytest.mark.parametrize("method", [Method.FULL, Method.ENTRYWISE])
def test_the_engines_calls_are_predicted_exactly(method):
    """Every call the engine makes after its base point is one planned or mirrored: none is made for nothing, and
    the check needs few more exchanges than the contract's audited calls and one per ``depth`` planned calls."""
    spec = spec_of("good_nhwc.py", method=method)
    result, ahead, exchanges = checked_remotely(spec, lookahead=True)
    # At most one miss: the base point's repeat, sent ahead with the base, which the engine no longer makes
    # when it takes the contract's output there as its first evaluation (a wasted call, never a wrong number).
    assert result.status is Status.PASS and ahead.misses <= 1
    assert exchanges <= 5 + 2 + result.forward_passes // ahead.depth + 2 * 3  # contract, base, plans, b and ends


def test_the_mirror_is_the_engines_minus_point():
    rng = np.random.default_rng(7)
    for dtype in (np.float64, np.float32):
        base = rng.standard_normal((4, 5)).astype(dtype)
        other = rng.standard_normal(3).astype(dtype)
        for eps in (2.0**-20, 1e-6, 2.0**-12):
            where = rng.choice(base.size, size=6, replace=False)
            plus, minus = base.copy(), base.copy()  # as numeric.engine builds them
            plus.flat[where] = (base.flat[where] + eps).astype(dtype)
            minus.flat[where] = (base.flat[where] - eps).astype(dtype)
            guess = mirrored((base, other), (plus, other))
            assert guess is not None and guess[1] is other
            if dtype is np.float64 and eps == 2.0**-20:
                assert np.array_equal(guess[0], minus)  # exact steps: always right
    assert mirrored((base, other), (base + 1, other + 1)) is None  # two arrays moved: no guess
    assert mirrored((base, other), (base, other)) is None


def test_a_kept_answer_never_serves_arrays_changed_in_place_since():
    """The engine perturbs its own arrays in place: an answer kept for ``(x', w, b)`` must not serve a later call
    whose ``w`` is the same array object, changed meanwhile."""
    ahead = Lookahead(SHAPE, 0, [2.0**-20], 4, lambda number: None)
    x, w, b = np.zeros(4), np.zeros(2), np.zeros(0)
    ahead.ahead((x, w, b))  # the base point
    ahead.kept.clear()
    x[0] = 1.0  # a perturbed call, the engine's live arrays
    following = ahead.ahead((x, w, b))
    assert len(following) == 1 and following[0][1] is not w
    ahead.keep(following, [{"kind": "returned"}, {"kind": "returned"}], memoryview(b""), 0)
    x[0] = -1.0  # the mirror, as predicted
    w[1] = 5.0  # but the engine changed w in place meanwhile
    assert ahead.take((x, w, b), exchange=0) is None


def test_wrong_guesses_stop_guessing():
    released: list[int] = []
    ahead = Lookahead(SHAPE, 0, [2.0**-20], 4, released.append)
    base = (np.zeros(4), np.zeros(2), np.zeros(0))
    assert len(ahead.ahead(base)) == 1  # the base point: called again
    ahead.keep([base], [{"kind": "returned"}, {"kind": "returned", "cache": 0}], memoryview(b""), 0)
    assert ahead.take(base, exchange=0) is not None and ahead.hits == 1
    for step in range(1, 40):
        call = (np.full(4, float(step)), np.zeros(2), np.zeros(0))
        assert ahead.take(call, exchange=step) is None
        following = ahead.ahead(call)
        replies = [{"kind": "returned"}, *({"kind": "returned", "cache": step} for _ in following)]
        ahead.keep(following, replies, memoryview(b""), step)
    assert 0 < ahead.misses <= ahead.hits + GIVE_UP
    assert len(released) == ahead.misses  # every dropped answer's cache is released in the child


# -- the module compiled in the fork server ----------------------------------------------------------------------


def restart_fork_server() -> None:
    """The next session starts a fork server afresh, forked from this process as it is now."""
    if forkserver._SERVER is not None:
        forkserver._SERVER.stop()
    forkserver._SERVER = None


def test_the_child_runs_the_code_compiled_by_the_fork_server(tmp_path):
    layer = tmp_path / "layer.py"
    layer.write_text((IMPLS / "good_nhwc.py").read_text())
    for sibling in IMPLS.glob("_*.py"):
        (tmp_path / sibling.name).write_text(sibling.read_text())
    spec = spec_of("layer.py", folder=tmp_path)
    assert isolated_check(spec).status is Status.PASS
    found = compiled.code_for(spec.impl)  # type: ignore[arg-type]
    assert found is not None and found[0] == str(layer.resolve())
    # A fork server started with a wrong layer's code cached for this file: its children run what crossed the
    # fork in memory, not what is on disk.
    wrong = compile((IMPLS / "wrong_db_keepdims.py").read_text(), found[0], "exec", dont_inherit=True)
    stat = layer.stat()
    saved = dict(compiled._CACHE)
    compiled._CACHE[found[0], stat.st_mtime_ns, stat.st_size] = wrong
    try:
        restart_fork_server()
        assert isolated_check(spec).status is Status.FAIL
        layer.write_text((IMPLS / "good_nhwc.py").read_text() + "\n# edited\n")  # another size: compiled afresh
        assert isolated_check(spec).status is Status.PASS
    finally:
        compiled._CACHE.clear()
        compiled._CACHE.update(saved)
        restart_fork_server()


def test_the_fork_server_is_the_parent_of_each_checks_process_and_ends_with_its_children():
    spec = spec_of("good_nhwc.py")
    with remote_layer(spec, None) as layer:
        session = layer._session()
        server = forkserver.fork_server()
        assert server is not None and session.server is server
        stat = Path(f"/proc/{session.pid}/stat").read_text().rsplit(")", 1)[1].split()
        assert int(stat[1]) == server.pid != os.getpid()  # the judging process never forks a check's process
        child = session.pid
    assert not Path(f"/proc/{child}").exists()  # killed and reaped when the check ended
    restart_fork_server()  # stopping it reaps it: no process is left behind
    assert not Path(f"/proc/{server.pid}").exists()


def test_a_reply_to_a_request_whose_sender_was_interrupted_is_never_taken_for_the_next_request():
    """A check's timeout (SIGALRM) may interrupt a request after it was sent (the server busy starting a
    framework's server): its reply, when it comes, must not become the answer to the next request."""
    restart_fork_server()
    try:
        server = forkserver.fork_server()
        assert server is not None
        with server.lock:  # what an interrupted ``_ask`` leaves: a request sent, its reply never read
            server.asked = getattr(server, "asked", 0) + 1  # as ``_ask`` numbers it
            stale = {"op": "wait", "pid": 1, "block": False, "n": server.asked}
            socket.send_fds(server.sock, [json.dumps(stale).encode() + b"\n"], [])
        spec = spec_of("good_nhwc.py")
        with remote_layer(spec, None) as layer:
            session = layer._session()
            assert session.pid is not None and parent_pid(session.pid) == server.pid  # its own child's pid
        assert numbers(isolated_check(spec)) == numbers(run_check(spec))
    finally:
        restart_fork_server()


def test_a_timeout_while_the_check_s_process_starts_leaves_no_descriptor_open_and_pools_no_arena(monkeypatch):
    """The check's timeout may go off while the fork server starts its process (``spawn`` waiting for the reply):
    the session's sockets are closed then, not at some later garbage collection, and its arena, which that
    process may already have mapped, is never handed to another check."""
    restart_fork_server()
    try:
        server = forkserver.fork_server()
        assert server is not None
        real, used = server.spawn, []

        def interrupted(sock, arena, key, ref, memory_limit):
            used.append(arena)
            real(sock, arena, key, ref, memory_limit)  # the process starts...
            raise CheckTimeout(1.0)  # ...and the timeout goes off before its pid is read

        monkeypatch.setattr(server, "spawn", interrupted)
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(CheckTimeout):
            Session(spec_of("good_nhwc.py").impl, entries=1000, memory_limit=None)  # type: ignore[arg-type]
        assert set(os.listdir("/proc/self/fd")) <= before  # no socket left open (a pooled arena may be closed)
        assert used and used[0].fd == -1 and used[0] not in ARENAS.free
    finally:
        restart_fork_server()


def test_requests_joined_on_the_server_s_socket_are_read_one_by_one_each_spawn_with_its_descriptors():
    mine, theirs = socket.socketpair()
    try:
        passed = [os.open(os.devnull, os.O_RDONLY), os.open(os.devnull, os.O_RDONLY)]
        wait, spawn = {"op": "wait", "pid": 7, "n": 1}, {"op": "spawn", "n": 2}
        joined = json.dumps(wait).encode() + b"\n" + json.dumps(spawn).encode() + b"\n"
        socket.send_fds(mine, [joined], passed)  # one write: as two requests may arrive
        requests = forkserver._Lines(theirs)
        assert requests.next() == wait  # a wait takes no descriptors: both stay queued for the spawn
        second = requests.next()
        second_fds = requests.take(2)
        assert second == spawn and len(second_fds) == 2
        assert all(os.path.samestat(os.fstat(fd), os.stat(os.devnull)) for fd in second_fds)
        mine.close()
        with pytest.raises(OSError):
            requests.next()  # the asking end is gone
    finally:
        for fd in [*passed, *locals().get("second_fds", [])]:
            with contextlib.suppress(OSError):
                os.close(fd)
        theirs.close()


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_file_that_does_not_compile_is_reported_by_the_child_as_before(tmp_path):
    source = "def forward(x, w, b, stride, padding):\n    return (x,\n\ndef backward(d, c):\n"
    (tmp_path / "broken.py").write_text(source)
    spec = spec_of("broken.py", folder=tmp_path)
    assert compiled.code_for(spec.impl) is None  # type: ignore[arg-type]
    result = isolated_check(spec)
    assert result.status is Status.ERROR
    assert "SyntaxError" in str(result.error) and "broken.py:" in str(result.error)
    assert result.error == run_check(spec).error


# -- shared memory kept between checks, and never handed to another check's process ------------------------------

HOSTILE = Path(__file__).parent / "fixtures" / "hostile"


def shared_seen_by_child(spec: CheckSpec) -> int:
    """How many writable shared mappings the layer's process of ``spec`` finds (``counts_shared.py``)."""
    from convcheck.data import make_data

    data = make_data(spec)
    with remote_layer(spec, None) as layer:
        out, _ = layer.forward(data.x, data.w, data.b)
    return int(np.rint(float(np.min(out)) / 1000.0))


def test_a_childs_process_maps_its_own_shared_memory_and_no_other_sessions():
    """Sessions in threads of one process (a Dask worker's) each have an arena; a child gets only its own, so a
    layer cannot write into the memory another check's verdict is being computed from."""
    spec = spec_of("counts_shared.py", folder=HOSTILE)
    alone = shared_seen_by_child(spec)
    others = [remote_layer(spec_of("good_nhwc.py"), None) for _ in range(2)]
    try:
        data = __import__("convcheck.data", fromlist=["make_data"]).make_data(spec)
        for other in others:
            other.__enter__().forward(data.x, data.w, data.b)  # two more sessions alive, arenas in use
        assert shared_seen_by_child(spec) == alone == 1
    finally:
        for other in others:
            other.__exit__(None, None, None)


def test_an_arena_is_kept_for_the_next_check_and_cleared_of_last_words():
    from convcheck.isolation.channel import ArenaPool

    pool = ArenaPool(keep=1)
    first = pool.take(1000)
    first.write_last_words('{"kind": "closed"}')
    pool.give_back(first)
    again = pool.take(500)
    assert again is first and again.read_last_words() is None
    bigger = pool.take(10**5)  # too large for what is kept: a new one
    assert bigger is not first
    pool.give_back(again)
    pool.give_back(bigger)
    assert pool.free == [bigger]  # one kept: the largest
    spec = spec_of("good_nhwc.py")
    assert numbers(isolated_check(spec)) == numbers(isolated_check(spec)) == numbers(run_check(spec))


def test_an_arena_a_forked_process_inherits_never_unmaps_what_that_process_maps_in_its_place():
    """A process forked after a check (a batch worker) does not have the parent's arenas mapped (MADV_DONTFORK);
    freeing their objects there used to unmap whatever that process had mapped at the same address since."""
    import ctypes
    import gc
    import mmap

    from convcheck.isolation.channel import ArenaPool

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    map_fixed_noreplace = 0x100000  # Linux ≥ 4.17: exactly there, or fail (never over an existing mapping)
    pool = ArenaPool()
    pool.give_back(pool.take(2**20))  # kept, as after a check
    (inherited,) = pool.free
    size, at = len(inherited.memory), ctypes.addressof(ctypes.c_char.from_buffer(inherited.memory))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the forked process reports by its exit code only
        code = 70
        try:
            flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | map_fixed_noreplace
            placed = libc.mmap(at, size, mmap.PROT_READ | mmap.PROT_WRITE, flags, -1, 0)
            if placed != at:
                os._exit(3)  # an older kernel: nothing could be mapped exactly there
            ctypes.memmove(at, b"mine", 4)
            inherited.close()  # as a session inherited from the parent would at its end
            pool.take(16).close()  # this process's first check: the pool lets the parent's arenas go
            del inherited
            gc.collect()
            code = 0 if ctypes.string_at(at, 4) == b"mine" else 2  # SIGSEGV here if the range was unmapped
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3:
        pytest.skip("this kernel cannot map at a given address only (MAP_FIXED_NOREPLACE, Linux 4.17)")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"wait status {status} (SIGSEGV: 11)"


# -- malloc keeps what the user's code frees -------------------------------------------------------------------


FAULTS = """
import sys
import numpy as np
from pathlib import Path
from convcheck.data import make_data
from convcheck.isolation import child
from convcheck.isolation.remote import remote_layer
from convcheck.spec import CheckSpec, ConvShape, ImplRef

if sys.argv[1] == "defaults":  # glibc's initial thresholds, fixed
    import ctypes

    def defaults():
        mallopt = ctypes.CDLL(None).mallopt
        mallopt(child._M_MMAP_THRESHOLD, 128 * 1024)
        mallopt(child._M_TRIM_THRESHOLD, 128 * 1024)

    child.keep_freed_memory = defaults
shape = ConvShape(batch=2, in_height=5, in_width=6, in_depth=2, out_depth=3, filter_size=3, stride=1, padding=1)
spec = CheckSpec("f", shape, impl=ImplRef("reports_page_faults.py", base_dir=Path(sys.argv[2])))
data = make_data(spec)
with remote_layer(spec, None) as layer:
    out, _ = layer.forward(data.x, data.w, data.b)
print(int(np.rint(float(np.min(out)) / 1000.0)))
"""


def faults_reported(mode: str) -> int:
    """Page faults of reusing 16 MB in a check's process, forked from a fresh Python (the judging process's own
    heap, which the child inherits, decides what a reuse costs under glibc's defaults)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", FAULTS, mode, str(IMPLS)], env=env, capture_output=True, text=True, check=True
    )
    return int(done.stdout.split()[-1])


THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@pytest.mark.skipif(THP.exists() and "[always]" in THP.read_text(), reason="huge pages for all memory: few faults")
def test_memory_the_layer_frees_is_reused_without_page_faults():
    """16 MB freed and allocated again take ~4,000 page faults with glibc's initial thresholds (the memory is
    mapped afresh), and almost none in a check's process (``child.keep_freed_memory``)."""
    kept, default = faults_reported("kept"), faults_reported("defaults")
    assert kept < 200 < 2000 < default


def test_the_fork_server_sends_every_field_of_the_layers_reference():
    import dataclasses
    from pathlib import Path

    from convcheck.isolation.forkserver import ref_from_json, ref_to_json
    from convcheck.spec import Framework, ImplRef, Signature

    ref = ImplRef(
        "layers.py", "fwd", "bwd", Signature.CS231N, Path("/tmp"), Framework.TORCH, "Conv", "Module", "cuda:1"
    )
    assert all(getattr(ref, f.name) != f.default for f in dataclasses.fields(ImplRef))  # every field set
    assert ref_from_json(ref_to_json(ref)) == ref
    assert ref_from_json(ref_to_json(ImplRef("layers.py"))) == ImplRef("layers.py")


# -- batches of up to MANY_GROUPS groups --------------------------------------------------------------------------


def batch_requests(spec: CheckSpec) -> tuple[CheckResult, int]:
    """The check with every batch of points sent through ``forward_many``, and the requests it took."""
    with remote_layer(spec, None) as layer:
        result = run_check(spec, layer=layer)
        return result, layer.session.exchanges if layer.session is not None else 0


@pytest.mark.parametrize(
    "spec",
    [
        spec_of("good_nhwc.py"),
        spec_of("good_nhwc.py", method=Method.ENTRYWISE),
        spec_of("good_nchw.py", layout=Layout.NCHW, dtype=DType.FLOAT32),
        spec_of("flipped_kernel.py"),
        spec_of("global_state.py"),
    ],
    ids=lambda s: f"{s.name}-{s.method.value}-{s.dtype.value}",
)
def test_larger_batches_take_fewer_requests_and_change_no_number(spec, monkeypatch):
    from convcheck.isolation import remote

    large, large_requests = batch_requests(spec)
    monkeypatch.setattr(remote, "MANY_GROUPS", 2)
    small, small_requests = batch_requests(spec)
    assert numbers(large) == numbers(small) == numbers(run_check(spec))
    assert large_requests < small_requests
