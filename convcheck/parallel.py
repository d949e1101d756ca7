"""Measure finite-difference groups on several threads, one BLAS thread each.

Why threads. A forward pass spends its time in numpy's matrix products, copies and ufunc loops over large arrays,
all of which release the GIL; threads share the engine's read-only arrays (``f0``, ``G``) without copying or
pickling them, and a user's layer is called exactly as without them (it must only tolerate concurrent calls).

Why one BLAS thread each. OpenBLAS runs each matrix product on its own pool of threads, one per core by default;
two Python threads each asking for two BLAS threads put four busy threads on two cores and lose more to contention
than they gain. While workers run, BLAS is held to one thread (through ``threadpoolctl`` when it is installed, else
through OpenBLAS's own ``openblas_set_num_threads`` in the loaded library) and restored afterwards.

A check of a small layer (``BLAS_ONE_THREAD_MACS``) holds its products to one BLAS thread from start to end
(``check_blas_threads``): more saved it a few percent of its time at most and took up to twice its CPU.

The one-BLAS-thread rule for processes lives here too: a process that runs checks beside others (a ``--jobs``
worker, a Dask worker) gets ``BLAS_THREAD_VARIABLES`` = 1 before numpy loads BLAS in it
(``one_blas_thread_environment`` while a child process starts, ``hold_one_blas_thread`` in a process already
running), and a check inside such a process measures on one thread (``engine_workers``).

A check of convcheck's own layer that measures few passes (``directional``) has no groups to share out; it runs
whole steps side by side instead (``side_by_side``: the engine's setup and the weights' and bias's projections
beside the layer contract's calls, then the input's projection and the forward verdict beside the rest of
them), on one thread kept for that (``_helper``), BLAS held to half the cores each meanwhile for the same reason
as above (``side_by_side_blas_threads``). Such a check runs its products on that many BLAS threads whether or not its
steps run side by side (``checker``), because a product's last bits can depend on the number of threads it runs
on (``Beside`` says where that was measured), and a check's must not depend on how it was scheduled.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import itertools
import math
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from convcheck.spec import ConvShape

Item = TypeVar("Item")
Result = TypeVar("Result")
Value = TypeVar("Value")

#: Tasks queued per worker beyond the one it is running: keeps every worker busy while bounding memory.
LOOKAHEAD = 2

#: Environment variables that hold BLAS/OpenMP libraries to one thread when set to "1" before they load.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

_ENVIRONMENT_LOCK = threading.Lock()
_HELD = contextlib.ExitStack()  # hold_one_blas_thread's BLAS limit, kept for the life of the process
_held = False


def _fresh_environment_lock() -> None:
    # A worker is forked inside one_blas_thread_environment, which holds the lock; the child never leaves that
    # block (it runs the worker and exits), so it starts with a lock of its own, and keeps the block's variables.
    global _ENVIRONMENT_LOCK
    _ENVIRONMENT_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_environment_lock)

#: Multiply-adds per forward pass below which a check's groups are measured on one thread (``engine_workers``).
PARALLEL_MIN_MACS = 5_000_000
#: Multiply-adds per forward pass below which a whole check runs its products on one BLAS thread
#: (``check_blas_threads``). Below it a second thread saved a check at most a few percent of its time and took
#: half again to twice its CPU (BLAS's threads spin between products), so that two checks run at once (two
#: ``pytest -n 2`` workers, two CI jobs) each took almost twice as long. Measured on 2 cores, convcheck's own layer
#: with ReLU, best of 9, one BLAS thread against two: 2×16×16×8 → 16 (0.6 M) full check 28.6 against 29.0 ms;
#: 4×16×16×8 → 16 (1.2 M) 59.0 against 57.5 ms; 4×16×16×16 → 16 (2.4 M) 147 against 138 ms. The 320 layers of
#: the sweep benchmark (at most 0.94 M), ``benchmarks/two_at_once.py``: 12.6-13.1 against 12.7-12.8 ms a check
#: alone (CPU 12.6-13.1 against 20.2-20.4 ms), 12.5 against 20.8-23.0 ms each with two processes at once.
BLAS_ONE_THREAD_MACS = 1_000_000
#: Multiply-adds per forward pass below which a user's layer's batches are evaluated in one process.
FANOUT_MIN_MACS = 5_000_000
#: Forward passes a check plans below which a user's layer's batches are evaluated in one process whatever its
#: size: forking the processes and their first, cold calls cost more than they save. Measured for
#: ``examples/im2col_nhwc.py`` with ReLU, isolated, best of 5, on 2 cores: 8×16×16×16 → 32 (9.4 M multiply-adds)
#: directional (10 passes) 106 ms in one process against 160 ms on two, sampled (322) 511 against 429 ms; at the
#: 8×32×48×16 → 32 seed geometry, directional 350 against 453 ms, sampled 2.71 against 1.97 s.
FANOUT_MIN_PASSES = 64

#: Set by ``one_blas_thread_environment`` for the process it starts: the cores that process may keep busy.
CORES_VARIABLE = "CONVCHECK_CORES"


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)


def engine_workers(layer: object, shape: ConvShape) -> int:
    """Threads a check's finite differences should use for ``layer``: every core, or 1.

    One thread for a user's layer (it may keep state between calls, or not release the GIL), whenever the
    environment holds BLAS to one thread (``--jobs`` worker processes: the other cores are running other checks),
    and for small layers: below ``PARALLEL_MIN_MACS`` multiply-adds per forward pass, handing groups to threads
    costs more than it saves (measured: 0.4M MACs ran 1.6× slower on two threads, 9M ran 1.2× faster).
    convcheck's own layers (``MatrixConvLayer`` and the planted-bug variants) have pure forwards: all cores.
    """
    if not own_layer(layer) or blas_pinned():
        return 1  # a user's layer, or a user's subclass of ours, behind whatever adapter; or a --jobs worker
    return available_cores() if forward_macs(shape) >= PARALLEL_MIN_MACS else 1


def forward_macs(shape: ConvShape) -> int:
    """Multiply-adds of one forward pass at ``shape``."""
    return math.prod(shape.out_shape) * shape.fan_in


def check_blas_threads(layer: object, shape: ConvShape, directional: bool) -> int | None:
    """BLAS threads a whole check of ``layer`` at ``shape`` holds its products to, or None to leave them as they
    are: one below ``BLAS_ONE_THREAD_MACS``, where more saved a few percent of the time at most; else for the quick
    tier (``directional``) of convcheck's own layer, ``side_by_side_blas_threads`` whether or not its steps run side
    by side (``Beside`` says why). Held in this process: a user's layer run here (``--in-process``, a layer object
    handed to ``run_check``) is held too; one isolated in a process of its own keeps that process's threads."""
    if forward_macs(shape) < BLAS_ONE_THREAD_MACS:
        return 1
    return side_by_side_blas_threads() if directional and own_layer(layer) else None


def own_layer(layer: object) -> bool:
    """Whether ``layer`` is convcheck's own (``MatrixConvLayer`` or a planted-bug variant of it): pure forwards,
    safe to call from several threads at once; not a user's layer nor a user's subclass of ours."""
    from convcheck.layer import MatrixConvLayer  # here, not at the top: this module loads before the layer's

    return isinstance(layer, MatrixConvLayer) and type(layer).__module__.startswith("convcheck.")


def fanout_workers(shape: ConvShape, passes: int) -> int:
    """Processes that evaluate a user's layer's batches of perturbed points (``convcheck.numeric.fanout``) in a
    check of ``passes`` planned forward passes: the cores this process may keep busy for layers of at least
    ``FANOUT_MIN_MACS`` multiply-adds per forward pass in checks of at least ``FANOUT_MIN_PASSES`` passes, else 1
    (the batch is evaluated in the layer's own process: forking costs more than a small layer's batch, or than
    the few passes of a quick check save).

    Those cores are every core, or in a process started with one BLAS thread its share of them
    (``CORES_VARIABLE``: all of them for the one worker of ``--jobs 1``, one each under ``--jobs N``).
    """
    if forward_macs(shape) < FANOUT_MIN_MACS or passes < FANOUT_MIN_PASSES:
        return 1
    if not blas_pinned():
        return available_cores()
    try:
        share = int(os.environ.get(CORES_VARIABLE, "1"))
    except ValueError:
        share = 1
    return max(1, min(share, available_cores()))


def blas_pinned() -> bool:
    """Whether the environment holds BLAS to one thread (this process runs beside others that use the cores)."""
    return any(os.environ.get(name) == "1" for name in BLAS_THREAD_VARIABLES)


@contextmanager
def one_blas_thread_environment(cores: int = 1) -> Iterator[None]:
    """``BLAS_THREAD_VARIABLES`` = 1 inside the block, restored after it: start a child process in it, and the
    child (which inherits the environment) loads BLAS with one thread. ``cores``: the cores that child may keep
    busy with processes of its own (``CORES_VARIABLE``; a ``--jobs 1`` worker has the machine to itself)."""
    with _ENVIRONMENT_LOCK:
        saved = {name: os.environ.get(name) for name in (*BLAS_THREAD_VARIABLES, CORES_VARIABLE)}
        os.environ.update(dict.fromkeys(BLAS_THREAD_VARIABLES, "1"))
        os.environ[CORES_VARIABLE] = str(max(1, cores))
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def hold_one_blas_thread() -> None:
    """From now on, for the life of this process: ``BLAS_THREAD_VARIABLES`` = 1 (so ``engine_workers`` measures
    on one thread) and BLAS held to one thread (``limited_blas``). Idempotent and thread-safe."""
    global _held
    with _ENVIRONMENT_LOCK:
        if _held:
            return
        os.environ.update(dict.fromkeys(BLAS_THREAD_VARIABLES, "1"))
        _HELD.enter_context(limited_blas(1))
        _held = True


def ordered_map(
    fn: Callable[[Item, Any], Result],
    items: Iterable[Item],
    *,
    workers: int,
    local: Callable[[], Any],
) -> Iterator[Result]:
    """``fn(item, state)`` for each item on ``workers`` threads, yielded in the order of ``items``.

    Each thread makes its ``state`` once with ``local()`` (e.g. its own copies of arrays it will modify). At most
    ``workers · (1 + LOOKAHEAD)`` items are in flight. An exception from ``fn`` is raised when its item's turn
    comes; the items after it are cancelled. BLAS runs on one thread per worker meanwhile (``limited_blas``).
    """
    state = threading.local()

    def call(item: Item) -> Result:
        if not hasattr(state, "value"):
            state.value = local()
        return fn(item, state.value)

    pending: deque[Future[Result]] = deque()
    source = iter(items)
    with limited_blas(1):
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convcheck-group")
        try:
            for item in itertools.islice(source, workers * (1 + LOOKAHEAD)):
                pending.append(pool.submit(call, item))
            while pending:
                result = pending.popleft().result()
                for item in itertools.islice(source, 1):
                    pending.append(pool.submit(call, item))
                yield result
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def limited_blas(threads: int) -> Iterator[None]:
    """Hold BLAS to ``threads`` threads inside the block (best effort: unchanged when no control is found).

    BLAS's threads belong to the process, not to a thread, so blocks open at once on several threads (checks run
    from several threads of a program) share one setting: the fewest any open block asks for, and when the last
    of them ends, in whatever order they end, the count from before the first. So a check run beside another
    thread's may have its products on fewer threads than it asked for (and, where that changes them, other last
    bits). A process forked inside a block starts from the count before it (``_fresh_blas_limits``)."""
    hold = _Hold(threads)
    try:
        with _BLAS_LOCK:
            if not _blas_holds and not _blas_before:
                _blas_before[:] = [(set_threads, get()) for get, set_threads in _blas_controls()]
            _blas_holds.append(hold)
            _apply_holds()
        yield
    finally:  # also when a timeout's or Ctrl-C's exception landed before the hold was in the list
        with _BLAS_LOCK:
            _blas_holds[:] = [other for other in _blas_holds if other is not hold]
            _apply_holds()


class _Hold:
    """One open ``limited_blas`` block (compared by identity: two blocks may ask for the same count)."""

    __slots__ = ("threads",)

    def __init__(self, threads: int) -> None:
        self.threads = threads


# Reentrant: a block left open by an abandoned generator (``ordered_map``'s) may be closed by the garbage collector
# on the thread that is inside the lock already.
_BLAS_LOCK = threading.RLock()
_blas_holds: list[_Hold] = []  # the limited_blas blocks open now, on any thread
_blas_before: list[tuple[Callable[[int], None], int]] = []  # each BLAS's own count before the first of them


def _apply_holds() -> None:
    """Under ``_BLAS_LOCK``: BLAS at the fewest threads an open block asks for, or with none open, back at the
    count from before the first."""
    if _blas_holds:
        fewest = min(hold.threads for hold in _blas_holds)
        for set_threads, _ in _blas_before:
            set_threads(fewest)
        return
    for set_threads, count in _blas_before:
        set_threads(count)
    _blas_before.clear()


def _fresh_blas_limits() -> None:
    # A forked child has only the thread that forked, which never leaves the blocks it was in (it runs its task and
    # exits), and a process started inside a check's block (the user's layer's fork server, started at its first
    # call) must not keep that check's count for the later checks it serves: the child starts with no block open
    # and the count from before the first, and a lock of its own. A process held to one thread for its life
    # (``hold_one_blas_thread``: a --jobs worker) keeps that hold in its children.
    global _BLAS_LOCK
    _BLAS_LOCK = threading.RLock()
    if _held:
        _blas_holds[:] = [_Hold(1)]
        return
    _blas_holds.clear()
    _apply_holds()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_blas_limits)


def _blas_controls() -> list[tuple[Callable[[], int], Callable[[int], None]]]:
    """``(get, set)`` thread-count functions of each BLAS loaded in this process: ``threadpoolctl``'s when it is
    installed (every BLAS it knows), else OpenBLAS's own (``_openblas_controls``).

    Looked for again only when a module was imported since the last time (a BLAS is loaded by the extension
    module linked to it): looking took 0.1-0.2 ms, a few percent of a small layer's whole check."""
    global _found_controls
    modules = len(sys.modules)
    if _found_controls is not None and _found_controls[0] == modules:
        return _found_controls[1]
    try:
        from threadpoolctl import ThreadpoolController

        libraries = ThreadpoolController().select(user_api="blas").lib_controllers
        controls = [(library.get_num_threads, library.set_num_threads) for library in libraries]
    except (ImportError, AttributeError):  # not installed, or older than 3.0 (no controller objects)
        controls = _openblas_controls()
    _found_controls = (len(sys.modules), controls)
    return controls


_found_controls: tuple[int, list[tuple[Callable[[], int], Callable[[int], None]]]] | None = None


def _openblas_controls() -> list[tuple[Callable[[], int], Callable[[int], None]]]:
    """``(get, set)`` thread-count functions of each OpenBLAS loaded in this process (Linux; else none).

    numpy's wheels bundle OpenBLAS with prefixed, suffixed symbols (``scipy_openblas_set_num_threads64_``); a
    system OpenBLAS has the plain names. The library is already loaded, so opening it again only returns a handle.
    """
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.rsplit("/", 1)[-1].lower()}
    except OSError:
        return []
    controls = []
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in itertools.product(("scipy_", ""), ("64_", "_64", "")):
            get = getattr(library, f"{prefix}openblas_get_num_threads{suffix}", None)
            set_threads = getattr(library, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and set_threads is not None:
                get.restype, set_threads.argtypes = ctypes.c_int, [ctypes.c_int]
                controls.append((get, set_threads))
                break
    return controls


class Beside:
    """Calls run beside this thread's work, on ``_helper``'s thread, in the order started: ``start(fn)`` returns the
    function that gives ``fn()``'s result (raising what ``fn`` raised).

    ``Beside`` leaves BLAS's threads as they are. The last bits of a matrix product can depend on the number of
    threads it runs on (measured: the backward products of a 4×23×31×13 → 29 layer differ on one and on two), so
    a caller whose results must not depend on whether calls ran beside or in turn holds that number fixed for both
    (the quick tier of convcheck's own layer: ``side_by_side_blas_threads``, by ``limited_blas``). On 2 cores, two
    threads each asking for two BLAS threads ran 0.6-0.8× as fast as one thread doing both calls in turn, and
    1.7× as fast with one BLAS thread each.
    """

    def __init__(self) -> None:
        self._pending: list[Future[Any]] = []

    def start(self, fn: Callable[[], Value]) -> Callable[[], Value]:
        # in the caller's context: its context variables (a progress hook) hold there too
        future = _helper().submit(contextvars.copy_context().run, fn)
        self._pending.append(future)
        return future.result

    def alone(self) -> None:
        """Wait until every call started has ended (its result or exception stays with its future); calls not
        started yet are dropped, since nobody asks for them any more (the block ended early). An interruption of
        this thread meanwhile (Ctrl-C, a check's timeout) is raised as usual."""
        for future in self._pending:
            future.cancel()
        futures.wait(self._pending)
        self._pending.clear()


@contextmanager
def side_by_side() -> Iterator[Beside]:
    """A ``Beside`` for the block; every call started has ended when the block does, also when it raises."""
    beside = Beside()
    try:
        yield beside
    finally:
        beside.alone()


def side_by_side_blas_threads() -> int:
    """BLAS threads for each of the two threads of a check that runs its steps side by side: half the cores (one
    each on 2 cores, where that was measured: ``Beside``), one in a process held to one thread."""
    return 1 if blas_pinned() else max(1, available_cores() // 2)


def side_by_side_pays(layer: object, shape: ConvShape) -> bool:
    """Whether a check of ``layer`` at ``shape`` should run steps side by side: when its groups would be measured on
    every core (``engine_workers``: convcheck's own layer, large enough, BLAS not held to one thread) and there is
    a second core."""
    return engine_workers(layer, shape) > 1


_helper_pool: ThreadPoolExecutor | None = None
_helper_lock = threading.Lock()


def _helper() -> ThreadPoolExecutor:
    """The one thread ``Beside`` runs calls on, made once and kept for the life of the process: the layer keeps
    its buffers per thread (``reuse.Workspace``), and a thread made anew for every check would allocate and
    page-fault them in anew (tens of megabytes a check)."""
    global _helper_pool
    with _helper_lock:
        if _helper_pool is None:
            _helper_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convcheck-beside")
        return _helper_pool


def _forget_helper() -> None:
    """In a forked child the helper's thread does not exist: make a new one when next asked for."""
    global _helper_pool, _helper_lock
    _helper_pool, _helper_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helper)
