"""The built-in layer's check with glibc's default ``malloc`` and with freed memory kept (as a user layer's has it).

A process that runs a numpy layer's calls for convcheck keeps what it frees (``isolation.child``, ``mallopt``):
arrays up to 32 MiB come from the heap and are reused, instead of being mapped afresh, and faulted in page by
page, at each call. The built-in layer's checks run in convcheck's own process (or its ``--jobs`` workers) with
glibc's default. This times the seed layer's check both ways, each way in its own fresh processes (the setting
is made once per process, before numpy allocates), alternating, and prints per check the best and median wall
time, the CPU time (user and system) and the minor page faults. The estimates do not depend on it.

    python benchmarks/malloc_faults.py [--method directional|full] [--processes 4] [--checks 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = textwrap.dedent(
    """
    import json, resource, sys, time
    sys.path.insert(0, {benchmarks!r})
    sys.path.insert(0, {root!r})
    if {keep!r}:
        from convcheck.isolation.child import keep_freed_memory
        keep_freed_memory()
    from rows import SEED_SHAPE
    from convcheck.checker import run_check
    from convcheck.spec import CheckSpec, Method
    spec = CheckSpec("seed", SEED_SHAPE, method=Method({method!r}))
    for _ in range(2):  # warm: imports, buffers, the first products
        run_check(spec)
    walls = []
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range({checks}):
        start = time.perf_counter()
        run_check(spec)
        walls.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({{
        "walls": walls,
        "user": (after.ru_utime - before.ru_utime) / {checks},
        "system": (after.ru_stime - before.ru_stime) / {checks},
        "faults": (after.ru_minflt - before.ru_minflt) / {checks},
    }}))
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--method", choices=["directional", "full"], default="directional")
    parser.add_argument("--processes", type=int, default=4, help="fresh processes each way, alternating")
    parser.add_argument("--checks", type=int, default=10, help="timed checks per process, after 2 warm ones")
    args = parser.parse_args()
    ways = {"glibc default": False, "freed memory kept": True}
    found: dict[str, list[dict]] = {name: [] for name in ways}
    for _ in range(args.processes):
        for name, keep in ways.items():
            probe = PROBE.format(
                root=str(ROOT), benchmarks=str(ROOT / "benchmarks"), keep=keep, method=args.method, checks=args.checks
            )
            done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
            found[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    for name, runs in found.items():
        walls = [wall for run in runs for wall in run["walls"]]
        user = statistics.median(run["user"] for run in runs)
        system = statistics.median(run["system"] for run in runs)
        faults = statistics.median(run["faults"] for run in runs)
        print(
            f"{name:>17}: best {1e3 * min(walls):.1f} ms, median {1e3 * statistics.median(walls):.1f} ms, "
            f"CPU user {1e3 * user:.1f} + system {1e3 * system:.1f} ms, {faults:.0f} minor faults per check "
            f"({args.method}, {len(walls)} checks in {len(runs)} processes)"
        )


if __name__ == "__main__":
    main()
