"""The ``memory`` benchmark: peak resident memory of a process that runs the seed layer's full check (the engine's
default threads and one), its memory after the imports, and the peak of its numpy/Python allocations."""

from __future__ import annotations

import json
import subprocess
import textwrap

from harness import HERE, PYTHON
from rows import Row

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
