"""What every benchmark script shares: a figure (``Row``), how figures are printed, the large layer and its data.

A module of its own so that ``run.py``'s benchmarks (``bench_*.py``) and the scripts it runs (``frameworks.py``)
all take these from here, not from each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from convcheck.data import CheckData, make_data
from convcheck.spec import CheckSpec, ConvShape, Method

__all__ = ["SEED_SHAPE", "Row", "print_rows", "seed_data"]

SEED_SHAPE = ConvShape(
    batch=8, in_height=32, in_width=48, in_depth=16, out_depth=32, filter_size=3, stride=1, padding=1
)


@dataclass
class Row:
    """One figure: ``value`` in ``unit``; ``target`` in words and whether it is ``met`` (None: information)."""

    benchmark: str
    metric: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""


def seed_data() -> tuple[CheckSpec, CheckData]:
    spec = CheckSpec("seed-layer", SEED_SHAPE, method=Method.FULL)
    return spec, make_data(spec)


def print_rows(rows: list[Row]) -> None:
    for row in rows:
        verdict = "" if row.met is None else ("MET" if row.met else "NOT MET")
        value = f"{row.value:,.0f}" if row.unit == "" else f"{row.value:.3g}"
        target = f"target {row.target}" if row.target else ""
        print(f"  {row.metric:<52} {value:>10} {row.unit:<4} {target:<30} {verdict:<8} {row.note}")
