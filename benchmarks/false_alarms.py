"""Zero false alarms, measured: check N random *correct* layers (seeded) and count the ones that fail.

    python benchmarks/false_alarms.py --layers 500 --jobs 2

Layers: k 1..7, s 1..4, p 0..k−1, H and W 1..12 (unequal allowed), batch 1..4, channels 1..6, relu / none /
leaky_relu / tanh / sigmoid; a third of them with integer-valued x and w and zero bias (exact-zero
pre-activations, the worst case for kinks). Every layer runs in float64 and in float32. The figure to hold is 0.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from convcheck.checker import run_check
from convcheck.data import integer_data
from convcheck.spec import Activation, CheckSpec, ConvShape, DType, Method

ACTIVATIONS = (Activation.RELU, Activation.NONE, Activation.LEAKY_RELU, Activation.TANH, Activation.SIGMOID)


def random_layer(index: int) -> tuple[CheckSpec, bool]:
    rng = np.random.default_rng([2026, index])
    while True:
        k = int(rng.integers(1, 8))
        s = int(rng.integers(1, 5))
        p = int(rng.integers(0, k))
        h, w = (int(v) for v in rng.integers(1, 13, size=2))
        shape = ConvShape(int(rng.integers(1, 5)), h, w, int(rng.integers(1, 7)), int(rng.integers(1, 7)), k, s, p)
        if not shape.problems():
            break
    activation = ACTIVATIONS[int(rng.integers(0, len(ACTIVATIONS)))]
    integer = bool(rng.integers(0, 3) == 0)
    spec = CheckSpec(name=f"layer-{index}", shape=shape, activation=activation, method=Method.FULL, seed=index)
    return spec, integer


def run_one(task: tuple[int, str]) -> tuple[str, str, bool, str]:
    index, dtype = task
    spec, integer = random_layer(index)
    spec = spec.with_overrides(dtype=DType(dtype))
    result = run_check(spec, data=integer_data(spec) if integer else None)
    detail = "" if result.passed else f"{result.status.value}: {result.error or ''} {result.notes}"
    return spec.name, dtype, result.passed, f"{spec.shape.describe()} {spec.activation.value} int={integer} {detail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    tasks = [(i, d) for i in range(args.layers) for d in ("float64", "float32")]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        outcomes = list(pool.map(run_one, tasks, chunksize=8))
    for dtype in ("float64", "float32"):
        alarms = [o for o in outcomes if o[1] == dtype and not o[2]]
        print(f"{dtype}: {len(alarms)} false alarms in {args.layers} correct layers")
        for name, _, _, detail in alarms:
            print(f"  {name}: {detail}")
    print(f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
