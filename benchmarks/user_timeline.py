"""Where a user layer's full check spends its time, on one timeline: this process, the layer's process, its workers.

    python benchmarks/user_timeline.py                 # the seed geometry, examples/im2col_nhwc.py, method full
    python benchmarks/user_timeline.py --serial        # the same with each batch received before the next is sent

Run it as a script of its own (not imported): the probes are set before the fork server starts, so the layer's
process and its pool workers (forked from it) log their intervals too. Every interval goes to one log file with
the monotonic clock (shared by every process) and the thread's CPU time; the summary prints, per role, wall and
CPU seconds, and how much of the time the batches took the workers were computing and this process was reducing
at the same time. Intervals are the probes': the engine's reductions (``Engine._reduce``), the receipt of a
batch's outputs (what the engine waits for), the workers' ``Batch.run``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from convcheck import checker  # noqa: E402
from convcheck.isolation import remote, session  # noqa: E402
from convcheck.numeric import engine, fanout  # noqa: E402
from convcheck.spec import CheckSpec, ConvShape, ImplRef, Method  # noqa: E402

SEED_SHAPE = ConvShape(8, 32, 48, 16, 32, 3, 1, 1)
LAYER = HERE.parent / "examples" / "im2col_nhwc.py"


def probe(owner: Any, name: str, role: str, log: Path) -> None:
    """Log ``(pid, role, start, end, cpu)`` of every call of ``owner.name`` (in any process forked after this)."""
    original: Callable[..., Any] | None = getattr(owner, name, None)
    if original is None:  # an older tree (run against a baseline) without this function
        return

    def logged(*args: Any, **kwargs: Any) -> Any:
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            entry = [os.getpid(), role, start, time.perf_counter(), time.thread_time() - cpu]
            with open(log, "a", encoding="ascii") as file:
                file.write(json.dumps(entry) + "\n")

    setattr(owner, name, logged)


def busy(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of ``intervals``, as sorted disjoint intervals."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Seconds during which both (disjoint, sorted) interval lists are busy."""
    total, i, j = 0.0, 0, 0
    while i < len(a) and j < len(b):
        total += max(0.0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serial", action="store_true", help="receive each batch before the next is sent")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    log = Path(tempfile.mkdtemp(prefix="convcheck-timeline-")) / "intervals.jsonl"
    probe(engine.Engine, "_reduce", "reduce", log)
    probe(session.Session, "_answered", "receive", log)
    probe(session.Session, "_exchange", "exchange", log)
    probe(fanout.Batch, "run", "worker", log)
    spec = CheckSpec("seed-user", SEED_SHAPE, method=Method.FULL, impl=ImplRef(str(LAYER)))
    start, cpu = time.perf_counter(), time.process_time()
    with remote.remote_layer(spec, None) as layer:
        layer.pipelined = not args.serial
        result = checker.run_check(spec, layer=layer)
        child = layer.child_seconds()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    entries = [json.loads(line) for line in log.read_text(encoding="ascii").splitlines()]
    me = os.getpid()
    workers = sorted({pid for pid, role, *_ in entries if role == "worker"})

    def spans_of(pids: set[int], role: str) -> list[tuple[float, float]]:
        return busy([(s, e) for pid, kind, s, e, _ in entries if pid in pids and kind == role])

    spans = {"reduce": spans_of({me}, "reduce"), "workers (any)": spans_of(set(workers), "worker")}
    spans.update({f"worker {k}": spans_of({w}, "worker") for k, w in enumerate(workers)})
    batches = (spans["workers (any)"][0][0], spans["workers (any)"][-1][1]) if workers else (start, start)
    window = batches[1] - batches[0]
    both = overlap(spans["worker 0"], spans["worker 1"]) if len(workers) >= 2 else 0.0
    summary = {
        "mode": "serial" if args.serial else "pipelined",
        "status": result.status.value,
        "passes": result.forward_passes,
        "wall_s": wall,
        "cpu_s": {
            "this process": cpu,
            "layer process (its own)": child,
            **{
                f"worker {k}": sum(c for pid, role, _, _, c in entries if pid == w and role == "worker")
                for k, w in enumerate(workers)
            },
            "reductions (this process)": sum(c for pid, role, _, _, c in entries if pid == me and role == "reduce"),
        },
        "batches_span_s": window,
        "before_first_batch_s": batches[0] - start,  # the contract, the forward check, the engine's first calls
        "after_last_batch_s": start + wall - batches[1],  # the verdicts and the forward-point audit
        "busy_share_of_batches_span": {
            "both workers computing": both / window if window else 0.0,
            "some worker computing": sum(e - s for s, e in spans["workers (any)"]) / window if window else 0.0,
            "reducing": sum(e - s for s, e in spans["reduce"]) / window if window else 0.0,
            "reducing while a worker computes": overlap(spans["reduce"], spans["workers (any)"]) / window
            if window
            else 0.0,
        },
        "load_average": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            if isinstance(value, dict):
                print(f"{key}:")
                for name, figure in value.items():
                    print(f"  {name:<36} {figure:8.3f}")
            else:
                print(f"{key:<38} {value if not isinstance(value, float) else f'{value:.3f}'}")
    log.unlink()
    log.parent.rmdir()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
