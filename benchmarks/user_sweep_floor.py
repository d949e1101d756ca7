"""What a sweep of a user's layer cannot go below: its forward calls alone, each check in a fresh process.

    python benchmarks/user_sweep_floor.py SWEEP.yaml RESULTS.json [--jobs 2]

``RESULTS.json`` is ``convcheck run SWEEP.yaml --json RESULTS.json``'s report: for every check, the forward passes
it made. This script makes exactly those calls of the layer's ``forward`` and nothing else, the way the checks'
design requires them to be made: each check in a process forked for it alone from this one (which imported numpy
and convcheck, never the layer), which imports the layer's file, calls forward on fresh copies of the check's
seeded data (``convcheck.data.make_data``) and keeps each output in one array, with one BLAS thread and the layer
process's malloc settings; ``--jobs`` such processes at a time, as ``--jobs`` workers check layers. No request,
no reduction, no verdict. Its wall time, next to ``convcheck run SWEEP.yaml --jobs N``'s, is the most a faster
engine could gain (``benchmarks/run.py``'s user-sweep rows). For layers with convcheck's own forward signature
``forward(x, w, b, stride, padding)``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from convcheck import parallel  # noqa: E402
from convcheck.config import load_file  # noqa: E402
from convcheck.data import CheckData, make_data  # noqa: E402
from convcheck.isolation.child import keep_freed_memory  # noqa: E402
from convcheck.spec import CheckSpec  # noqa: E402
from convcheck.user.arguments import call_values  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("results", type=Path, help="convcheck run SWEEP --json RESULTS's report (its passes)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    loaded = load_file(args.sweep)
    if loaded.errors:
        raise SystemExit(f"{args.sweep}: {loaded.errors[0]}")
    passes = {check["name"]: int(check["forward_passes"]) for check in json.loads(args.results.read_text())["checks"]}
    work = [(spec, make_data(spec), passes[spec.name]) for spec in loaded.specs]
    start = time.perf_counter()
    run_all(work, args.jobs)
    print(json.dumps({"seconds": time.perf_counter() - start, "forwards": sum(n for _, _, n in work)}))


def run_all(work: list[tuple[CheckSpec, CheckData, int]], jobs: int) -> None:
    """Each check's calls in a process of its own, ``jobs`` at a time, in the sweep's order."""
    running: set[int] = set()
    with parallel.limited_blas(1):
        for spec, data, count in work:
            if len(running) == jobs:
                running.discard(_reap(os.wait()))
            pid = os.fork()
            if pid == 0:  # pragma: no cover - in the forked process
                code = 1
                try:
                    _calls(spec, data, count)
                    code = 0
                finally:
                    os._exit(code)
            running.add(pid)
        for pid in running:
            _reap(os.waitpid(pid, 0))


def _reap(waited: tuple[int, int]) -> int:
    pid, status = waited
    if status != 0:
        raise SystemExit(f"a check's process ended with status {status}")
    return pid


def _calls(spec: CheckSpec, data: CheckData, count: int) -> None:
    """``count`` forward calls of the layer, as the layer's own process would make them."""
    keep_freed_memory()  # the layer process's malloc settings
    assert spec.impl is not None
    path = Path(spec.impl.module)
    path = path if path.is_absolute() else (spec.impl.base_dir or Path.cwd()) / path
    found = importlib.util.spec_from_file_location("user_layer", path)
    assert found is not None and found.loader is not None
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    forward = getattr(module, spec.impl.forward)
    stride, padding = call_values(spec.shape.window, data.x.shape[1:-1], data.w.shape[:-2])
    kept: np.ndarray | None = None  # where each output is written, as into the layer process's slot
    for _ in range(count):
        out = forward(data.x.copy(), data.w.copy(), data.b.copy(), stride, padding)[0]
        kept = np.empty_like(out) if kept is None else kept
        kept[...] = out


if __name__ == "__main__":
    main()
