"""Audit a grouped estimate against plain per-entry differences at a few random entries.

Grouped differences rest on an assumption about the layer: an output moves only when an entry of its own window
moves. The engine's structural tests (locality of unowned outputs, batch and channel separability) see many
violations, but not all: with no padding and ``k ≥ s`` every output window holds a perturbed entry, so a forward
that reads the wrong windows leaves nothing unowned to watch, and its grouped estimate credits each output's
change to the wrong owner. A per-entry central difference needs no assumption at all. So whenever grouping is used,
a seeded sample of entries of every tensor is measured both ways; the grouped estimate is kept only when every
audited entry agrees, i.e. when the two intervals the derivative must lie in overlap once each is widened by what
an entry is allowed (``Estimate.allowed``: atol, rtol and the rounding-noise band). A correct layer's two
estimates of one derivative differ only by rounding, so a disagreement means the grouping is not valid here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convcheck.numeric.engine import Estimate

AUDIT_ENTRIES = 8  # entries per tensor measured one at a time whenever grouping is used (2 forward passes each)


@dataclass(frozen=True)
class Disagreement:
    """An audited entry whose grouped and per-entry estimates cannot both be right."""

    tensor: str
    index: tuple[int, ...]
    grouped: float
    single: float

    def __str__(self) -> str:
        return (
            f"{self.tensor} entry {list(self.index)}: grouped differences give {self.grouped:.6g}, "
            f"a per-entry difference {self.single:.6g}"
        )


def audit_entries(size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted flat indices of the entries to audit in a tensor of ``size`` entries (all of a small one)."""
    return np.sort(rng.choice(size, size=min(AUDIT_ENTRIES, size), replace=False))


def disagreement(
    grouped: Estimate, single: Estimate, entries: np.ndarray, rtol: float, atol: float
) -> Disagreement | None:
    """The first of ``entries`` (flat indices) whose two estimates' widened intervals do not overlap, or None.

    Args:
        grouped: the grouped estimate of one tensor (every entry measured).
        single: the per-entry estimate of the same tensor, measured at least at ``entries``.
    """
    slack_grouped = grouped.allowed(entries, rtol, atol)
    slack_single = single.allowed(entries, rtol, atol)
    lo_g, hi_g = grouped.lo[entries] - slack_grouped, grouped.hi[entries] + slack_grouped
    lo_s, hi_s = single.lo[entries] - slack_single, single.hi[entries] + slack_single
    with np.errstate(invalid="ignore"):
        apart = ~((lo_g <= hi_s) & (lo_s <= hi_g))  # NaN (a non-finite difference) counts as apart
    if not apart.any():
        return None
    flat = int(entries[np.argmax(apart)])
    return Disagreement(
        grouped.name,
        tuple(int(i) for i in np.unravel_index(flat, grouped.shape)),
        float(grouped.central[flat]),
        float(single.central[flat]),
    )
