"""The ``quick`` and ``quick-cpu`` benchmarks: the quick tier (``directional``; ``sampled`` for reference) against
torch ``gradcheck(fast_mode=True)`` by wall time, with the floor of the quick tier's own calls, and the same ratio by
CPU time with one thread each (in a process of its own, ``run.py`` run again)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from harness import HERE, PYTHON, SKIP_TORCH, interleaved, torch_or_none
from rows import SEED_SHAPE, Row, seed_data
from sweep_floor import watching

from convcheck import checker, reference
from convcheck.layer import MatrixConvLayer
from convcheck.spec import Activation, CheckSpec, Method
from convcheck.user.shapes import TO_NCHW


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
#: ``quick-cpu``'s rounds at ``--rounds 1``, which run.py's table takes from here: the re-run of run.py asks for
#: ``rounds`` as a share of them.
CPU_ROUNDS = 8


def bench_quick_cpu(rounds: int) -> list[Row]:
    """``quick``'s ratio by CPU time, both on one thread (BLAS and torch): far less moved by other processes'
    load than wall time on two threads, and a floor for it (torch gains more from the second core)."""
    if any(os.environ.get(key) != value for key, value in ONE_THREAD.items()):  # re-run with one thread each
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "rows.json"
            argv = [PYTHON, str(HERE / "run.py"), "--only", "quick-cpu", "--json", str(out)]
            argv += ["--rounds", str(rounds / CPU_ROUNDS)]
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
    calls, total = _calls_cpu(spec, 3 * rounds)
    return [
        *rows,
        Row("quick-cpu", "torch gradcheck(fast_mode=True), CPU, one thread", 1e3 * best["torch"], "ms"),
        Row("quick-cpu", "directional / torch fast gradcheck, CPU, one thread", ratio, "×", "≤ 2", ratio <= 2),
        Row(
            "quick-cpu",
            "its floor: the layer's calls and the reference alone, CPU, one thread",
            1e3 * calls,
            "ms",
            note=f"of {1e3 * total:.1f} ms in the same check (sweep_floor.watching): the engine's own work "
            f"{1e3 * (total - calls):.1f} ms",
        ),
        Row("quick-cpu", "its floor / torch fast gradcheck, CPU, one thread", calls / best["torch"], "×"),
    ]


def _calls_cpu(spec: CheckSpec, checks: int) -> tuple[float, float]:
    """CPU seconds of the built-in layer's calls and the reference convolutions inside ``spec``'s check, and of the
    whole check: of the fastest of ``checks`` checks (after the timed ones above: the wrappers cost time)."""
    best = (float("inf"), float("inf"))
    with watching(MatrixConvLayer, reference) as watch:
        for _ in range(checks):
            watch.reset()
            start = time.process_time()
            checker.run_check(spec)
            total = time.process_time() - start
            if total < best[1]:
                best = (watch.seconds["layer"] + watch.seconds["reference"], total)
    return best


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
