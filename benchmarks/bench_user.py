"""The ``user`` benchmark: the seed layer's full check of a user's numpy layer (``examples/im2col_nhwc.py``, in its
own process), against its forward passes times one call of that layer's forward in this process; beside it the
requests and CPU of a small check (``_round_trips``), the floor of its passes (``forwards_on_processes``) and the
check on one timeline (``user_timeline.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from harness import HERE, PYTHON, USER_LAYER, interleaved
from rows import SEED_SHAPE, Row

from convcheck import checker, parallel
from convcheck.data import make_data
from convcheck.isolation.child import keep_freed_memory  # the layer process's malloc settings
from convcheck.spec import CheckSpec, ConvShape, Method


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
