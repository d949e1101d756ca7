"""Zero false alarms, measured: check N random *correct* layers (seeded) and count the ones that fail.

    python benchmarks/false_alarms.py --layers 500 --jobs 2 --space both

Two spaces of layers (``--space``; ``both`` alternates them, layer by layer):

- ``2d``: the 2-D square-kernel layers — k 1..7, s 1..4, p 0..k−1, H and W 1..12 (unequal allowed);
- ``nd``: the whole space — 1, 2 or 3 spatial axes, per-axis kernel 1..5, stride 1..3 and dilation 1..3, padding
  per side 0..3 (asymmetric), ``same`` or ``valid``, groups 1..4 (depthwise among them), with or without a bias;
  sizes 1..10 per axis (1..6 in 3-D), drawn again until the geometry is possible.

Both: batch 1..4 (1..2 in 3-D), channels 1..6 per group, relu / none / leaky_relu / tanh / sigmoid; a third of
them with integer-valued x and w and zero bias (exact-zero pre-activations at kinks, the worst case). Every layer
runs in float64 and in float32. A false alarm is a correct layer that does not pass; a false hint is a hint on a
passing check. The figures to hold are 0 and 0.
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
SPACES = ("2d", "nd", "both")


def square_layer(rng: np.random.Generator) -> ConvShape:
    """A possible 2-D square-kernel layer (one stride, one padding on every side)."""
    while True:
        k = int(rng.integers(1, 8))
        s = int(rng.integers(1, 5))
        p = int(rng.integers(0, k))
        h, w = (int(v) for v in rng.integers(1, 13, size=2))
        shape = ConvShape(int(rng.integers(1, 5)), h, w, int(rng.integers(1, 7)), int(rng.integers(1, 7)), k, s, p)
        if not shape.problems():
            return shape


def nd_layer(rng: np.random.Generator) -> ConvShape:
    """A possible layer of the whole space: any dims, per-axis values, per-side/``same``/``valid`` padding, groups,
    with or without a bias."""
    while True:
        dims = int(rng.integers(1, 4))
        axes = range(dims)
        kernel = tuple(int(rng.integers(1, 6)) for _ in axes)
        strides = tuple(int(rng.integers(1, 4)) for _ in axes)
        dilations = tuple(int(rng.integers(1, 4)) if rng.random() < 0.4 else 1 for _ in axes)
        mode = rng.choice(["explicit", "explicit", "same", "valid"])
        padding: object = tuple((int(rng.integers(0, 4)), int(rng.integers(0, 4))) for _ in axes)
        if mode != "explicit":
            padding = str(mode)
        sizes = tuple(int(rng.integers(1, 7 if dims == 3 else 11)) for _ in axes)
        groups = int(rng.integers(1, 5)) if rng.random() < 0.5 else 1
        c_in = groups * int(rng.integers(1, 4 if groups > 1 else 7))
        c_out = groups * (1 if rng.random() < 0.3 else int(rng.integers(1, 4 if groups > 1 else 7)))
        batch = int(rng.integers(1, 3 if dims == 3 else 5))
        bias = bool(rng.random() < 0.6)
        shape = ConvShape.nd(batch, sizes, c_in, c_out, kernel, strides, padding, dilations, groups, bias)  # type: ignore[arg-type]
        if not shape.problems():
            return shape


def random_layer(index: int, space: str = "2d") -> tuple[CheckSpec, bool]:
    rng = np.random.default_rng([2026, index])
    nd = space == "nd" or (space == "both" and index % 2 == 1)
    shape = nd_layer(rng) if nd else square_layer(rng)
    activation = ACTIVATIONS[int(rng.integers(0, len(ACTIVATIONS)))]
    integer = bool(rng.integers(0, 3) == 0)
    spec = CheckSpec(name=f"layer-{index}", shape=shape, activation=activation, method=Method.FULL, seed=index)
    return spec, integer


def run_one(task: tuple[int, str, str]) -> tuple[str, str, bool, bool, str]:
    """``(name, dtype, passed, hinted, detail)`` of one correct layer's check."""
    index, dtype, space = task
    spec, integer = random_layer(index, space)
    spec = spec.with_overrides(dtype=DType(dtype))
    result = run_check(spec, data=integer_data(spec) if integer else None)
    hints = "; ".join(str(h) for h in result.diagnosis)
    detail = "" if result.passed else f"{result.status.value}: {result.error or ''} {result.notes}"
    text = f"{spec.shape.describe()} {spec.activation.value} int={integer} {detail} {hints}"
    return spec.name, dtype, result.passed, bool(result.diagnosis), text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--space", choices=SPACES, default="both")
    args = parser.parse_args()
    tasks = [(i, d, args.space) for i in range(args.layers) for d in ("float64", "float32")]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        outcomes = list(pool.map(run_one, tasks, chunksize=8))
    for dtype in ("float64", "float32"):
        mine = [o for o in outcomes if o[1] == dtype]
        alarms = [o for o in mine if not o[2]]
        hinted = [o for o in mine if o[2] and o[3]]
        print(f"{dtype}: {len(alarms)} false alarms, {len(hinted)} false hints in {args.layers} correct layers")
        for name, _, _, _, detail in (*alarms, *hinted):
            print(f"  {name}: {detail}")
    print(f"{time.perf_counter() - start:.1f} s ({args.space})")


if __name__ == "__main__":
    main()
