"""convcheck's benchmarks: one command runs them all and prints each figure next to its target.

    python benchmarks/run.py                  # everything (4-8 minutes on 2 cores)
    python benchmarks/run.py --only backward full --json results.json

This machine's speed drifts up to 2× from minute to minute, and other processes may share its cores. So every
comparison times its candidates *interleaved* (one run of each in turn, repeated) and keeps each candidate's best
run: a ratio then compares runs taken seconds apart, not minutes. The load average before and after is printed; a
figure taken while it was above ~0.5 is suspect.

Benchmarks (each ratio printed next to its target; a row whose baseline is missing says why and is skipped), each
in its own module of ``benchmarks/`` (what they share, the timing above included, is in ``harness.py``):
- ``backward`` (``bench_backward.py``): the built-in layer's backward on the seed layer vs its GEMM floor (the two
  matrix products alone), torch's float64 conv2d backward (when torch is installed) and the seed's loop
  algorithm (``benchmarks/seed_loop.py``).
- ``full`` (``bench_full.py``): ``run_check`` of the seed layer with every entry checked, against its forward
  passes times one plain vectorized im2col forward of the same layer (``plain_forward``, no reuse, timed in the
  same run), and the floor of those passes (``forward_floor``: only their matrix products, bias, ReLU and the
  unfolding of changed inputs), alone and with the two reductions of each pair of outputs every estimate needs
  (``reduced_floor``: its central sums and its kink test).
- ``user`` (``bench_user.py``): the same full check of a user's numpy layer (``examples/im2col_nhwc.py``, run in
  its own process as every user's layer is), against its forward passes times one call of that layer's forward in
  this process; beside it its floor (the same passes alone, split over one process per core:
  ``forwards_on_processes``) and the check on one timeline (``benchmarks/user_timeline.py``: CPU per process, the
  workers' busy share).
- ``quick`` (``bench_quick.py``): the quick tier (``directional``; ``sampled`` for reference) vs torch
  ``gradcheck(fast_mode=True)``, warm, interleaved, best of at least 10; ``quick-cpu`` (the same module) the same
  ratio by CPU time with one thread each, and what the layer's calls and the reference take inside the check
  (``sweep_floor.watching``).
- ``startup`` (``bench_startup.py``): ``python -m convcheck --help`` vs ``python -c "import numpy, typer, rich,
  yaml"`` (subprocesses, from this source tree: nothing needs to be installed).
- ``sweep`` (``bench_sweeps.py``): ``convcheck run --jobs 2`` on a generated sweep of 320 small layers, checks per
  second of this tree against the tree of ``--baseline`` (a git revision, extracted with ``git archive``), same
  run; ``--jobs 1`` too; the CPU time per check of every 3rd of those layers in one process, this tree against
  the baseline; and of that time, what the layer's calls and the reference take (``sweep_floor.py``).
- ``user-sweep`` (``bench_sweeps.py``): the same for 96 small layers of ``examples/im2col_nhwc.py`` (each check in
  its own process), ``--jobs 2``, this tree against ``--baseline``; its floor, the forward calls alone
  (``user_sweep_floor.py``); and the CPU per check of every 5th layer, the check's process and the layer's.
- ``memory`` (``bench_memory.py``): peak resident memory of a process that runs the seed layer's full check.
- ``framework`` (``frameworks.py``, which also runs alone): the seed layer as a torch ``autograd.Function``,
  convcheck's full check vs torch's ``gradcheck``; skipped where torch is not installed.

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
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

# The benchmarks' modules, and the convcheck they import, after the path set-up above.
from bench_backward import bench_backward  # noqa: E402
from bench_full import bench_full  # noqa: E402
from bench_memory import bench_memory  # noqa: E402
from bench_quick import CPU_ROUNDS, bench_quick, bench_quick_cpu  # noqa: E402
from bench_startup import bench_startup  # noqa: E402
from bench_sweeps import bench_sweep, bench_user_sweep  # noqa: E402
from bench_user import bench_user  # noqa: E402
from harness import BASELINE, torch_or_none  # noqa: E402
from rows import Row, print_rows  # noqa: E402


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
    "quick-cpu": (bench_quick_cpu, CPU_ROUNDS),
    "startup": (bench_startup, 10),
    "sweep": (bench_sweep, 2),
    "user-sweep": (bench_user_sweep, 2),
    "memory": (bench_memory, 1),
    # The large layer as a torch autograd.Function: convcheck vs gradcheck (benchmarks/frameworks.py, imported
    # only when it runs); skipped with a reason where torch is not installed.
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
