"""The grids the heatmaps draw: where a check's errors are, as numpy arrays (pure functions, no drawing).

Two grids answer "where": the input gradient's error over ``(H, W)``, summed over the batch and the input
channels, and the weight gradient's error over ``(kh, kw)`` for each input channel, summed over the output
channels. A failed forward adds the output's error over ``(OH, OW)``. Border, stride-periodic, corner and
overlap patterns are spatial, so they show in these grids at a glance.

Each entry contributes according to a ``Measure``: by default ``excess``, its error relative to what it was
allowed (``|analytic − numeric| / allowed``) when that is over 1 and 0 when the entry is within tolerance, so a
cell is nonzero exactly where some entry failed. Entries that were not checked (``sampled`` method) contribute
nothing; a cell with no checked entry is NaN (drawn blank). The terminal (``heatmap``), the PNG files (``plot``)
and tests all read these arrays, so they show the same pattern.

Shapes follow ``convcheck.spec`` (internal NHWC): dx ``(N, H, W, C_in)``, dw ``(k, k, C_in, C_out)``,
output ``(N, OH, OW, C_out)``.
"""

from __future__ import annotations

from enum import Enum

import numpy as np

from convcheck.results import CheckResult, TensorResult

__all__ = [
    "MAX_CHANNELS",
    "Measure",
    "entry_errors",
    "finite_top",
    "forward_grid",
    "gradient_grid",
    "has_pattern",
    "input_grid",
    "measure_for",
    "relative_bound",
    "shown_channels",
    "weight_grids",
]

#: Input channels drawn for the weight gradient (those with the largest error first, when there are more).
MAX_CHANNELS = 16


class Measure(str, Enum):
    """How much one gradient entry contributes to its cell.

    ``excess``: ``|analytic − numeric| / allowed`` where that exceeds 1, else 0 (nonzero exactly where entries
    fail). ``ratio``: ``|analytic − numeric| / allowed`` for every entry (how close a passing check came).
    ``abs``: ``|analytic − numeric|``.
    """

    EXCESS = "excess"
    RATIO = "ratio"
    ABS = "abs"


def entry_errors(g: TensorResult, measure: Measure = Measure.EXCESS) -> np.ndarray | None:
    """Each entry's contribution under ``measure``, shaped like the gradient; NaN where it was not checked.

    The error is the checker's own per entry (the distance to the kink interval) when the result carries it as
    ``error``, else ``|analytic − numeric|``, which can exceed ``allowed`` at a kink the checker passed. None
    when the result carries no arrays (a directional check, or one that could not run).
    """
    if g.analytic is None or g.numeric is None or g.allowed is None or g.projections:
        return None
    analytic = np.asarray(g.analytic, dtype=np.float64)
    numeric = np.asarray(g.numeric, dtype=np.float64)
    allowed = np.asarray(g.allowed, dtype=np.float64)
    judged = getattr(g, "error", None)  # the checker's distance to the kink interval, when the result has it
    checked = np.isfinite(numeric)  # the engine leaves unmeasured entries NaN
    broken = ~np.isfinite(analytic)  # a NaN or infinite analytic value is infinitely wrong
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = np.abs(analytic - numeric) if judged is None else np.asarray(judged, dtype=np.float64)
        error = np.where(broken, np.inf, raw)
        if measure is Measure.ABS:
            value = error
        else:
            ratio = np.where(allowed > 0, error / allowed, np.where(error > 0, np.inf, 0.0))
            ratio = np.where(broken, np.inf, ratio)
            value = ratio if measure is Measure.RATIO else np.where(ratio > 1, ratio, 0.0)
    return np.where(checked, value, np.nan)


def _summed(values: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Sum over ``axes`` ignoring unchecked entries; NaN where no entry was checked."""
    checked = np.isfinite(values) | np.isinf(values)
    total = np.where(checked, values, 0.0).sum(axis=axes)
    return np.where(checked.any(axis=axes), total, np.nan)


def input_grid(result: CheckResult, measure: Measure = Measure.EXCESS) -> np.ndarray | None:
    """The input gradient's error over ``(H, W)``, summed over the batch and the input channels."""
    g = result.gradient("input")
    values = None if g is None else entry_errors(g, measure)
    if values is None or values.ndim != 4:
        return None
    return _summed(values, (0, 3))


def weight_grids(result: CheckResult, measure: Measure = Measure.EXCESS) -> np.ndarray | None:
    """The weight gradient's error over ``(kh, kw)`` per input channel, summed over the output channels:
    ``(C_in, k, k)``."""
    g = result.gradient("weights")
    values = None if g is None else entry_errors(g, measure)
    if values is None or values.ndim != 4:
        return None
    return np.moveaxis(_summed(values, (3,)), 2, 0)


def forward_grid(result: CheckResult) -> np.ndarray | None:
    """The output's error over ``(OH, OW)``, ``|output − reference| / allowed`` summed over batch and channels.

    ``allowed`` is the forward tolerance at its worst entry (the only one a result keeps). None unless the
    forward was compared.
    """
    f = result.forward
    if f is None or f.output is None or f.reference is None or f.output.shape != f.reference.shape:
        return None
    if f.output.ndim != 4:  # (N, OH, OW, C_out) only: a 1-D or 3-D output has no (OH, OW) grid to draw
        return None
    error = np.abs(np.asarray(f.output, dtype=np.float64) - f.reference)
    error = np.where(np.isfinite(error), error, np.inf)
    allowed = f.allowed if f.allowed > 0 else 1.0
    ratio = error / allowed
    return np.where(ratio > 1, ratio, 0.0).sum(axis=(0, 3))


def gradient_grid(
    result: CheckResult, tensor: str, measure: Measure | None
) -> tuple[TensorResult | None, Measure, np.ndarray | None]:
    """``tensor``'s result, the measure to draw it by (``measure_for``) and its grid: ``input_grid`` ``(H, W)``
    for ``input``, ``weight_grids`` ``(C_in, k, k)`` for ``weights``."""
    g = result.gradient(tensor)
    m = measure_for(g, measure)
    grid = input_grid(result, m) if tensor == "input" else weight_grids(result, m)
    return g, m, grid


def finite_top(grid: np.ndarray) -> float:
    """The largest finite cell: the top of a shading scale (infinite cells are drawn full)."""
    finite = grid[np.isfinite(grid)]
    return float(finite.max()) if finite.size else 0.0


def measure_for(g: TensorResult | None, measure: Measure | None) -> Measure:
    """``excess`` for a failing tensor, ``ratio`` for a passing one (where it came closest), unless given."""
    if measure is not None:
        return measure
    return Measure.EXCESS if g is not None and not g.passed else Measure.RATIO


def shown_channels(grids: np.ndarray) -> list[int]:
    """The input channels to draw of ``grids`` ``(C_in, k, k)``: all of them, or the ``MAX_CHANNELS`` with the
    largest total error, in channel order."""
    c_in = grids.shape[0]
    if c_in <= MAX_CHANNELS:
        return list(range(c_in))
    return sorted(np.argsort(-np.nansum(grids, axis=(1, 2)), kind="stable")[:MAX_CHANNELS].tolist())


def has_pattern(grid: np.ndarray | None) -> bool:
    """Whether a grid shows where errors are: some checked cells are zero and some are not. A grid that is
    all errors (or all clean) says nothing the counts do not, so a failure panel leaves it out."""
    if grid is None:
        return False
    checked = np.asarray(grid, dtype=np.float64)[~np.isnan(grid)]
    return bool(np.any(checked > 0) and np.any(checked == 0))


def relative_bound(g: TensorResult) -> float | None:
    """The bound applied to ``g``'s entries as a relative error: the median of ``allowed / |numeric|`` over the
    checked entries with a nonzero numeric value. ``allowed`` is what each entry was really allowed
    (``atol + rtol·|numeric|`` plus its rounding bound), so this is the relative error a typical entry could have
    passed with; it exceeds ``rtol`` by the rounding term. None without per-entry arrays."""
    if g.allowed is None or g.numeric is None:
        return None
    numeric = np.abs(np.asarray(g.numeric, dtype=np.float64))
    allowed = np.asarray(g.allowed, dtype=np.float64)
    usable = np.isfinite(numeric) & (numeric > 0) & np.isfinite(allowed)
    if not usable.any():
        return None
    return float(np.median(allowed[usable] / numeric[usable]))
