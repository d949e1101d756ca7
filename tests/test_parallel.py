"""Measuring groups on several threads changes nothing but the wall time: same estimates, same pass counts."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import CancelledError

import numpy as np
import pytest

from convcheck import bugs, checker, parallel, tolerance
from convcheck.checker import run_check
from convcheck.layer import MatrixConvLayer
from convcheck.numeric import Engine, NotLocalError
from convcheck.results import CheckResult
from convcheck.spec import Activation, CheckSpec, ConvShape, DType, Method

F64 = tolerance.resolve(DType.FLOAT64)
U64 = tolerance.unit_roundoff(DType.FLOAT64)
FIELDS = ("central", "lo", "hi", "crossed", "noise", "truncation", "measured")


def engines(shape: ConvShape, activation: Activation, workers: tuple[int, ...], seed: int = 0):
    rng = np.random.default_rng(seed)
    x, w, b, g = (rng.standard_normal(s) for s in (shape.x_shape, shape.w_shape, shape.b_shape, shape.out_shape))
    layer = MatrixConvLayer(shape.stride, shape.padding, activation)
    analytic = layer.backward(g, layer.forward(x, w, b)[1])
    noise = tolerance.analytic_noise(x, w, b, g, shape.window, U64)

    def forward(*arrays):
        return layer.forward(*arrays)[0]

    built = [Engine(forward, x, w, b, g, shape, activation, F64.eps, U64, workers=n) for n in workers]
    return built, analytic, noise


def assert_same(a, b) -> None:
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("activation", [Activation.RELU, Activation.TANH])
@pytest.mark.parametrize(
    "shape", [ConvShape(2, 9, 7, 3, 4, 3, 1, 1), ConvShape(1, 8, 9, 2, 3, 2, 2, 0)], ids=lambda s: s.describe()
)
def test_two_workers_give_the_estimates_of_one_bit_for_bit(shape: ConvShape, activation: Activation):
    (one, two), analytic, noise = engines(shape, activation, (1, 2))
    for tensor in range(3):
        args = (tensor, analytic[tensor], noise[tensor], F64.rtol, F64.atol)
        assert_same(one.grouped(*args), two.grouped(*args))
        assert_same(one.entrywise(*args, entries=np.array([0, 1])), two.entrywise(*args, entries=np.array([0, 1])))
        rngs = (np.random.default_rng(3), np.random.default_rng(3))
        assert_same(
            one.directional(tensor, analytic[tensor], noise[tensor], 3, rngs[0]),
            two.directional(tensor, analytic[tensor], noise[tensor], 3, rngs[1]),
        )
    assert one.forward_passes == two.forward_passes


def test_a_non_local_forward_is_refused_with_workers_too():
    shape = ConvShape(1, 6, 6, 1, 1, 3, 1, 1)
    rng = np.random.default_rng(0)
    x, w, b, g = (rng.standard_normal(s) for s in (shape.x_shape, shape.w_shape, shape.b_shape, shape.out_shape))
    layer = MatrixConvLayer(1, 1, Activation.NONE)

    def leaky(x, w, b):
        out = layer.forward(x, w, b)[0]
        return out + 1e-3 * x.sum()  # every output sees every input entry

    engine = Engine(leaky, x, w, b, g, shape, Activation.NONE, F64.eps, U64, workers=2)
    with pytest.raises(NotLocalError):
        engine.grouped(0, np.zeros(x.size), np.zeros(x.size), F64.rtol, F64.atol)


def test_ordered_map_keeps_the_order_and_gives_each_thread_its_own_state():
    states = []

    def make_state():
        state = {"thread": threading.get_ident()}
        states.append(state)
        return state

    def work(item, state):
        assert state["thread"] == threading.get_ident()
        return item * item

    assert list(parallel.ordered_map(work, range(50), workers=2, local=make_state)) == [i * i for i in range(50)]
    assert 1 <= len(states) <= 2


def test_ordered_map_raises_an_items_error_in_its_turn():
    def work(item, _state):
        if item == 7:
            raise ValueError("seven")
        return item

    seen = []
    with pytest.raises(ValueError, match="seven"):
        for value in parallel.ordered_map(work, range(20), workers=2, local=dict):
            seen.append(value)
    assert seen == list(range(7))


def test_limited_blas_restores_what_it_found():
    controls = parallel._openblas_controls()
    before = [get() for get, _ in controls]
    with parallel.limited_blas(1):
        pass
    assert [get() for get, _ in controls] == before


def test_engine_workers_uses_every_core_only_for_large_convcheck_layers_and_unpinned_blas(monkeypatch):
    for name in parallel.BLAS_THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(parallel, "available_cores", lambda: 2)
    seed = ConvShape(8, 32, 48, 16, 32, 3, 1, 1)
    small = ConvShape(2, 5, 7, 2, 3, 3, 1, 1)
    layer = MatrixConvLayer(1, 1, Activation.RELU)
    assert parallel.engine_workers(layer, seed) == 2
    assert parallel.engine_workers(layer, small) == 1

    class UserLayer:
        pass

    class UserSubclass(MatrixConvLayer):
        pass

    assert parallel.engine_workers(UserLayer(), seed) == 1
    assert parallel.engine_workers(UserSubclass(1, 1, Activation.RELU), seed) == 1
    assert parallel.engine_workers(bugs.StepwiseLayer(1, 1, Activation.RELU), seed) == 2
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert parallel.engine_workers(layer, seed) == 1


# Large enough for the quick tier of convcheck's own layer to run its steps side by side (``engine_workers``); the
# odd one's backward products come out differently on one and on two BLAS threads (its forward's do not).
SIDE_BY_SIDE = ConvShape(4, 24, 32, 16, 16, 3, 1, 1)
ODD = ConvShape(4, 23, 31, 13, 29, 3, 1, 1)


def quick_fingerprint(result: CheckResult) -> tuple[object, ...]:
    grads = tuple(
        (g.name, g.passed, g.projections, g.kinks, g.max_abs_error, g.worst)
        + tuple(getattr(g, name).tobytes() for name in ("analytic", "numeric", "allowed", "error", "kink"))
        for g in result.gradients
    )
    f = result.forward
    forward = None if f is None else (f.ok, f.max_abs_error, f.allowed, f.worst_index, f.reference.tobytes())
    return result.status, result.forward_passes, grads, forward, tuple(str(p) for p in result.contract)


@pytest.mark.parametrize(
    ("activation", "dtype", "bug", "shape"),
    [
        (Activation.RELU, DType.FLOAT64, None, SIDE_BY_SIDE),
        (Activation.RELU, DType.FLOAT64, None, ODD),
        (Activation.TANH, DType.FLOAT32, None, ODD),
        (Activation.TANH, DType.FLOAT32, None, SIDE_BY_SIDE),
        (Activation.LEAKY_RELU, DType.FLOAT64, None, SIDE_BY_SIDE),
        (Activation.RELU, DType.FLOAT64, "relu-mask-from-input", SIDE_BY_SIDE),
        (Activation.RELU, DType.FLOAT64, "forward-missing-bias", SIDE_BY_SIDE),
        (Activation.RELU, DType.FLOAT32, "weights-accumulate", SIDE_BY_SIDE),
    ],
)
def test_the_quick_tier_side_by_side_gives_the_results_of_one_thread_bit_for_bit(
    monkeypatch, activation: Activation, dtype: DType, bug: str | None, shape: ConvShape
):
    """Two threads (the engine's setup and the weights' and bias's projections beside the layer contract's calls,
    the forward verdict beside the input's projection) change nothing but the time: the same bytes as the same
    check run step after step, whichever number of BLAS threads the caller had (``ODD``'s products differ in their
    last bits on one and on two; the quick tier holds BLAS to one thread either way)."""
    for name in parallel.BLAS_THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(parallel, "available_cores", lambda: 2)
    spec = CheckSpec("quick", shape, activation, Method.DIRECTIONAL, dtype=dtype, seed=3)

    def layer() -> MatrixConvLayer:
        if bug is None:
            return MatrixConvLayer(1, 1, activation)
        return bugs.get(bug).make(1, 1, activation)  # type: ignore[return-value]

    assert parallel.side_by_side_pays(layer(), shape)
    taken = []
    side_by_side_run = checker._quick_side_by_side
    monkeypatch.setattr(checker, "_quick_side_by_side", lambda *args: taken.append(1) or side_by_side_run(*args))
    with parallel.limited_blas(2):
        side_by_side = run_check(spec, layer=layer())
    assert taken == [1]
    monkeypatch.setattr(parallel, "side_by_side_pays", lambda *_: False)
    for threads in (1, 2):
        with parallel.limited_blas(threads):
            one_thread = run_check(spec, layer=layer())
        assert quick_fingerprint(side_by_side) == quick_fingerprint(one_thread), threads
    assert taken == [1]
    assert side_by_side.passed is (bug is None)


def _side_by_side_machine(monkeypatch) -> None:
    for name in parallel.BLAS_THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(parallel, "available_cores", lambda: 2)


def test_the_quick_tier_side_by_side_reports_its_passes_to_the_progress_hook(monkeypatch):
    """The engine is set up on the helper thread: the hook set on the caller's (a context variable) holds there."""
    _side_by_side_machine(monkeypatch)
    spec = CheckSpec("quick", SIDE_BY_SIDE, Activation.RELU, Method.DIRECTIONAL)
    assert parallel.side_by_side_pays(MatrixConvLayer(1, 1, Activation.RELU), SIDE_BY_SIDE)
    reported: list[int] = []
    with checker.report_progress(lambda name, done, planned: reported.append(done)):
        result = run_check(spec)
    assert result.passed and reported and max(reported) == result.forward_passes


SETUP_FAILS = """
import time
from convcheck import checker, parallel
from convcheck.spec import Activation, CheckSpec, ConvShape, Method
parallel.available_cores = lambda: 2
def fails(spec):
    time.sleep(0.5)  # by now the helper thread's engine waits for the contract's first output
    raise RuntimeError("no generator")
checker.method_rng = fails
shape = ConvShape(4, 24, 32, 16, 16, 3, 1, 1)
result = checker.run_check(CheckSpec("quick", shape, Activation.RELU, Method.DIRECTIONAL))
print(result.status.value, "no generator" in (result.error or ""))
"""


def test_a_quick_tier_that_fails_before_its_contract_ends_in_an_error_row_not_a_hang():
    """The helper thread's engine waits for the contract's first output; a failure before the contract starts
    must still release it (else the check, and the process at exit, would wait for ever)."""
    env = {k: v for k, v in os.environ.items() if k not in parallel.BLAS_THREAD_VARIABLES}
    done = subprocess.run([sys.executable, "-c", SETUP_FAILS], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["error", "True"]


def test_the_memory_estimate_of_the_quick_tier_counts_two_threads_on_any_machine(monkeypatch):
    """Its steps run side by side on two threads however many cores there are; the full check's on every core."""
    _side_by_side_machine(monkeypatch)
    quick, full = (CheckSpec("m", SIDE_BY_SIDE, method=m) for m in (Method.DIRECTIONAL, Method.FULL))
    on_two = checker.estimated_memory(quick), checker.estimated_memory(full)
    monkeypatch.setattr(parallel, "available_cores", lambda: 16)
    assert checker.estimated_memory(quick) == on_two[0]
    assert checker.estimated_memory(full) > on_two[1]


def test_blas_threads_change_the_odd_layers_products_so_the_test_above_can_fail():
    """The premise of the test above: ``ODD``'s backward products come out differently on one BLAS thread and on
    two, so results that did not hold BLAS to one thread would differ between its runs."""
    layer = MatrixConvLayer(1, 1, Activation.RELU)
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s) for s in (ODD.x_shape, ODD.w_shape, ODD.b_shape))
    _, cache = layer.forward(x, w, b)
    dout = rng.standard_normal(ODD.out_shape)
    grads = {}
    for threads in (1, 2):
        with parallel.limited_blas(threads):
            grads[threads] = b"".join(g.tobytes() for g in layer.backward(dout, cache))
    if not parallel._openblas_controls() or parallel.available_cores() < 2:
        pytest.skip("BLAS's threads are not controlled here, or there is one core")
    assert grads[1] != grads[2]


def test_beside_runs_calls_on_its_thread_in_order_and_hands_back_their_errors():
    here = threading.get_ident()
    seen: list[int] = []

    def call() -> int:
        seen.append(threading.get_ident())
        return len(seen)

    with parallel.side_by_side() as beside:
        first = beside.start(call)
        second = beside.start(call)
        assert (first(), second()) == (1, 2)  # in the order started
        failing = beside.start(lambda: 1 // 0)
        with pytest.raises(ZeroDivisionError):
            failing()
    with parallel.side_by_side() as beside:
        beside.start(call)()
    assert seen[0] == seen[1] == seen[2] != here  # one helper thread, kept for the next check


def test_a_block_that_ends_waits_for_the_running_call_and_drops_those_not_started():
    started, gate = threading.Event(), threading.Event()

    def busy() -> bool:
        started.set()
        return gate.wait(10)

    with parallel.side_by_side() as beside:
        running = beside.start(busy)
        dropped = beside.start(lambda: 1 // 0)  # queued behind it: nobody asks for it before the block ends
        assert started.wait(10)
        threading.Timer(0.2, gate.set).start()
    assert gate.is_set() and running() is True  # the block ended only once the running call had
    with pytest.raises(CancelledError):
        dropped()


def test_a_forked_child_gets_a_helper_thread_of_its_own():
    with parallel.side_by_side() as beside:
        beside.start(lambda: None)()
    pid = os.fork()
    if pid == 0:  # the child: the parent's helper thread does not exist here
        code = 1
        try:
            with parallel.side_by_side() as beside:
                code = 0 if beside.start(lambda: 7)() == 7 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
