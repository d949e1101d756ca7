"""Heatmaps in the terminal: the grids of ``grids`` drawn with Rich, one shade character per cell.

The renderer draws one character per cell from ``SHADES`` (``·`` for zero, then ``░▒▓█`` by decade below the
grid's maximum; any nonzero cell gets at least ``░``), so the pattern survives ``NO_COLOR``; colours only
reinforce it. Grids larger than ``MAX_ROWS × MAX_COLUMNS`` are shown max-pooled in blocks (a thin line of
errors stays visible), with the original coordinates on the axes. What a cell sums is in ``grids``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.text import Text

from convcheck.render.grids import MAX_CHANNELS, Measure, finite_top, forward_grid, gradient_grid, shown_channels
from convcheck.results import CheckResult, TensorResult

__all__ = ["MAX_COLUMNS", "MAX_ROWS", "SHADES", "heatmaps", "render_grid", "shade_levels"]

#: Cell characters: index 0 for a zero cell, 1–4 for nonzero cells by decade below the maximum (``shade_levels``).
SHADES = "·░▒▓█"
#: Cell styles for failing tensors and for passing ones (drawn as error/allowed, all within tolerance).
_STYLES = ("dim", "yellow", "dark_orange", "red", "bold red")
_CALM = ("dim", "dim green", "green", "green", "bold green")
#: The largest grid drawn cell for cell; larger ones are max-pooled in blocks.
MAX_ROWS = 32
MAX_COLUMNS = 64
_WIDTH = 78  # characters a grid may take, labels included, before cells shrink to one character


def shade_levels(grid: np.ndarray, top: float | None = None) -> np.ndarray:
    """Shade index per cell, by decades below ``top`` (default: the grid's largest finite value).

    ``4`` within a factor 10 of ``top`` (or infinite), ``3`` within 100, ``2`` within 1000, ``1`` for any other
    nonzero value, ``0`` for zero, ``−1`` for NaN (nothing checked). Errors span orders of magnitude, so a
    linear scale would draw all but the worst cells alike; any nonzero cell is at least ``1``.
    """
    grid = np.asarray(grid, dtype=np.float64)
    finite = grid[np.isfinite(grid)]
    if top is None:
        top = float(finite.max()) if finite.size else 0.0
    levels = np.where(grid > 0, 1, 0)
    if top > 0:
        for level, factor in ((2, 1e-3), (3, 1e-2), (4, 1e-1)):
            levels = np.where(grid >= factor * top, level, levels)
    levels = np.where(np.isinf(grid), 4, levels)
    return np.where(np.isnan(grid), -1, levels)


def _pool(grid: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, int, int]:
    """Max-pool ``grid`` in blocks so it has at most ``rows × cols`` cells; returns it and the block size."""
    fr = max(1, math.ceil(grid.shape[0] / rows))
    fc = max(1, math.ceil(grid.shape[1] / cols))
    if fr == fc == 1:
        return grid, 1, 1
    h, w = math.ceil(grid.shape[0] / fr) * fr, math.ceil(grid.shape[1] / fc) * fc
    padded = np.full((h, w), np.nan)
    padded[: grid.shape[0], : grid.shape[1]] = grid
    blocks = padded.reshape(h // fr, fr, w // fc, fc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a block with nothing checked stays NaN
        pooled = np.nanmax(blocks, axis=(1, 3))
    return pooled, fr, fc


def _cell(level: int, width: int, styles: tuple[str, ...]) -> Text:
    if level < 0:
        return Text(" " * width)
    return Text(SHADES[level] * width, style=styles[level])


def render_grid(
    grid: np.ndarray,
    *,
    row_axis: str = "h",
    col_axis: str = "w",
    top: float | None = None,
    max_rows: int = MAX_ROWS,
    max_cols: int = MAX_COLUMNS,
    calm: bool = False,
) -> Text:
    """A 2-D grid as shade characters with row coordinates on the left and column coordinates on top.

    Args:
        grid: (rows, cols), nonnegative, NaN for cells with nothing checked.
        row_axis, col_axis: the names printed at the corner (``h``/``w``, ``kh``/``kw``, ``oh``/``ow``).
        top: the value drawn as full shade (default: the grid's maximum), to share a scale between grids.
        max_rows, max_cols: larger grids are max-pooled in blocks; the axes keep the original coordinates.
        calm: green instead of red (a tensor that passed); the characters are the same.
    """
    styles = _CALM if calm else _STYLES
    pooled, fr, fc = _pool(np.asarray(grid, dtype=np.float64), max_rows, max_cols)
    levels = shade_levels(pooled, top)
    n_rows, n_cols = levels.shape
    corner = f"{row_axis}\\{col_axis}"
    label_width = max(len(str((n_rows - 1) * fr)), len(corner))
    width = 2 if label_width + 1 + 2 * n_cols <= _WIDTH else 1
    text = Text()
    # column coordinates (original indices) on every cell that leaves room for them: every 1st, 2nd, 5th, …
    widest = len(str((n_cols - 1) * fc))
    step = next(k for k in (1, 2, 5, 10, 20, 50, 100, n_cols) if k * width >= widest + 1)
    header = [" "] * (n_cols * width)
    for j in range(0, n_cols, step):
        label = str(j * fc)
        start = j * width
        if start + len(label) <= len(header) and all(c == " " for c in header[max(0, start - 1) : start + len(label)]):
            header[start : start + len(label)] = label
    text.append(corner.ljust(label_width + 1), style="dim")
    text.append("".join(header).rstrip() + "\n", style="dim")
    for i in range(n_rows):
        text.append(f"{i * fr:>{label_width}} ", style="dim")
        for j in range(n_cols):
            text.append_text(_cell(int(levels[i, j]), width, styles))
        text.append("\n")
    text.rstrip()
    return text


def _calm_top(g: TensorResult | None, summed: tuple[int, ...]) -> float | None:
    """The top of a passing tensor's scale: the number of entries a cell sums, so that a full shade means every
    entry at its bound (error/allowed = 1). Scaling a passing grid to its own maximum would draw it solid."""
    if g is None or g.analytic is None or g.analytic.ndim != 4:
        return None
    return float(math.prod(g.analytic.shape[axis] for axis in summed))


def _legend(top: float, what: str, fr: int = 1, fc: int = 1, calm: bool = False, scale: bool = False) -> Text:
    """The shades' meaning; ``scale``: ``top`` is the tolerance (every entry of a cell at its bound)."""
    legend = Text()
    styles = _CALM if calm else _STYLES
    for level, label in enumerate(("0", "> 0", "≥ max/1000", "≥ max/100", "≥ max/10")):
        legend.append(SHADES[level], style=styles[level])
        legend.append(f" {label}  ")
    if scale:
        legend.append(f"max {top:.3g} (every entry at its bound): {what}", style="dim")
    else:
        legend.append(f"max {top:.3g}: {what}", style="dim")
    if fr > 1 or fc > 1:
        legend.append(f"; a cell shows the max over {fr}×{fc} positions", style="dim")
    return legend


def _largest(grid: np.ndarray) -> float:
    """The largest cell, infinite included (for the legend)."""
    return float(np.max(grid, initial=0.0, where=~np.isnan(grid)))


def _what(measure: Measure, summed: str) -> str:
    return {
        Measure.EXCESS: f"Σ error/allowed of the entries over tolerance, over {summed}",
        Measure.RATIO: f"Σ error/allowed over {summed}",
        Measure.ABS: f"Σ |analytic − numeric| over {summed}",
    }[measure]


def _status(g: TensorResult | None) -> str:
    if g is None or not g.checked:
        return ""
    if g.passed:
        return " — every entry within tolerance"
    return f" — {g.over_tolerance:,} of {g.checked:,} entries over tolerance"


def _input_panel(result: CheckResult, measure: Measure | None) -> RenderableType | None:
    g, m, grid = gradient_grid(result, "input", measure)
    if grid is None:
        return None
    title = Text(f"input gradient error over (h, w), summed over n and c_in{_status(g)}", style="bold")
    _, fr, fc = _pool(grid, MAX_ROWS, MAX_COLUMNS)
    if not np.any(grid > 0):
        return Group(title, Text("no entry over tolerance" if m is Measure.EXCESS else "no error", style="green"))
    calm = g is not None and g.passed
    top = _calm_top(g, (0, 3)) if calm and m is Measure.RATIO else None
    legend = _legend(top or _largest(grid), _what(m, "n and c_in"), fr, fc, calm=calm, scale=top is not None)
    return Group(title, render_grid(grid, calm=calm, top=top), legend)


def _weights_panel(result: CheckResult, measure: Measure | None) -> RenderableType | None:
    g, m, grids = gradient_grid(result, "weights", measure)
    if grids is None:
        return None
    c_in = grids.shape[0]
    title = Text(f"weight gradient error over (kh, kw) per input channel, summed over c_out{_status(g)}", style="bold")
    if not np.any(grids > 0):
        return Group(title, Text("no entry over tolerance" if m is Measure.EXCESS else "no error", style="green"))
    order = shown_channels(grids)
    note = None
    if c_in > MAX_CHANNELS:
        note = Text(f"the {MAX_CHANNELS} of {c_in} input channels with the largest error", style="dim")
    calm = g is not None and g.passed
    scale = _calm_top(g, (3,)) if calm and m is Measure.RATIO else None
    top = scale or finite_top(grids)
    cells = []
    for c in order:
        cell = Text()
        cell.append(f"c_in {c}\n", style="dim")
        cell.append_text(render_grid(grids[c], row_axis="kh", col_axis="kw", top=top, calm=calm))
        cells.append(cell)
    parts: list[RenderableType] = [title, Columns(cells, padding=(0, 3))]
    if note is not None:
        parts.append(note)
    parts.append(_legend(scale or _largest(grids), _what(m, "c_out"), calm=calm, scale=scale is not None))
    return Group(*parts)


def _forward_panel(result: CheckResult) -> RenderableType | None:
    f = result.forward
    grid = forward_grid(result)
    if grid is None or f is None or f.ok:
        return None
    title = Text("output error over (oh, ow), summed over n and c_out", style="bold")
    _, fr, fc = _pool(grid, MAX_ROWS, MAX_COLUMNS)
    what = "Σ |output − reference| / allowed of the entries over tolerance, over n and c_out"
    return Group(title, render_grid(grid, row_axis="oh", col_axis="ow"), _legend(_largest(grid), what, fr, fc))


def heatmaps(result: CheckResult, measure: Measure | None = None, failing_only: bool = False) -> list[RenderableType]:
    """Rich renderables showing where a check's errors are: the output (when the forward failed), the input
    gradient over ``(H, W)`` and the weight gradient over ``(kh, kw)`` per input channel.

    Args:
        result: any finished check; tensors without arrays (directional, errored) are left out.
        measure: per-entry contribution; None: ``excess`` for a failing tensor, ``ratio`` for a passing one.
        failing_only: leave out the gradients that passed (a failure panel shows only where it is wrong).
    Returns:
        Zero to three renderables, for a panel or a console.
    """

    def shown(name: str) -> bool:
        g = result.gradient(name)
        return not failing_only or (g is not None and not g.passed)

    parts = [
        _forward_panel(result),
        _input_panel(result, measure) if shown("input") else None,
        _weights_panel(result, measure) if shown("weights") else None,
    ]
    return [p for p in parts if p is not None]
