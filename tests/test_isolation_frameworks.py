"""A framework check's process starts with its framework imported, from that framework's own fork server.

``isolation.forkserver`` starts one server per framework (torch, JAX) at that framework's first check, forked from
the clean fork server with the framework's adapter imported; each check of that framework forks from it. These
tests look at the processes themselves (``/proc``): who forked a check's process, what that parent has mapped,
that numpy layers still start from a server without torch or JAX, and that nothing is left when the run ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_frameworks import FIXTURES, check, jax_ref, needs_jax, needs_torch, spec_of, torch_ref
from test_isolation_speed import restart_fork_server

from convcheck.isolation import forkserver
from convcheck.isolation.remote import remote_layer
from convcheck.results import Status
from convcheck.spec import CheckSpec, ConvShape, Framework, ImplRef

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork, prctl and /proc: Linux")

NUMPY_LAYER = ImplRef("im2col_nhwc.py", base_dir=Path(__file__).parent.parent / "examples")
LIBRARY = {"torch": "libtorch", "jax": "jaxlib"}  # a file only that framework's import maps


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def maps(pid: int, library: str) -> bool:
    return library in Path(f"/proc/{pid}/maps").read_text()


def checks_parent(spec: CheckSpec) -> int:
    """The pid of the process that forked ``spec``'s check process (looked at while that process is loaded)."""
    with remote_layer(spec, None) as layer:
        pid = layer._session().pid
        assert pid is not None
        return parent_of(pid)


FRAMEWORKS = [
    pytest.param(lambda: torch_ref("ConvReLU"), "torch", marks=needs_torch, id="torch"),
    pytest.param(lambda: jax_ref("conv_relu"), "jax", marks=needs_jax, id="jax"),
]


@pytest.mark.parametrize(("ref", "name"), FRAMEWORKS)
def test_each_check_of_a_framework_forks_from_one_server_that_has_it_imported_numpy_ones_from_the_clean_one(
    ref, name: str
) -> None:
    restart_fork_server()
    try:
        first = checks_parent(spec_of(ref()))
        server = forkserver.fork_server()
        assert server is not None
        assert first != server.pid and parent_of(first) == server.pid  # the framework's server, the server's child
        assert maps(first, LIBRARY[name]) and not maps(server.pid, LIBRARY[name])
        assert checks_parent(spec_of(ref())) == first  # the next check of that framework: the same server
        numpy_parent = checks_parent(CheckSpec("n", ConvShape(1, 4, 4, 1, 2, 3, 1, 1), impl=NUMPY_LAYER))
        assert numpy_parent == server.pid  # a numpy layer's process never starts with a framework imported
        assert check(spec_of(ref())).status is Status.PASS
    finally:
        restart_fork_server()
    assert not Path(f"/proc/{first}").exists()  # the framework's server ends with the fork server, reaped


@needs_torch
@needs_jax
def test_torch_and_jax_checks_fork_from_servers_of_their_own() -> None:
    restart_fork_server()
    try:
        torch_parent = checks_parent(spec_of(torch_ref("ConvReLU")))
        jax_parent = checks_parent(spec_of(jax_ref("conv_relu")))
        assert torch_parent != jax_parent
        assert maps(torch_parent, LIBRARY["torch"]) and not maps(torch_parent, LIBRARY["jax"])
        assert maps(jax_parent, LIBRARY["jax"]) and not maps(jax_parent, LIBRARY["torch"])
    finally:
        restart_fork_server()


@needs_torch
def test_a_torch_layer_that_patches_torch_changes_nothing_for_the_torch_checks_after_it() -> None:
    patcher = ImplRef(str(FIXTURES / "torch_patches_torch.py"), framework=Framework.TORCH, function="conv_relu")
    restart_fork_server()
    try:
        patched = check(spec_of(patcher))
        assert patched.status is Status.FAIL and patched.forward is not None and not patched.forward.ok
        # The same framework server forks the next checks: they start from torch as it was imported there.
        assert check(spec_of(torch_ref("ConvReLU"))).status is Status.PASS
        assert check(spec_of(torch_ref("BugNoMask"))).status is Status.FAIL
    finally:
        restart_fork_server()


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)


@needs_torch
@needs_jax
def test_importing_a_framework_starts_no_thread_and_opens_no_file() -> None:
    # Forking after the import is then as safe as forking after numpy's (whose BLAS thread the fork server has).
    code = """
import os
import numpy
from convcheck.spec import Framework
from convcheck.user.frameworks import load_framework

def state():
    return len(os.listdir("/proc/self/task")), sorted(os.listdir("/proc/self/fd"))

before = state()
load_framework(Framework.TORCH)
load_framework(Framework.JAX)
print(before == state(), before, state())
"""
    done = run_python(code)
    assert done.returncode == 0 and done.stdout.startswith("True"), (done.stdout, done.stderr)


@needs_torch
def test_a_framework_that_cannot_be_imported_is_reported_by_the_check_s_process_as_before() -> None:
    # torch made unimportable in this process, so also in its fork server and any server forked from it.
    code = """
import sys
sys.modules["torch"] = None
from convcheck.isolation import forkserver
from convcheck.isolation.check import isolated_check
from test_frameworks import spec_of, torch_ref

result = isolated_check(spec_of(torch_ref("ConvReLU")))
assert forkserver._SERVER is not None
print(result.status.value)
print(result.error)
"""
    done = run_python(code)
    status, error = done.stdout.split("\n", 1)
    assert done.returncode == 0 and status == "error", (done.stdout, done.stderr)
    assert "torch" in error and "pip install" in error, error


def test_a_framework_import_that_hangs_holds_up_neither_its_own_check_nor_the_numpy_checks_after_it(tmp_path) -> None:
    # A "torch" whose import never ends, but in the judging process (which then just fails to import it).
    fake = tmp_path / "hanging" / "torch"
    fake.mkdir(parents=True)
    code = f"""
import os, sys
from pathlib import Path
sys.path.insert(0, {str(fake.parent)!r})
Path({str(fake / "__init__.py")!r}).write_text(
    f"import os, time\\nif os.getpid() != {{os.getpid()}}:\\n    time.sleep(3600)\\nraise ImportError('not here')\\n"
)
from convcheck.batch.guard import run_one
from convcheck.isolation import forkserver
from convcheck.isolation.check import isolated_check
from convcheck.spec import CheckSpec, ConvShape, ImplRef
from test_frameworks import spec_of, torch_ref

forkserver.FRAMEWORK_READY_SECONDS = 1.0
hung = run_one(spec_of(torch_ref("ConvReLU"), timeout=10.0), isolated_check)
numpy_layer = ImplRef("im2col_nhwc.py", base_dir=Path({str(NUMPY_LAYER.base_dir)!r}))
after = run_one(CheckSpec("n", ConvShape(1, 4, 4, 1, 2, 3, 1, 1), impl=numpy_layer, timeout=10.0), isolated_check)
print(hung.status.value, after.status.value)
print(hung.error)
"""
    # Output to files and a session of its own: when this fails, the fork server it left waiting must not keep a
    # pipe open, and is killed with the rest.
    out, err = tmp_path / "out", tmp_path / "err"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", code], stdout=stdout, stderr=stderr, env=env, start_new_session=True
        )
        try:
            process.wait(timeout=120)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, (out.read_text(), err.read_text())
    statuses, error = out.read_text().split("\n", 1)
    # Without the bound on the framework's server, the fork server waited for its import for good, and both
    # checks timed out. With it, the torch check's own process imported the "torch" itself, and its timeout
    # stopped it; the numpy check ran as ever.
    assert statuses == "error pass", (out.read_text(), err.read_text())
    assert "timed out after 10 s" in error, error
