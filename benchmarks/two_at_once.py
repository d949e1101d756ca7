"""Small layers' checks in one process, alone and with a second such process running at once.

    python benchmarks/two_at_once.py SWEEP.yaml [--root TREE] [--rounds 2]

``SWEEP.yaml``: a config of the built-in layer's checks, e.g. the sweep benchmark's 320 small layers
(``bench_sweeps.SWEEP_CONFIG`` written to a file). Runs its checks one after another in a process, as ``convcheck run``
with ``--jobs 1`` does, from the source tree ``--root`` (this checkout by default; another, e.g. a git worktree,
to compare), BLAS left as the environment has it; first alone, then in two such processes started together, as
two ``pytest -n 2`` workers or two CI jobs on one machine run. Prints each process's best wall and CPU
milliseconds per check. On 2 cores, a check whose products kept two BLAS threads used twice the CPU it needed,
and two at once each took twice as long (``parallel.BLAS_ONE_THREAD_MACS``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

PROBE = """
import json, sys, time
sys.path.insert(0, {root!r})
from convcheck.checker import run_check
from convcheck.config import load_file
loaded = load_file({sweep!r})
if loaded.errors or not loaded.specs:
    sys.exit("the config has errors or no checks: " + "; ".join(str(e) for e in loaded.errors))
specs = loaded.specs
for spec in specs[:4]:
    run_check(spec)
best = (float("inf"), float("inf"))
for _ in range({rounds}):
    start, cpu = time.perf_counter(), time.process_time()
    for spec in specs:
        run_check(spec)
    best = min(best, ((time.perf_counter() - start) / len(specs), (time.process_time() - cpu) / len(specs)))
print(json.dumps({{"wall": best[0], "cpu": best[1]}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--rounds", type=int, default=2, help="passes over the sweep per process; the best counts")
    args = parser.parse_args()
    code = PROBE.format(root=str(args.root.resolve()), sweep=str(args.sweep.resolve()), rounds=args.rounds)
    for together in (1, 2):
        started = time.perf_counter()
        processes = [
            subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=args.root)
            for _ in range(together)
        ]
        printed = [process.communicate()[0] for process in processes]
        if any(process.returncode for process in processes):
            raise SystemExit("a probe failed (its error is above)")
        figures = [json.loads(text) for text in printed]
        each = ", ".join(f"wall {1e3 * f['wall']:.2f} ms, CPU {1e3 * f['cpu']:.2f} ms" for f in figures)
        print(f"{together} at once ({time.perf_counter() - started:.1f} s): per check {each}")


if __name__ == "__main__":
    main()
