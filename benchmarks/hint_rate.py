"""The hint rate: failing checks that get the right hint, on the realistic catalogue and on the planted one.

    PYTHONPATH=$PWD python benchmarks/hint_rate.py              # the catalogues' own geometries
    PYTHONPATH=$PWD python benchmarks/hint_rate.py --random 12  # 12 random geometries per realistic layer

Realistic layers (``tests/realbugs.py``, files in ``tests/fixtures/realbugs/``): each entry's geometries run as
one batch, the batch-level crash hint added; a failed check must carry the entry's label, a check that raised
the ``unsupported geometry`` label. Correct layers in the same styles must pass every geometry with no hint.
Planted bugs (``convcheck.bugs``) on the selftest sweep in float64 and float32: a failed check must carry the
bug's ``hint`` label. Prints a Markdown table per catalogue and the totals (docs/diagnosis.md quotes them).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import realbugs  # noqa: E402 - the registry lives with the tests

from convcheck import bugs  # noqa: E402
from convcheck.checker import run_check  # noqa: E402
from convcheck.results import Status  # noqa: E402
from convcheck.selftest import DEFAULT_SWEEP, DTYPES, with_dtype  # noqa: E402


def random_geometries(index: int, count: int) -> tuple[realbugs.Geometry, ...]:
    """``count`` valid random layers (seeded by ``index``): batch 1–3, 3–9 × 3–9, 1–4 channels, k 1–4, stride
    1–3, padding 0–2, half of them float32."""
    rng = np.random.default_rng([2026, 12, index])
    found: list[realbugs.Geometry] = []
    while len(found) < count:
        n, h, w, c_in, c_out = (int(v) for v in rng.integers([1, 3, 3, 1, 1], [4, 10, 10, 5, 5]))
        k, s, p = int(rng.integers(1, 5)), int(rng.integers(1, 4)), int(rng.integers(0, 3))
        dtype = "float32" if rng.random() < 0.5 else "float64"
        geo = realbugs.g(n, h, w, c_in, c_out, k, s, p, dtype)
        if not geo.shape.problems():
            found.append(geo)
    return tuple(found)


def realistic(count: int = 0) -> tuple[int, int, int]:
    """(failing checks with the right hint, failing checks, hints on correct layers or passing checks), on the
    catalogue's geometries, or on ``count`` random ones per layer."""
    hits = failing = false_hints = 0
    print("| realistic layer | expected hint | failing checks with it |\n|---|---|---|")
    for index, entry in enumerate(realbugs.CATALOGUE):
        if count:
            entry = dataclasses.replace(entry, geometries=random_geometries(index, count))
        results = realbugs.run(entry)
        fails = [r for r in results if r.status is not Status.PASS]
        got = sum(realbugs.hit(entry, r) for r in fails)
        false_hints += sum(bool(r.diagnosis) for r in results if r.status is Status.PASS)
        crashes = sum(r.status is Status.ERROR for r in fails)
        label = entry.label if crashes < len(fails) else realbugs.CRASH_LABEL
        extra = f" (+ {realbugs.CRASH_LABEL} on {crashes} that raised)" if 0 < crashes < len(fails) else ""
        print(f"| `{entry.id}` | {label}{extra} | {got}/{len(fails)} |")
        for r in fails:
            if not realbugs.hit(entry, r):
                print(f"  missed: {r.name}: {[str(h) for h in r.diagnosis]} {r.error or ''}", file=sys.stderr)
        hits, failing = hits + got, failing + len(fails)
    for index, entry in enumerate(realbugs.GOOD):
        if count:
            entry = dataclasses.replace(entry, geometries=random_geometries(100 + index, count))
        results = realbugs.run(entry)
        false_hints += sum(r.status is not Status.PASS or bool(r.diagnosis) for r in results)
    return hits, failing, false_hints


def planted() -> tuple[int, int]:
    """(failing checks naming the planted bug's label, failing checks) on the selftest sweep."""
    sweep = tuple(spec for dtype in DTYPES for spec in with_dtype(DEFAULT_SWEEP, dtype))
    hits = failing = 0
    for bug in bugs.CATALOGUE:
        for spec in sweep:
            s = spec.shape
            result = run_check(spec, layer=bug.layer(stride=s.stride, padding=s.padding, activation=spec.activation))
            if result.status is Status.PASS:
                continue
            failing += 1
            hits += any(bug.hint in hint.label.split(" / ") for hint in result.diagnosis)
    return hits, failing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=0, help="random geometries per realistic layer (0: its own)")
    args = parser.parse_args()
    real_hits, real_failing, false_hints = realistic(args.random)
    if args.random:
        print(
            f"\nrealistic, {args.random} random geometries each: {real_hits}/{real_failing} failing checks with the "
            f"right hint; hints on correct layers or passing checks: {false_hints}"
        )
        return
    planted_hits, planted_failing = planted()
    print()
    print(f"realistic: {real_hits}/{real_failing} failing checks with the right hint")
    print(f"planted: {planted_hits}/{planted_failing} failing checks with the right hint")
    total = real_hits + planted_hits, real_failing + planted_failing
    print(f"both: {total[0]}/{total[1]} ({100 * total[0] / total[1]:.1f} %); hints on correct layers: {false_hints}")


if __name__ == "__main__":
    main()
