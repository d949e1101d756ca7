"""BLAS's thread count is the process's: blocks that hold it, open at once on several threads, share one setting
and leave the count they found; a small layer's check holds its products to one thread."""

from __future__ import annotations

import os
import random
import sys
import threading
import types

import pytest

from convcheck import parallel
from convcheck.checker import run_check
from convcheck.layer import MatrixConvLayer
from convcheck.spec import Activation, CheckSpec, ConvShape, Method

SMALL = ConvShape(2, 5, 7, 2, 3, 3, 1, 1)
SEED = ConvShape(8, 32, 48, 16, 32, 3, 1, 1)


class FakeBlas:
    """One BLAS library's thread count, as ``parallel._blas_controls`` hands it out; counts every change."""

    def __init__(self, threads: int) -> None:
        self.threads, self.changes = threads, 0

    def controls(self):
        def set_threads(count: int) -> None:
            self.threads, self.changes = count, self.changes + 1

        return [(lambda: self.threads, set_threads)]


@pytest.fixture
def blas(monkeypatch) -> FakeBlas:
    fake = FakeBlas(8)
    monkeypatch.setattr(parallel, "_blas_controls", fake.controls)
    return fake


def test_blocks_that_end_out_of_order_keep_the_fewest_then_restore_the_count_from_before(blas):
    wide, narrow = parallel.limited_blas(4), parallel.limited_blas(1)
    wide.__enter__()
    assert blas.threads == 4
    narrow.__enter__()
    assert blas.threads == 1
    wide.__exit__(None, None, None)  # the first block ends first: the second still holds one thread
    assert blas.threads == 1
    narrow.__exit__(None, None, None)
    assert blas.threads == 8


def test_a_block_asking_for_more_inside_one_asking_for_fewer_gets_the_fewer(blas):
    with parallel.limited_blas(1):
        with parallel.limited_blas(2):
            assert blas.threads == 1
        assert blas.threads == 1
    assert blas.threads == 8


def test_a_block_that_raises_restores_the_count(blas):
    with pytest.raises(RuntimeError), parallel.limited_blas(1):
        raise RuntimeError("inside")
    assert blas.threads == 8


def test_blocks_on_many_threads_never_run_above_their_limit_and_restore_the_count(blas):
    """Before the blocks shared one setting, a block ending on one thread put back the count it had found while
    another thread's block still ran (that block then ran above its limit), and the last to end could put back a
    limit instead of the count from before."""
    above: list[tuple[int, int]] = []
    start = threading.Barrier(4)

    def hold(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        for _ in range(300):
            limit = rng.choice((1, 2, 3))
            with parallel.limited_blas(limit):
                if blas.threads > limit:
                    above.append((limit, blas.threads))
                if rng.random() < 0.3:
                    threading.Event().wait(0.0001)

    threads = [threading.Thread(target=hold, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert above == []
    assert blas.threads == 8


def test_a_process_forked_inside_a_block_starts_from_the_count_before_it(blas):
    """The user's layer's fork server starts at its first call, inside a small check's block: the later checks it
    serves must not keep that check's one thread."""
    if parallel._held or not hasattr(os, "fork"):
        pytest.skip("this process is held to one BLAS thread for good, or cannot fork")
    read, write = os.pipe()
    with parallel.limited_blas(1):
        pid = os.fork()
        if pid == 0:  # the child: report its count, then leave without running the parent's cleanup
            os.write(write, str(blas.threads).encode())
            os._exit(0)
        assert blas.threads == 1
    os.waitpid(pid, 0)
    os.close(write)
    assert os.read(read, 16) == b"8"
    os.close(read)
    assert blas.threads == 8


def test_a_block_opened_by_the_thread_inside_the_lock_does_not_deadlock(blas):
    """A block left open by an abandoned generator may be closed by the garbage collector on a thread that is
    inside the lock already."""

    def nested() -> None:
        with parallel._BLAS_LOCK, parallel.limited_blas(1):
            pass

    thread = threading.Thread(target=nested, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert blas.threads == 8


def test_check_blas_threads_holds_small_layers_to_one_and_the_quick_tier_of_convcheck_layer(monkeypatch):
    for name in parallel.BLAS_THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(parallel, "available_cores", lambda: 4)
    own, user = MatrixConvLayer(1, 1, Activation.RELU), object()
    assert parallel.forward_macs(SMALL) < parallel.BLAS_ONE_THREAD_MACS <= parallel.forward_macs(SEED)
    assert parallel.forward_macs(SMALL) == 2 * 5 * 7 * 3 * (3 * 3 * 2)
    assert parallel.check_blas_threads(own, SMALL, directional=False) == 1
    assert parallel.check_blas_threads(own, SMALL, directional=True) == 1  # never side by side, so one
    assert parallel.check_blas_threads(user, SMALL, directional=False) == 1
    assert parallel.check_blas_threads(user, SMALL, directional=True) == 1
    assert parallel.check_blas_threads(own, SEED, directional=False) is None
    assert parallel.check_blas_threads(user, SEED, directional=True) is None
    assert parallel.check_blas_threads(own, SEED, directional=True) == 2  # half the cores, beside or not


class Watched(MatrixConvLayer):
    """The built-in matrix layer (as a user's subclass), noting the BLAS threads in effect at each call."""

    seen: list[int]

    def forward(self, x, w, b):
        self.seen.append(_blas_threads())
        return super().forward(x, w, b)

    def backward(self, dout, cache):
        self.seen.append(_blas_threads())
        return super().backward(dout, cache)


def _blas_threads() -> int:
    return max(get() for get, _ in parallel._blas_controls())


@pytest.mark.parametrize("method", [Method.FULL, Method.DIRECTIONAL])
def test_a_small_layers_check_runs_its_products_on_one_blas_thread_and_leaves_the_count(method, monkeypatch):
    for name in parallel.BLAS_THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if not parallel._blas_controls() or parallel.available_cores() < 2 or parallel._held:
        pytest.skip("BLAS's threads are not controlled here, there is one core, or one thread is held for good")
    with parallel.limited_blas(2):  # whatever the test process had: two threads, to be held to one
        layer = Watched(1, 1, Activation.RELU)
        layer.seen = []
        result = run_check(CheckSpec("small", SMALL, method=method), layer=layer)
        assert result.passed, result.error
        assert layer.seen and set(layer.seen) == {1}
        assert _blas_threads() == 2
    assert len(layer.seen) >= 5  # the contract's calls at least


def test_the_blas_libraries_are_looked_for_again_only_after_an_import(monkeypatch):
    scans: list[int] = []
    monkeypatch.setattr(parallel, "_found_controls", None)
    monkeypatch.setattr(parallel, "_openblas_controls", lambda: scans.append(1) or [])
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # the fallback: OpenBLAS's own functions
    parallel._blas_controls()
    parallel._blas_controls()
    assert len(scans) == 1
    monkeypatch.setitem(sys.modules, "convcheck_test_newly_imported", types.ModuleType("newly"))
    parallel._blas_controls()
    assert len(scans) == 2
