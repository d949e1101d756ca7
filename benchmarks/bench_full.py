"""The ``full`` benchmark: ``run_check`` of the seed layer with every entry checked, against its forward passes
times one plain vectorized im2col forward (``plain_forward``) and against the floor of those passes alone
(``forward_floor``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from harness import interleaved
from rows import SEED_SHAPE, Row, seed_data

from convcheck import checker, numeric, parallel
from convcheck.layer import MatrixConvLayer
from convcheck.numeric.audit import AUDIT_ENTRIES
from convcheck.numeric.groups import input_groups
from convcheck.spec import Activation, ConvShape


def _with_workers(workers: int):
    """``run_check`` with the engine measuring groups on ``workers`` threads, whatever the checker would choose."""
    original = parallel.engine_workers

    def run(spec):
        parallel.engine_workers = lambda layer, shape: workers
        try:
            return checker.run_check(spec)
        finally:
            parallel.engine_workers = original

    return run


def plain_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """relu(conv(x, w) + b) by one plain vectorized im2col: pad, gather every window (a strided view copied into
    the ``(N·OH·OW, k·k·C_in)`` matrix), one matrix product. No reuse between calls: the yardstick a check's
    forward passes are measured in. ``x: (N, H, W, C_in)``, ``w: (k, k, C_in, C_out)``, ``b: (C_out,)``."""
    n, _, _, c_in = x.shape
    k, _, _, c_out = w.shape
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    _, oh, ow = windows.shape[:3]
    matrix = windows.transpose(0, 1, 2, 4, 5, 3).reshape(n * oh * ow, k * k * c_in)
    z = matrix @ w.reshape(k * k * c_in, c_out) + b
    return np.maximum(z, 0).reshape(n, oh, ow, c_out)


State = tuple[np.ndarray, np.ndarray, np.ndarray]  # one thread's padded input, its windows, its im2col matrix


def _floor_passes(data, shape: ConvShape) -> tuple[Callable[[], State], Callable[[bool, State], np.ndarray]]:
    """``(buffers, one_pass)`` of the floors below: a thread's buffers, allocated once, and one forward pass in them
    (``one_pass(unfolds, state)``: with ``unfolds``, the input copied into the padded buffer and its windows into
    the im2col matrix again; then one matrix product, the bias and the ReLU in place; returns the output)."""
    n, h, w, c = shape.x_shape
    k, s, p = shape.filter_size, shape.stride, shape.padding
    oh, ow = shape.out_height, shape.out_width
    weights, bias = data.w.reshape(-1, shape.out_depth), data.b

    def buffers() -> State:
        padded = np.zeros((n, h + 2 * p, w + 2 * p, c))
        sn, sh, sw, sc = padded.strides
        windows = np.lib.stride_tricks.as_strided(
            padded, (n, oh, ow, k, k, c), (sn, sh * s, sw * s, sh, sw, sc), writeable=False
        )
        return padded, windows, np.empty((n * oh * ow, k * k * c))

    def one_pass(unfolds: bool, state: State) -> np.ndarray:
        padded, windows, cols = state
        if unfolds:  # the input changed: copy it in and unfold it again (into the same matrix)
            np.copyto(padded[:, p : p + h, p : p + w], data.x)
            np.copyto(cols.reshape(windows.shape), windows)
        z = cols @ weights
        z += bias
        np.maximum(z, 0, out=z)
        return z

    return buffers, one_pass


def forward_floor(data, shape: ConvShape, input_passes: int, other_passes: int, workers: int) -> Callable[[], object]:
    """The honest floor of a full check's forward passes: ``input_passes`` passes that unfold a changed input
    (copy it into a padded buffer, one strided copy of its windows into the im2col matrix) and ``other_passes``
    that reuse the matrix, each then one matrix product, the bias and the ReLU in place, every buffer allocated
    once; on ``workers`` threads with one BLAS thread each (``parallel.ordered_map``), or on this thread with BLAS
    on every core (``workers`` 1). Nothing a check does besides its passes (reductions, the checker) is in it."""
    buffers, one_pass = _floor_passes(data, shape)

    def passes(unfolds: bool, state: State) -> None:
        one_pass(unfolds, state)  # returns nothing: the floor keeps no output

    plan = [True] * input_passes + [False] * other_passes
    if workers == 1:
        state = buffers()
        one_pass(True, state)
        return lambda: [passes(unfolds, state) for unfolds in plan]
    return lambda: list(parallel.ordered_map(passes, plan, workers=workers, local=buffers))


def reduced_floor(data, shape: ConvShape, input_passes: int, other_passes: int, workers: int) -> Callable[[], object]:
    """``forward_floor``'s passes in pairs, as a check makes them (a group's ``f⁺`` and ``f⁻``, both unfolding a
    changed input or neither), on ``workers`` threads with one BLAS thread each, each pair then reduced as every
    grouped estimate of a ReLU layer must be, in numpy's fewest passes over the outputs: ``Σ G·f⁺ − Σ G·f⁻`` per
    output position (two ``einsum`` reductions, no temporary) and the kink test of every output,
    ``|f⁺ + f⁻ − 2·f0| > T`` (in place, then ``any``). ``G`` is the check's ``dout``, ``f0`` the layer's output at
    the point and ``T`` a rounding threshold per output. What it leaves out a check also does: the owners' sums,
    the locality test, the crossed outputs' intervals, the audits, the contract."""
    buffers, one_pass = _floor_passes(data, shape)
    dout = data.dout.reshape(-1, shape.out_depth)
    twice_f0 = 2 * one_pass(True, buffers())
    threshold = np.full_like(twice_f0, 1e-12)

    def pair(unfolds: bool, state: State) -> None:
        f_plus, f_minus = one_pass(unfolds, state), one_pass(unfolds, state)
        np.einsum("pc,pc->p", f_plus, dout) - np.einsum("pc,pc->p", f_minus, dout)
        f_plus += f_minus
        f_plus -= twice_f0
        np.abs(f_plus, out=f_plus)
        np.greater(f_plus, threshold).any()

    pairs = [True] * (input_passes // 2) + [False] * (other_passes // 2)
    return lambda: list(parallel.ordered_map(pair, pairs, workers=workers, local=buffers))


def bench_full(rounds: int) -> list[Row]:
    spec, data = seed_data()
    s = SEED_SHAPE
    results = {}
    expected = MatrixConvLayer(s.stride, s.padding, Activation.RELU).forward(data.x, data.w, data.b)[0]
    if not np.allclose(plain_forward(data.x, data.w, data.b, s.stride, s.padding), expected, rtol=1e-12, atol=1e-12):
        raise AssertionError("the plain forward and the built-in layer disagree")

    def shipped():
        results["shipped"] = checker.run_check(spec)

    one = _with_workers(1)

    def one_thread():
        results["one thread"] = one(spec)

    _, cache = MatrixConvLayer(s.stride, s.padding, Activation.RELU).forward(data.x, data.w, data.b)
    candidates = {
        "shipped": shipped,
        "one thread": one_thread,
        "plain forward": lambda: plain_forward(data.x, data.w, data.b, s.stride, s.padding),
        "GEMM": lambda: cache.cols @ cache.weights,  # a forward pass's matrix product alone, BLAS on every core
    }
    # The check's passes that change the input: two per input group and per audited input entry.
    input_passes = 2 * (sum(1 for _ in input_groups(s)) + AUDIT_ENTRIES)
    floors: dict[str, Callable[[], object]] = {}

    def floor(name: str, kind: Callable[..., Callable[[], object]], workers: int) -> Callable[[], object]:
        def run() -> object:  # built at its first call, once the check has said how many passes it made
            if name not in floors:
                other = results["shipped"].forward_passes - input_passes
                floors[name] = kind(data, s, input_passes, other, workers)
            return floors[name]()

        return run

    candidates["floor, 2 threads"] = floor("floor, 2 threads", forward_floor, 2)
    candidates["floor, 1 thread"] = floor("floor, 1 thread", forward_floor, 1)
    candidates["floor, reduced"] = floor("floor, reduced", reduced_floor, 2)
    best = interleaved(candidates, rounds, burst=1, bursts={"plain forward": 20, "GEMM": 20})
    passes = results["shipped"].forward_passes
    floor_best = min(best["floor, 2 threads"], best["floor, 1 thread"])
    floor_ratio = floor_best / (passes * best["plain forward"])
    reduced_ratio = best["floor, reduced"] / (passes * best["plain forward"])  # beside its passes on 2 threads
    two_threads_ratio = best["floor, 2 threads"] / (passes * best["plain forward"])
    entrywise = numeric.entrywise_passes(SEED_SHAPE)
    status = {name: r.status.value for name, r in results.items()}
    threads = parallel.engine_workers(MatrixConvLayer(), SEED_SHAPE)
    ratio = best["shipped"] / (passes * best["plain forward"])
    return [
        Row(
            "full",
            "run_check, seed layer, every entry",
            best["shipped"],
            "s",
            note=f"status {status['shipped']}; engine on {threads} threads",
        ),
        Row(
            "full",
            "the same with Engine(workers=1)",
            best["one thread"],
            "s",
            note=f"status {status['one thread']}; {best['one thread'] / best['shipped']:.2f}× the time",
        ),
        Row("full", "one plain im2col forward (plain_forward)", 1e3 * best["plain forward"], "ms"),
        Row("full", "forward passes used", passes, "", note=f"grouped formula {numeric.grouped_passes(SEED_SHAPE)}"),
        Row("full", "per-entry differences would need", entrywise, "", note=f"{entrywise / passes:.0f}× more"),
        Row("full", "full check / (passes × plain forward)", ratio, "×", "≤ 0.6", ratio <= 0.6),
        Row(
            "full",
            "floor: its passes alone (forward_floor) / (passes × plain forward)",
            floor_ratio,
            "×",
            note=f"{floor_best:.2f} s ({best['floor, 2 threads']:.2f} s on 2 threads, {best['floor, 1 thread']:.2f} s "
            f"on 1 with BLAS on every core; {input_passes} of {passes} passes unfold); check / floor "
            f"{best['shipped'] / floor_best:.2f}",
        ),
        Row(
            "full",
            "floor: those passes with the reductions every estimate needs",
            reduced_ratio,
            "×",
            note=f"{best['floor, reduced']:.2f} s on 2 threads (the passes alone on 2: {two_threads_ratio:.3f}): each "
            "group's pair of outputs reduced to its central sums per position and tested for kinks per output "
            "(reduced_floor)" + ("; the target is under this floor" if reduced_ratio > 0.6 else ""),
        ),
        Row(
            "full",
            "its GEMM floor: one forward's matrix product / plain forward",
            best["GEMM"] / best["plain forward"],
            "×",
            note=f"{1e3 * best['GEMM']:.2f} ms: the check's passes cannot cost less than this share",
        ),
    ]
