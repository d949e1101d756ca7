"""The hint rate: failing checks that get the right hint, on the realistic catalogue and on the planted one.

    PYTHONPATH=$PWD python benchmarks/hint_rate.py

Realistic layers (``tests/realbugs.py``, files in ``tests/fixtures/realbugs/``): each entry's geometries run as
one batch, the batch-level crash hint added; a failed check must carry the entry's label, a check that raised
the ``unsupported geometry`` label. Correct layers in the same styles must pass every geometry with no hint.
Planted bugs (``convcheck.bugs``) on the selftest sweep in float64 and float32: a failed check must carry the
bug's ``hint`` label. Prints a Markdown table per catalogue and the totals (docs/diagnosis.md quotes them).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import realbugs  # noqa: E402 - the registry lives with the tests

from convcheck import bugs  # noqa: E402
from convcheck.checker import run_check  # noqa: E402
from convcheck.results import Status  # noqa: E402
from convcheck.selftest import DEFAULT_SWEEP, DTYPES, with_dtype  # noqa: E402


def realistic() -> tuple[int, int, int]:
    """(failing checks with the right hint, failing checks, hints on correct layers or passing checks)."""
    hits = failing = false_hints = 0
    print("| realistic layer | expected hint | failing checks with it |\n|---|---|---|")
    for entry in realbugs.CATALOGUE:
        results = realbugs.run(entry)
        fails = [r for r in results if r.status is not Status.PASS]
        got = sum(realbugs.hit(entry, r) for r in fails)
        false_hints += sum(bool(r.diagnosis) for r in results if r.status is Status.PASS)
        crashes = sum(r.status is Status.ERROR for r in fails)
        label = entry.label if crashes < len(fails) else realbugs.CRASH_LABEL
        extra = f" (+ {realbugs.CRASH_LABEL} on {crashes} that raised)" if 0 < crashes < len(fails) else ""
        print(f"| `{entry.id}` | {label}{extra} | {got}/{len(fails)} |")
        hits, failing = hits + got, failing + len(fails)
    for entry in realbugs.GOOD:
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
    real_hits, real_failing, false_hints = realistic()
    planted_hits, planted_failing = planted()
    print()
    print(f"realistic: {real_hits}/{real_failing} failing checks with the right hint")
    print(f"planted: {planted_hits}/{planted_failing} failing checks with the right hint")
    total = real_hits + planted_hits, real_failing + planted_failing
    print(f"both: {total[0]}/{total[1]} ({100 * total[0] / total[1]:.1f} %); hints on correct layers: {false_hints}")


if __name__ == "__main__":
    main()
