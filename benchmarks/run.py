"""convcheck's benchmarks: one command runs them all and prints each figure next to its target.

    python benchmarks/run.py                  # everything (about 3 minutes on 2 cores)
    python benchmarks/run.py --only backward full --json results.json

This machine's speed drifts up to 2× from minute to minute, and other processes may share its cores. So every
comparison times its candidates *interleaved* (one run of each in turn, repeated) and keeps each candidate's best
run: a ratio then compares runs taken seconds apart, not minutes. The load average before and after is printed; a
figure taken while it was above ~0.5 is suspect.

Benchmarks (each ratio printed next to its target; a row whose baseline is missing says why and is skipped):
- ``backward``: the built-in layer's backward on the seed layer vs its GEMM floor (the two matrix products
  alone), torch's float64 conv2d backward (when torch is installed) and the seed's loop algorithm
  (``benchmarks/seed_loop.py``).
- ``full``: ``run_check`` of the seed layer with every entry checked, against its forward passes times one plain
  vectorized im2col forward of the same layer (``plain_forward``, no reuse, timed in the same run), and the floor
  of those passes (``forward_floor``: only their matrix products, bias, ReLU and the unfolding of changed inputs).
- ``user``: the same full check of a user's numpy layer (``examples/im2col_nhwc.py``, run in its own process as
  every user's layer is), against its forward passes times one call of that layer's forward in this process;
  beside it its floor (the same passes alone, split over one process per core: ``forwards_on_processes``) and
  the check on one timeline (``benchmarks/user_timeline.py``: CPU per process, the workers' busy share).
- ``quick``: the quick tier (``directional``; ``sampled`` for reference) vs torch ``gradcheck(fast_mode=True)``,
  warm, interleaved, best of at least 10; ``quick-cpu`` the same ratio by CPU time with one thread each.
- ``startup``: ``python -m convcheck --help`` vs ``python -c "import numpy, typer, rich, yaml"`` (subprocesses,
  from this source tree: nothing needs to be installed).
- ``sweep``: ``convcheck run --jobs 2`` on a generated sweep of 320 small layers, checks per second of this tree
  against the tree of ``--baseline`` (a git revision, extracted with ``git archive``), same run; ``--jobs 1`` too;
  and the CPU time per check of every 4th of those layers in one process, this tree against the baseline.
- ``user-sweep``: the same for 96 small layers of ``examples/im2col_nhwc.py`` (each check in its own process),
  ``--jobs 2``, this tree against ``--baseline``.
- ``memory``: peak resident memory of a process that runs the seed layer's full check.

OpenBLAS: where the environment sets ``OPENBLAS_CORETYPE`` (some container images do), a current numpy runs slower
kernels; for benchmarks, and only for them, run this with both ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE``
unset (``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run.py``). The machine facts printed first
show which kernel ran.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import seed_loop  # noqa: E402 - after the path set-up above
from rows import SEED_SHAPE, Row, print_rows, seed_data  # noqa: E402

from convcheck import checker, numeric, parallel, reference  # noqa: E402
from convcheck.data import make_data  # noqa: E402
from convcheck.isolation.child import keep_freed_memory  # noqa: E402 - the layer process's malloc settings
from convcheck.layer import MatrixConvLayer  # noqa: E402
from convcheck.numeric.audit import AUDIT_ENTRIES  # noqa: E402
from convcheck.numeric.groups import input_groups  # noqa: E402
from convcheck.spec import Activation, CheckSpec, ConvShape, Method  # noqa: E402
from convcheck.user.shapes import TO_NCHW  # noqa: E402

PYTHON = sys.executable
ROOT = HERE.parent
#: The revision the ``sweep`` benchmark compares with by default: main before the speed work on user layers.
BASELINE = "b1caa8f"


def convcheck_command(root: Path) -> tuple[list[str], dict[str, str]]:
    """``python -m convcheck`` run from the source tree at ``root`` (argv prefix and environment).

    ``command_best`` runs it with ``root`` as the working directory too: ``-m`` and ``-c`` put the working
    directory first on ``sys.path``, so run from this checkout a baseline's PYTHONPATH alone would still import
    this checkout's convcheck (which made earlier baseline rows compare this tree with itself)."""
    return [PYTHON, "-m", "convcheck"], {**os.environ, "PYTHONPATH": str(root)}


def compiled(env: dict[str, str], cache: str, *roots: Path) -> dict[str, str]:
    """``env`` for processes that read compiled bytecode, as an installed package's do (pip compiles at install):
    the trees at ``roots`` compiled now into the folder ``cache`` (nothing written into a source tree), whatever
    PYTHONDONTWRITEBYTECODE says. Without it each process of a run would compile every module it imports from
    source, and a tree whose workers import convcheck anew would pay it once per worker."""
    env = {key: value for key, value in env.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = cache
    for root in roots:
        subprocess.run([PYTHON, "-m", "compileall", "-q", str(root / "convcheck")], env=env, check=True)
    return env


# -- timing ----------------------------------------------------------------------------------------------------


def interleaved(
    candidates: dict[str, Callable[[], object]],
    rounds: int,
    every: dict[str, int] | None = None,
    burst: int = 3,
    bursts: dict[str, int] | None = None,
) -> dict:
    """Best wall time (seconds) of each candidate over ``rounds`` rounds, after a warm-up.

    Each round runs every candidate ``burst`` times in a row: the candidates alternate within seconds, while the
    first run of a burst absorbs what the previous candidate left behind (its thread pools still spinning, a cold
    cache). ``every[name] = m`` runs that candidate only every m-th round (slow baselines); ``bursts[name]``
    overrides ``burst`` for one candidate (a fast one beside a slow one).
    """
    every, bursts = every or {}, bursts or {}
    for fn in candidates.values():
        fn()
    best = dict.fromkeys(candidates, float("inf"))
    for index in range(rounds):
        for name, fn in candidates.items():
            if index % every.get(name, 1):
                continue
            for _ in range(bursts.get(name, burst)):
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def command_best(commands: dict[str, tuple[list[str], dict[str, str] | None]], rounds: int) -> dict:
    """Best wall time of each command ``(argv, environment)`` (a subprocess), interleaved; each must exit 0.

    (Not CPU time: ``convcheck run``'s workers die with it rather than being reaped, so the CPU they and the
    checks' processes used never reaches this process's ``RUSAGE_CHILDREN``.)
    """
    best = dict.fromkeys(commands, float("inf"))
    for _ in range(rounds):
        for name, (argv, env) in commands.items():
            start = time.perf_counter()
            where = (env or {}).get("PYTHONPATH")  # the tree on the path is the working directory too
            done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=where)
            elapsed = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}")
            best[name] = min(best[name], elapsed)
    return best


SKIP_TORCH = "skipped: torch is not installed"


def torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


# -- benchmarks ------------------------------------------------------------------------------------------------


def bench_backward(rounds: int) -> list[Row]:
    _, data = seed_data()
    s = SEED_SHAPE
    layer = MatrixConvLayer(s.stride, s.padding, Activation.RELU)
    _, cache = layer.forward(data.x, data.w, data.b)
    dz = data.dout.reshape(-1, s.out_depth)

    def floor():
        return cache.cols.T @ dz, dz @ cache.weights.T

    def loop():
        return seed_loop.backward(
            data.dout, cache.cols, cache.activated, cache.weights, s.x_shape, s.filter_size, s.stride, s.padding
        )

    ours = layer.backward(data.dout, cache)
    theirs = loop()
    agree = all(
        np.allclose(a, np.reshape(b, a.shape), rtol=1e-12, atol=1e-12) for a, b in zip(ours, theirs, strict=True)
    )
    if not agree:
        raise AssertionError("the loop baseline and the built-in backward disagree")

    candidates = {
        "backward": lambda: layer.backward(data.dout, cache),
        "floor": floor,
        "loop": loop,
        "forward": lambda: layer.forward(data.x, data.w, data.b),
    }
    torch = torch_or_none()
    if torch is not None:
        candidates["torch"] = _torch_backward(torch, data)
    best = interleaved(candidates, rounds, every={"loop": max(1, rounds // 5)})
    ms = {name: 1e3 * t for name, t in best.items()}
    rows = [
        Row("backward", "built-in backward", ms["backward"], "ms", note="seed layer, float64, relu"),
        Row("backward", "GEMM floor (Mᵀ·dZ and dZ·Wᵀ)", ms["floor"], "ms"),
        Row("backward", "built-in forward", ms["forward"], "ms"),
        Row("backward", "seed loop baseline", ms["loop"], "ms", note="benchmarks/seed_loop.py"),
        Row(
            "backward",
            "backward / GEMM floor",
            ms["backward"] / ms["floor"],
            "×",
            "≤ 1.4 (when torch is absent)",
            ms["backward"] / ms["floor"] <= 1.4,
        ),
        Row(
            "backward",
            "loop baseline / backward",
            ms["loop"] / ms["backward"],
            "×",
            "≥ 8",
            ms["loop"] / ms["backward"] >= 8,
        ),
    ]
    if "torch" in ms:
        ratio = ms["backward"] / ms["torch"]
        rows.insert(2, Row("backward", f"torch {torch.__version__} conv2d+relu backward", ms["torch"], "ms"))
        rows.append(Row("backward", "backward / torch", ratio, "×", "≤ 1.25", ratio <= 1.25))
    else:
        rows.append(Row("backward", "backward / torch", float("nan"), "×", "≤ 1.25", None, SKIP_TORCH))
    return rows


def _torch_backward(torch, data) -> Callable[[], object]:
    """torch's float64 CPU backward of relu(conv2d(x, w, b)) at the same data: threshold and convolution backward."""
    x = torch.from_numpy(np.ascontiguousarray(data.x.transpose(TO_NCHW["x"])))
    w = torch.from_numpy(np.ascontiguousarray(data.w.transpose(TO_NCHW["w"])))
    b = torch.from_numpy(data.b)
    s = SEED_SHAPE
    out = torch.relu(torch.nn.functional.conv2d(x, w, b, s.stride, s.padding))
    g = torch.from_numpy(np.ascontiguousarray(data.dout.transpose(TO_NCHW["out"])))
    ops = torch.ops.aten

    def run():
        gz = ops.threshold_backward(g, out, 0)
        return ops.convolution_backward(
            gz, x, w, [s.out_depth], [s.stride] * 2, [s.padding] * 2, [1, 1], False, [0, 0], 1, [True, True, True]
        )

    return run


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


def forward_floor(data, shape: ConvShape, input_passes: int, other_passes: int, workers: int) -> Callable[[], object]:
    """The honest floor of a full check's forward passes: ``input_passes`` passes that unfold a changed input
    (copy it into a padded buffer, one strided copy of its windows into the im2col matrix) and ``other_passes``
    that reuse the matrix, each then one matrix product, the bias and the ReLU in place, every buffer allocated
    once; on ``workers`` threads with one BLAS thread each (``parallel.ordered_map``), or on this thread with BLAS
    on every core (``workers`` 1). Nothing a check does besides its passes (reductions, the checker) is in it."""
    n, h, w, c = shape.x_shape
    k, s, p = shape.filter_size, shape.stride, shape.padding
    oh, ow = shape.out_height, shape.out_width
    weights, bias = data.w.reshape(-1, shape.out_depth), data.b

    def buffers() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        padded = np.zeros((n, h + 2 * p, w + 2 * p, c))
        sn, sh, sw, sc = padded.strides
        windows = np.lib.stride_tricks.as_strided(
            padded, (n, oh, ow, k, k, c), (sn, sh * s, sw * s, sh, sw, sc), writeable=False
        )
        return padded, windows, np.empty((n * oh * ow, k * k * c))

    def one_pass(unfolds: bool, state: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        padded, windows, cols = state
        if unfolds:  # the input changed: copy it in and unfold it again (into the same matrix)
            np.copyto(padded[:, p : p + h, p : p + w], data.x)
            np.copyto(cols.reshape(windows.shape), windows)
        z = cols @ weights
        z += bias
        np.maximum(z, 0, out=z)

    plan = [True] * input_passes + [False] * other_passes
    if workers == 1:
        state = buffers()
        one_pass(True, state)
        return lambda: [one_pass(unfolds, state) for unfolds in plan]
    return lambda: list(parallel.ordered_map(one_pass, plan, workers=workers, local=buffers))


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
    floors: dict[int, Callable[[], object]] = {}

    def floor(workers: int) -> Callable[[], object]:
        def run() -> object:  # built at its first call, once the check has said how many passes it made
            if workers not in floors:
                other = results["shipped"].forward_passes - input_passes
                floors[workers] = forward_floor(data, s, input_passes, other, workers)
            return floors[workers]()

        return run

    candidates["floor, 2 threads"] = floor(2)
    candidates["floor, 1 thread"] = floor(1)
    best = interleaved(candidates, rounds, burst=1, bursts={"plain forward": 20, "GEMM": 20})
    passes = results["shipped"].forward_passes
    floor_best = min(best["floor, 2 threads"], best["floor, 1 thread"])
    floor_ratio = floor_best / (passes * best["plain forward"])
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
            "its GEMM floor: one forward's matrix product / plain forward",
            best["GEMM"] / best["plain forward"],
            "×",
            note=f"{1e3 * best['GEMM']:.2f} ms: the check's passes cannot cost less than this share",
        ),
    ]


USER_LAYER = ROOT / "examples" / "im2col_nhwc.py"


def bench_user(rounds: int) -> list[Row]:
    from convcheck.isolation.check import isolated_check
    from convcheck.spec import ImplRef

    spec = CheckSpec("seed-user", SEED_SHAPE, method=Method.FULL, impl=ImplRef(str(USER_LAYER)))
    data = make_data(spec)
    sys.path.insert(0, str(USER_LAYER.parent))
    import im2col_nhwc  # the same file the check loads in its own process

    results = {}

    def check():
        results["check"] = isolated_check(spec)

    def forward():
        return im2col_nhwc.forward(data.x.copy(), data.w.copy(), data.b.copy(), 1, 1)

    check()  # the passes the floor runs (as many as the check makes)
    passes = results["check"].forward_passes
    arrays = (data.x, data.w, data.b)
    cores = parallel.available_cores()
    candidates = {
        "check": check,
        "forward": forward,
        "floor": lambda: forwards_on_processes(im2col_nhwc.forward, arrays, passes, cores),
    }
    best = interleaved(candidates, rounds, burst=1, bursts={"forward": 10})
    result = results["check"]
    per_pass = result.forward_passes * best["forward"]
    ratio = best["check"] / per_pass
    floor = best["floor"] / per_pass
    return [
        *_round_trips(max(3, rounds)),
        Row("user", "full check, examples/im2col_nhwc.py, seed geometry", best["check"], "s", note=result.status.value),
        Row("user", "one forward of that layer (this process)", 1e3 * best["forward"], "ms"),
        Row("user", "forward passes used", result.forward_passes, ""),
        Row("user", "full check / (passes × one forward)", ratio, "×", "≤ 0.65", ratio <= 0.65),
        Row(
            "user",
            f"its floor: the passes alone on {cores} processes / (passes × one forward)",
            floor,
            "×",
            note=f"{best['floor']:.2f} s: {passes} forwards split over {cores} processes, one BLAS thread each",
        ),
        *_timeline(),
    ]


def _timeline() -> list[Row]:
    """The same check on one timeline (``benchmarks/user_timeline.py``, in a process of its own): CPU seconds of
    each process and how much of the batches' time the workers computed and this side reduced at once."""
    done = subprocess.run([PYTHON, str(HERE / "user_timeline.py"), "--json"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"user_timeline.py exited {done.returncode}: {done.stderr[-2000:]}")
    found = json.loads(done.stdout)
    cpu, shares = found["cpu_s"], found["busy_share_of_batches_span"]
    workers = sum(v for k, v in cpu.items() if k.startswith("worker "))
    return [
        Row(
            "user",
            "timeline: CPU, the check's process / layer's / its workers",
            cpu["this process"],
            "s",
            note=f"{cpu['layer process (its own)']:.2f} s / {workers:.2f} s; of the first, reductions "
            f"{cpu['reductions (this process)']:.2f} s; {found['wall_s']:.2f} s wall, of which "
            f"{found['before_first_batch_s']:.2f} s before the first batch, {found['after_last_batch_s']:.2f} s after",
        ),
        Row(
            "user",
            "timeline: both workers computing, share of the batches' time",
            100 * shares["both workers computing"],
            "%",
            note=f"some worker {100 * shares['some worker computing']:.0f} %; reducing "
            f"{100 * shares['reducing']:.0f} %, {100 * shares['reducing while a worker computes']:.0f} % while a "
            "worker computes",
        ),
    ]


def forwards_on_processes(forward: Callable[..., Any], arrays: tuple[np.ndarray, ...], passes: int, cores: int) -> None:
    """``passes`` calls of ``forward(x, w, b, 1, 1)`` split over ``cores`` processes forked for it, as a check's
    pool of workers makes them (``numeric.fanout``: worker j makes calls j, j + cores, …, on fresh copies of the
    arrays, with one BLAS thread and the layer process's malloc settings) and nothing else: no request, no
    reduction, no copy back. The wall time of this is what the check's forward passes cannot go below."""
    pids = []
    for j in range(cores):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - in the forked process
            code = 1
            try:
                keep_freed_memory()
                with parallel.limited_blas(1):
                    kept = None  # where each output is written, as into a worker's slot
                    for _ in range(j, passes, cores):
                        out = forward(*(a.copy() for a in arrays), 1, 1)[0]
                        kept = np.empty_like(out) if kept is None else kept
                        kept[...] = out
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise RuntimeError(f"a floor process ended with status {status}")


def _round_trips(rounds: int) -> list[Row]:
    """A small user layer's check with its forward calls by batches and one at a time: requests to the layer's
    process and CPU seconds of both processes (this one's and the layer's own, which it reports), best of
    ``rounds``: CPU time, unlike wall time, does not depend on what else the machine runs."""
    from convcheck.isolation import remote
    from convcheck.spec import ImplRef

    spec = CheckSpec(
        "small-user", ConvShape(2, 12, 16, 4, 6, 3, 1, 1), method=Method.FULL, impl=ImplRef(str(USER_LAYER))
    )
    batched = remote.RemoteLayer.forward_many
    best: dict[bool, tuple[int, float]] = {}
    for _ in range(rounds):
        for batches in (False, True):
            if not batches:
                del remote.RemoteLayer.forward_many  # the engine then calls forward one point at a time
            try:
                with remote.remote_layer(spec, None) as layer:
                    start = time.process_time()
                    checker.run_check(spec, layer=layer)
                    cpu = time.process_time() - start + layer.child_seconds()
                    assert layer.session is not None
                    requests = layer.session.channel.sent
            finally:
                remote.RemoteLayer.forward_many = batched
            if batches not in best or cpu < best[batches][1]:
                best[batches] = (requests, cpu)
    (one_requests, one_cpu), (many_requests, many_cpu) = best[False], best[True]
    return [
        Row("user", "small user layer: requests, one call at a time", one_requests, ""),
        Row("user", "small user layer: requests, by batches", many_requests, ""),
        Row(
            "user",
            "small user layer: CPU, one at a time / by batches",
            one_cpu / many_cpu,
            "×",
            note=f"{1e3 * one_cpu:.0f} ms / {1e3 * many_cpu:.0f} ms, both processes",
        ),
    ]


def bench_quick(rounds: int) -> list[Row]:
    s = SEED_SHAPE
    directional = CheckSpec("seed-directional", s, method=Method.DIRECTIONAL)
    sampled = CheckSpec("seed-sampled", s, method=Method.SAMPLED)
    _, data = seed_data()
    layer = MatrixConvLayer(s.stride, s.padding, Activation.RELU)
    _, cache = layer.forward(data.x, data.w, data.b)
    results = {}

    def quick():
        results["directional"] = checker.run_check(directional)

    candidates = {
        "directional": quick,
        "sampled": lambda: checker.run_check(sampled),
        # the quick tier's own calls, to price its floor
        "forward": lambda: layer.forward(data.x.copy(), data.w, data.b),
        "backward": lambda: layer.backward(data.dout, cache),
        "reference": lambda: reference.forward(data.x, data.w, data.b, s.window, Activation.RELU),
    }
    torch = torch_or_none()
    if torch is not None:
        candidates["torch"] = _torch_gradcheck(torch)
    # torch needs several calls to warm up (about 500 ms cold, 40 ms warm): a burst of 4 keeps its warm runs.
    best = interleaved(candidates, rounds, every={"sampled": max(1, rounds // 2)}, burst=4)
    ms = {name: 1e3 * t for name, t in best.items()}
    rows = [Row("quick", f"run_check, method {name}", ms[name], "ms") for name in ("directional", "sampled")]
    # Its forward calls (the engine's passes but the contract's one it reuses, 2 in the contract, 2 of the linear
    # layer for the projections' rounding bounds), 3 backwards (the contract's) and 2 reference convolutions.
    calls = results["directional"].forward_passes - 1 + 2 + 2
    floor = calls * ms["forward"] + 3 * ms["backward"] + 2 * ms["reference"]
    rows.append(Row("quick", f"its floor: {calls} forwards, 3 backwards, 2 reference convolutions", floor, "ms"))
    if "torch" in ms:
        rows.append(Row("quick", f"torch {torch.__version__} gradcheck(fast_mode=True)", ms["torch"], "ms"))
        ratio = ms["directional"] / ms["torch"]
        rows.append(Row("quick", "directional / torch fast gradcheck", ratio, "×", "≤ 2", ratio <= 2))
        rows.append(Row("quick", "its floor / torch fast gradcheck", floor / ms["torch"], "×"))
    else:
        rows.append(Row("quick", "directional / torch fast gradcheck", float("nan"), "×", "≤ 2", None, SKIP_TORCH))
    return rows


ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def bench_quick_cpu(rounds: int) -> list[Row]:
    """``quick``'s ratio by CPU time, both on one thread (BLAS and torch): far less moved by other processes'
    load than wall time on two threads, and a floor for it (torch gains more from the second core)."""
    if any(os.environ.get(key) != value for key, value in ONE_THREAD.items()):  # re-run with one thread each
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "rows.json"
            argv = [PYTHON, str(Path(__file__).resolve()), "--only", "quick-cpu", "--json", str(out)]
            argv += ["--rounds", str(rounds / BENCHMARKS["quick-cpu"][1])]
            subprocess.run(argv, check=True, capture_output=True, env={**os.environ, **ONE_THREAD})
            return [Row(**row) for row in json.loads(out.read_text())["rows"]]
    spec = CheckSpec("seed-directional", SEED_SHAPE, method=Method.DIRECTIONAL)
    candidates: dict[str, Callable[[], object]] = {"directional": lambda: checker.run_check(spec)}
    torch = torch_or_none()
    if torch is not None:
        candidates["torch"] = _torch_gradcheck(torch)
    for fn in candidates.values():
        for _ in range(4):  # torch warms up over several calls
            fn()
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(rounds):
        for name, fn in candidates.items():
            for _ in range(3):
                start = time.process_time()
                fn()
                best[name] = min(best[name], time.process_time() - start)
    rows = [Row("quick-cpu", "run_check, method directional, CPU, one thread", 1e3 * best["directional"], "ms")]
    if torch is None:
        return [*rows, Row("quick-cpu", "directional / torch, CPU", float("nan"), "×", "≤ 2", None, SKIP_TORCH)]
    ratio = best["directional"] / best["torch"]
    return [
        *rows,
        Row("quick-cpu", "torch gradcheck(fast_mode=True), CPU, one thread", 1e3 * best["torch"], "ms"),
        Row("quick-cpu", "directional / torch fast gradcheck, CPU, one thread", ratio, "×", "≤ 2", ratio <= 2),
    ]


def _torch_gradcheck(torch) -> Callable[[], object]:
    _, data = seed_data()
    s = SEED_SHAPE
    x = torch.from_numpy(np.ascontiguousarray(data.x.transpose(TO_NCHW["x"]))).requires_grad_()
    w = torch.from_numpy(np.ascontiguousarray(data.w.transpose(TO_NCHW["w"]))).requires_grad_()
    b = torch.from_numpy(data.b.copy()).requires_grad_()

    def layer(x, w, b):
        return torch.relu(torch.nn.functional.conv2d(x, w, b, s.stride, s.padding))

    def run():
        return torch.autograd.gradcheck(layer, (x, w, b), fast_mode=True, raise_exception=False)

    return run


def bench_startup(rounds: int) -> list[Row]:
    # Both commands read compiled bytecode, as from an installed package: a fresh cache folder (nothing is
    # written into the source tree), filled by one untimed run of each, whatever PYTHONDONTWRITEBYTECODE says.
    with tempfile.TemporaryDirectory() as cache:
        prefix, env = convcheck_command(ROOT)
        env = compiled(env, cache)
        tiny = Path(cache) / "tiny.yaml"
        tiny.write_text(TINY_CONFIG)
        commands = {
            "convcheck --help": ([*prefix, "--help"], env),
            "convcheck run tiny": ([*prefix, "run", str(tiny), "--quiet"], env),
            "import numpy, typer, rich, yaml": ([PYTHON, "-c", "import numpy, typer, rich, yaml"], env),
            # The floor of any Typer command line's --help: the interpreter and Typer (with the click it
            # bundles and the standard library they pull in), nothing of convcheck's.
            "import typer": ([PYTHON, "-c", "import typer"], env),
        }
        command_best(commands, 1)
        best = command_best(commands, rounds)
        share = _help_share(env, rounds)
        probe = subprocess.run(
            [PYTHON, "-c", "import sys, convcheck, convcheck.cli; print(int('numpy' in sys.modules))"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
    numpy_loaded = probe.stdout.strip() == "1"
    ratio = best["convcheck --help"] / best["import numpy, typer, rich, yaml"]
    return [
        Row("startup", "python -m convcheck --help", 1e3 * best["convcheck --help"], "ms"),
        Row(
            "startup",
            "python -c 'import numpy, typer, rich, yaml'",
            1e3 * best["import numpy, typer, rich, yaml"],
            "ms",
        ),
        Row("startup", "--help / import line", ratio, "×", "≤ 0.5", ratio <= 0.5),
        Row(
            "startup",
            "convcheck run, one 1×4×4×1 layer",
            1e3 * best["convcheck run tiny"],
            "ms",
            note="a whole command: parsing (Typer), the config, numpy, one check, the table",
        ),
        Row(
            "startup",
            "floor: python -c 'import typer' / import line",
            best["import typer"] / best["import numpy, typer, rich, yaml"],
            "×",
            note=f"{1e3 * best['import typer']:.1f} ms: a Typer command line's --help cannot cost less",
        ),
        Row(
            "startup",
            "convcheck's own share of --help, in one process",
            1e3 * share,
            "ms",
            note="importing convcheck.cli once Typer is imported, and writing the help; best of the rounds",
        ),
        Row(
            "startup",
            "numpy imported by `import convcheck, convcheck.cli`",
            float(numpy_loaded),
            "bool",
            "0 (import numpy only when a check runs)",
            not numpy_loaded,
        ),
    ]


HELP_SHARE = """
import contextlib, io, sys, time
import typer
start = time.perf_counter()
import convcheck.cli
sys.argv = ["convcheck", "--help"]
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    convcheck.cli.entry()
print(time.perf_counter() - start)
"""


def _help_share(env: dict[str, str], rounds: int) -> float:
    """What convcheck adds to ``--help`` beyond Python and Typer: its own imports and the help's writing, timed in
    one process after ``import typer`` (best of ``rounds`` fresh processes)."""
    best = float("inf")
    for _ in range(rounds):
        done = subprocess.run(
            [PYTHON, "-c", HELP_SHARE], capture_output=True, text=True, env=env, cwd=env["PYTHONPATH"], check=True
        )
        best = min(best, float(done.stdout.split()[-1]))
    return best


TINY_CONFIG = """\
# The smallest check there is (generated by benchmarks/run.py): what `convcheck run` costs besides the checking.
checks:
  - name: tiny
    batch: 1
    in_height: 4
    in_width: 4
    in_depth: 1
    out_depth: 1
    filter_size: 1
"""

SWEEP_CONFIG = """\
# 320 small layers for the --jobs benchmark (generated by benchmarks/run.py): every entry of each checked.
defaults:
  method: full
  seed: 0
checks:
  - name: sweep
    batch: [2, 4]
    in_height: [12, 16]
    in_width: 16
    in_depth: [4, 6]
    out_depth: [6, 8]
    filter_size: [1, 2, 3, 4, 5]
    stride: [1, 2]
    padding: 1
    activation: [relu, tanh]
"""


def bench_sweep(rounds: int, baseline: str = BASELINE) -> list[Row]:
    return _sweep("sweep", SWEEP_CONFIG, rounds, baseline, jobs=(1, 2)) + _sweep_cpu(rounds, baseline)


CHECK_CPU_PROBE = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, {root!r})
    from convcheck.checker import run_check
    from convcheck.config import load_file
    specs = load_file({config!r}).specs[::{step}]
    for spec in specs[:4]:
        run_check(spec)
    start = time.process_time()
    for spec in specs:
        run_check(spec)
    print(json.dumps([(time.process_time() - start) / len(specs), len(specs)]))
    """
)


def _sweep_cpu(rounds: int, baseline: str, step: int = 3) -> list[Row]:
    """CPU seconds per check of every ``step``-th layer of the sweep, run one after another in one process with
    one BLAS thread (what each ``--jobs`` worker spends per check), this tree against ``baseline``, interleaved,
    best of ``rounds``. ``step`` is prime to the 20 filter size × activation × stride triples that vary fastest,
    so that each is sampled about equally (every 5th layer never had filter size 5, the dearest: it measured
    11.0 ms per check where all 320 take 17.6 ms). Unlike wall time, it hardly moves with the other processes
    on the machine."""
    try:
        best, count, why = _cpu_probes(SWEEP_CONFIG, CHECK_CPU_PROBE, rounds, baseline, step)
    except RuntimeError as exc:
        return [Row("sweep", "CPU per check", float("nan"), "ms", note=str(exc))]
    mine = sum(best["this tree"])
    rows = [Row("sweep", f"CPU per check, {count} of the layers in one process", 1e3 * mine, "ms")]
    if baseline not in best:
        return [*rows, Row("sweep", "CPU per check, baseline / this tree", float("nan"), "×", "", None, why)]
    gain = sum(best[baseline]) / mine
    return [
        *rows,
        Row("sweep", f"the same at {baseline} (baseline)", 1e3 * sum(best[baseline]), "ms"),
        Row(
            "sweep",
            f"CPU per check, {baseline} / this tree",
            gain,
            "×",
            note="the share of --jobs 2's wall spent in checks shrinks by this",
        ),
    ]


def _cpu_probes(
    text: str, probe: str, rounds: int, baseline: str, step: int
) -> tuple[dict[str, list[float]], int, str]:
    """``probe`` (a script; it prints ``[CPU seconds per check, ..., checks]`` for every ``step``-th check of the
    sweep ``text``) run in this tree and in the tree at ``baseline``, in fresh processes with one BLAS thread,
    interleaved, ``rounds`` times (at least 2): each tree's best round (least CPU in all), the number of checks,
    and why the baseline is missing (its tree is then absent from the first).

    Raises:
        RuntimeError: a probe failed (the end of what it wrote on stderr).
    """
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "sweep.yaml"
        config.write_text(text)
        before, why = _extract(baseline, Path(folder) / "baseline")
        trees = {"this tree": ROOT, **({} if before is None else {baseline: before})}
        best = {name: [float("inf")] for name in trees}
        count = 0
        env = {**os.environ, **dict.fromkeys(parallel.BLAS_THREAD_VARIABLES, "1")}
        env = compiled(env, str(Path(folder) / "bytecode"), *trees.values())
        for _ in range(max(2, rounds)):
            for name, tree in trees.items():
                script = probe.format(root=str(tree), config=str(config), step=step)
                done = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, env=env, cwd=tree)
                if done.returncode != 0:
                    raise RuntimeError(done.stderr[-200:])
                *seconds, count = json.loads(done.stdout.strip().splitlines()[-1])
                if sum(seconds) < sum(best[name]):
                    best[name] = seconds
    return best, count, why


USER_SWEEP_CONFIG = """\
# 96 small layers of a user's numpy layer, each in its own process (generated by benchmarks/run.py).
defaults:
  method: full
  seed: 0
  impl: {impl}
checks:
  - name: user-sweep
    batch: [2, 4]
    in_height: [12, 16]
    in_width: 16
    in_depth: [4, 6]
    out_depth: [6, 8]
    filter_size: [1, 3, 5]
    stride: [1, 2]
    padding: 1
"""


def bench_user_sweep(rounds: int, baseline: str = BASELINE) -> list[Row]:
    text = USER_SWEEP_CONFIG.format(impl=USER_LAYER)
    return _sweep("user-sweep", text, rounds, baseline, jobs=(2,), floor=True) + _user_sweep_cpu(text, rounds, baseline)


USER_CPU_PROBE = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, {root!r})
    from convcheck.isolation import session
    layer_cpu = []
    close = session.Session.close

    def close_after_asking(self):  # the layer's process reports its CPU seconds when asked (one request)
        layer_cpu.append(self.child_cpu())
        return close(self)

    session.Session.close = close_after_asking
    from convcheck.isolation.check import isolated_check
    from convcheck.config import load_file
    specs = load_file({config!r}).specs[::{step}]
    for spec in specs[:2]:
        isolated_check(spec)
    layer_cpu.clear()
    start = time.process_time()
    for spec in specs:
        isolated_check(spec)
    print(json.dumps([(time.process_time() - start) / len(specs), sum(layer_cpu) / len(specs), len(specs)]))
    """
)


def _user_sweep_cpu(text: str, rounds: int, baseline: str, step: int = 5) -> list[Row]:
    """CPU seconds per check of every ``step``-th layer of the user sweep, each check isolated as ``--jobs``
    workers run them, one after another with one BLAS thread: the check's process and the layer's (which it
    reports), this tree against ``baseline``, interleaved, best of ``rounds``. ``step`` is prime to the 6 filter
    size × stride pairs that vary fastest (every 3rd layer never has filter size 5 and costs half as much)."""
    try:
        best, count, why = _cpu_probes(text, USER_CPU_PROBE, rounds, baseline, step)
    except RuntimeError as exc:
        return [Row("user-sweep", "CPU per check", float("nan"), "ms", note=str(exc))]
    label = f"CPU per check, {count} of the layers one at a time"
    rows = [Row("user-sweep", label, 1e3 * sum(best["this tree"]), "ms", note=_split(best["this tree"]))]
    if baseline not in best:
        return [*rows, Row("user-sweep", "CPU per check, baseline / this tree", float("nan"), "×", "", None, why)]
    gain = sum(best[baseline]) / sum(best["this tree"])
    return [
        *rows,
        Row(
            "user-sweep",
            f"the same at {baseline} (baseline)",
            1e3 * sum(best[baseline]),
            "ms",
            note=_split(best[baseline]),
        ),
        Row("user-sweep", f"CPU per check, {baseline} / this tree", gain, "×"),
    ]


def _split(cpu: list[float]) -> str:
    return f"the check's process {1e3 * cpu[0]:.1f} ms, the layer's {1e3 * cpu[1]:.1f} ms"


def _sweep(name: str, text: str, rounds: int, baseline: str, jobs: tuple[int, ...], floor: bool = False) -> list[Row]:
    """``convcheck run`` of a generated sweep with this tree (``--jobs`` each of ``jobs``) and with the tree at
    ``baseline`` (``--jobs 2``), interleaved: wall and CPU seconds. ``floor``: a user's layer's sweep, also timed
    as its forward calls alone (``user_sweep_floor.py``, the passes of a first run of this tree)."""
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / f"{name}.yaml"
        config.write_text(text)
        count = _count_checks(config)
        before, why = _extract(baseline, Path(folder) / "baseline")
        cache = str(Path(folder) / "bytecode")
        compiled(dict(os.environ), cache, ROOT, *([] if before is None else [before]))
        commands = {}
        for n in jobs:
            prefix, env = convcheck_command(ROOT)
            env = compiled(env, cache)
            commands[f"--jobs {n}"] = ([*prefix, "run", str(config), "--jobs", str(n), "--quiet"], env)
        if floor:
            report = Path(folder) / "passes.json"
            argv, env = commands["--jobs 2"]
            subprocess.run([*argv, "--json", str(report)], capture_output=True, env=env, cwd=ROOT, check=True)
            commands["floor"] = ([PYTHON, str(HERE / "user_sweep_floor.py"), str(config), str(report)], env)
        if before is not None:
            prefix, env = convcheck_command(before)
            env = compiled(env, cache)
            commands["baseline --jobs 2"] = ([*prefix, "run", str(config), "--jobs", "2", "--quiet"], env)
        try:
            best = command_best(commands, rounds)
        except RuntimeError as exc:
            return [Row(name, "convcheck run --jobs", float("nan"), "s", "", None, str(exc)[:200])]
    rows = [
        Row(name, f"convcheck run, {count} layers, --jobs {n}", best[f"--jobs {n}"], "s", note=_rate(count, best, n))
        for n in jobs
    ]
    if 1 in jobs:
        speedup = best["--jobs 1"] / best["--jobs 2"]
        rows.append(Row(name, "--jobs 1 / --jobs 2", speedup, "×", "≥ 1.6", speedup >= 1.6))
    if before is None:
        rows.append(Row(name, "checks per second, --jobs 2, vs baseline", float("nan"), "×", "≥ 2", None, why))
        return rows
    gain = best["baseline --jobs 2"] / best["--jobs 2"]
    rows.insert(len(jobs), Row(name, f"the same at {baseline} (baseline), --jobs 2", best["baseline --jobs 2"], "s"))
    rows.append(Row(name, f"checks per second, --jobs 2, vs {baseline}", gain, "×", "≥ 2", gain >= 2))
    if floor:
        most = best["baseline --jobs 2"] / best["floor"]
        rows += [
            Row(name, "its floor: the forward calls alone (user_sweep_floor.py)", best["floor"], "s"),
            Row(name, f"{baseline} / the floor: the most an engine could gain", most, "×"),
        ]
    return rows


def _rate(count: int, best: dict, jobs: int) -> str:
    return f"{count / best[f'--jobs {jobs}']:.0f} checks/s"


def _extract(revision: str, folder: Path) -> tuple[Path | None, str]:
    """This repository's tree at ``revision`` in ``folder`` (``git archive``), or None and why not."""
    folder.mkdir()
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", revision], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"skipped: no tree at {revision} ({exc})"
    return folder, ""


def _count_checks(config: Path) -> int:
    from convcheck.config import load_file

    loaded = load_file(config)
    if loaded.errors:
        raise ValueError(f"the generated sweep is invalid: {loaded.errors[0]}")
    return len(loaded.specs)


MEMORY_PROBE = textwrap.dedent(
    """
    import json, sys, tracemalloc
    sys.path.insert(0, {root!r})

    def high_water_kib():  # this process's peak RSS (VmHWM; unlike ru_maxrss, not inherited from the parent)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    from convcheck import checker, parallel
    from convcheck.spec import CheckSpec, ConvShape, Method
    if {workers} is not None:
        parallel.engine_workers = lambda layer, shape: {workers}
    shape = ConvShape(8, 32, 48, 16, 32, 3, 1, 1)
    before = high_water_kib()
    if {traced}:
        tracemalloc.start()
    result = checker.run_check(CheckSpec("seed-layer", shape, method=Method.FULL))
    traced = tracemalloc.get_traced_memory()[1] if {traced} else 0
    peak = high_water_kib()
    print(json.dumps({{"before_kib": before, "peak_kib": peak, "traced_bytes": traced, "status": result.status.value}}))
    """
)


def bench_memory(_rounds: int) -> list[Row]:
    figures = {}
    for label, traced, workers in (("plain", False, None), ("traced", True, None), ("one thread", False, 1)):
        probe = MEMORY_PROBE.format(root=str(HERE.parent), traced=traced, workers=workers)
        done = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, check=True)
        figures[label] = json.loads(done.stdout.strip().splitlines()[-1])
    peak_mb = figures["plain"]["peak_kib"] / 1024
    peak1_mb = figures["one thread"]["peak_kib"] / 1024
    return [
        Row("memory", "peak RSS, seed full check", peak_mb, "MB", "≤ 250", peak_mb <= 250, "VmHWM"),
        Row("memory", "peak RSS, seed full check, Engine(workers=1)", peak1_mb, "MB"),
        Row("memory", "RSS after imports, before the check", figures["plain"]["before_kib"] / 1024, "MB"),
        Row(
            "memory", "peak of numpy/Python allocations (tracemalloc)", figures["traced"]["traced_bytes"] / 2**20, "MB"
        ),
    ]


def bench_framework(rounds: int) -> list[Row]:
    """``benchmarks/frameworks.py``'s figures, or one row saying why there are none."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return [Row("framework", "skipped: torch is not installed (pip install 'convcheck[torch]')", 0.0, "")]
    frameworks: Any = importlib.import_module("frameworks")
    return list(frameworks.bench_framework(rounds))


BENCHMARKS = {
    "backward": (bench_backward, 50),
    "full": (bench_full, 3),
    "user": (bench_user, 2),
    "quick": (bench_quick, 10),
    "quick-cpu": (bench_quick_cpu, 8),
    "startup": (bench_startup, 10),
    "sweep": (bench_sweep, 2),
    "user-sweep": (bench_user_sweep, 2),
    "memory": (bench_memory, 1),
    # The large layer as a torch autograd.Function: convcheck vs gradcheck (benchmarks/frameworks.py, which
    # imports this module, hence imported when run); skipped with a reason where torch is not installed.
    "framework": (bench_framework, 1),
}


# -- reporting -------------------------------------------------------------------------------------------------


def machine_facts() -> dict[str, str]:
    facts = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cores": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE", "(unset)"),
    }
    try:
        from threadpoolctl import threadpool_info

        blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        facts["blas"] = "; ".join(
            f"{i['internal_api']} {i.get('version')} {i.get('architecture')} kernel, {i['num_threads']} threads"
            for i in blas
        )
    except ImportError:
        facts["blas"] = "(threadpoolctl not installed)"
    torch = torch_or_none()
    facts["torch"] = torch.__version__ if torch is not None else "(not installed)"
    return facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--rounds", type=float, default=1.0, help="scale every benchmark's rounds (e.g. 0.5)")
    parser.add_argument("--json", type=Path, help="also write the figures and machine facts as JSON")
    parser.add_argument("--baseline", default=BASELINE, help=f"git revision the sweep compares with ({BASELINE})")
    args = parser.parse_args(argv)

    facts = machine_facts()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    load_before = os.getloadavg()[0]
    print(f"load average before: {load_before:.2f}")
    rows: list[Row] = []
    for name in args.only or BENCHMARKS:
        fn, rounds = BENCHMARKS[name]
        start = time.perf_counter()
        scaled = max(1, round(rounds * args.rounds))
        found = fn(scaled, args.baseline) if name in ("sweep", "user-sweep") else fn(scaled)
        print(f"{name} ({time.perf_counter() - start:.0f} s)")
        print_rows(found)
        rows.extend(found)
    load_after = os.getloadavg()[0]
    print(f"load average after: {load_after:.2f}")
    if args.json:
        payload = {
            "machine": facts,
            "load_average": [load_before, load_after],
            "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "rows": [asdict(r) for r in rows],
        }
        args.json.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
