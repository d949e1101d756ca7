"""The quick tier of the built-in layer with and without its steps side by side on two threads.

``checker.run_check`` runs some steps of a ``directional`` check of convcheck's own layer on a second thread
(``parallel.side_by_side``) when ``parallel.side_by_side_pays`` says so. Whether that is faster depends on the
machine (how OpenBLAS's own threads and a second Python thread share two cores), so this times the seed layer's
check both ways, alternating in one process, and prints the best and median wall time and the median CPU time of
each. The estimates are the same either way (``tests/test_parallel.py``).

    python benchmarks/quick_threads.py [--rounds 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rows import SEED_SHAPE  # noqa: E402

from convcheck import checker  # noqa: E402
from convcheck.spec import CheckSpec, Method  # noqa: E402

WARM_ROUNDS = 5  # the first rounds of each way are dropped: buffers and caches are still being made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=40, help="checks each way, alternating (default 40)")
    rounds = parser.parse_args().rounds
    spec = CheckSpec("seed-directional", SEED_SHAPE, method=Method.DIRECTIONAL)
    ways: dict[str, Callable[[object, object], bool]] = {
        "side by side": checker.parallel.side_by_side_pays,
        "one thread": lambda layer, shape: False,
    }
    wall: dict[str, list[float]] = {name: [] for name in ways}
    cpu: dict[str, list[float]] = {name: [] for name in ways}
    try:
        for _ in range(rounds + WARM_ROUNDS):
            for name, pays in ways.items():
                checker.parallel.side_by_side_pays = pays  # type: ignore[assignment]
                start, start_cpu = time.perf_counter(), time.process_time()
                checker.run_check(spec)
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    finally:
        checker.parallel.side_by_side_pays = ways["side by side"]  # type: ignore[assignment]
    for name in ways:
        kept, kept_cpu = wall[name][WARM_ROUNDS:], cpu[name][WARM_ROUNDS:]
        print(
            f"{name:>13}: best {1e3 * min(kept):.1f} ms, median {1e3 * statistics.median(kept):.1f} ms, "
            f"CPU median {1e3 * statistics.median(kept_cpu):.1f} ms ({rounds} checks)"
        )


if __name__ == "__main__":
    main()
