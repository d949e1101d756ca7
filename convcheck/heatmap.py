"""Heatmaps of where a check's errors are: in the terminal (Rich, shade characters) and as PNG (matplotlib).

Two grids answer "where": the input gradient's error over ``(H, W)``, summed over the batch and the input
channels, and the weight gradient's error over ``(kh, kw)`` for each input channel, summed over the output
channels. A failed forward adds the output's error over ``(OH, OW)``. Border, stride-periodic, corner and
overlap patterns are spatial, so they show in these grids at a glance.

The grids are computed by pure functions (``input_grid``, ``weight_grids``, ``forward_grid``) that return the
numpy arrays the renderers draw, so tests can assert on the pattern itself. Each entry contributes according to
a ``Measure``: by default ``excess``, its error relative to what it was allowed (``|analytic − numeric| /
allowed``) when that is over 1 and 0 when the entry is within tolerance, so a cell is nonzero exactly where
some entry failed. Entries that were not checked (``sampled`` method) contribute nothing; a cell with no
checked entry is NaN and drawn blank.

The terminal renderer draws one character per cell from ``SHADES`` (``·`` for zero, then ``░▒▓█`` by decade
below the grid's maximum; any nonzero cell gets at least ``░``), so the pattern survives ``NO_COLOR``; colours
only reinforce it. Grids larger than ``MAX_ROWS × MAX_COLUMNS`` are shown max-pooled in blocks (a thin line of
errors stays visible), with the original coordinates on the axes.

Shapes follow ``convcheck.spec`` (internal NHWC): dx ``(N, H, W, C_in)``, dw ``(k, k, C_in, C_out)``,
output ``(N, OH, OW, C_out)``.
"""

from __future__ import annotations

import math
import re
import warnings
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.text import Text

from convcheck.results import CheckResult, TensorResult

__all__ = [
    "MAX_COLUMNS",
    "MAX_ROWS",
    "SHADES",
    "Measure",
    "PlotUnavailable",
    "entry_errors",
    "forward_grid",
    "heatmaps",
    "input_grid",
    "render_grid",
    "shade_levels",
    "weight_grids",
    "write_pngs",
]

#: Cell characters: index 0 for a zero cell, 1–4 for nonzero cells by decade below the maximum (``shade_levels``).
SHADES = "·░▒▓█"
#: Cell styles for failing tensors and for passing ones (drawn as error/allowed, all within tolerance).
_STYLES = ("dim", "yellow", "dark_orange", "red", "bold red")
_CALM = ("dim", "dim green", "green", "green", "bold green")
#: The largest grid drawn cell for cell; larger ones are max-pooled in blocks.
MAX_ROWS = 32
MAX_COLUMNS = 64
#: Input channels drawn for the weight gradient (those with the largest error first, when there are more).
MAX_CHANNELS = 16
_WIDTH = 78  # characters a grid may take, labels included, before cells shrink to one character


class Measure(str, Enum):
    """How much one gradient entry contributes to its cell.

    ``excess``: ``|analytic − numeric| / allowed`` where that exceeds 1, else 0 (nonzero exactly where entries
    fail). ``ratio``: ``|analytic − numeric| / allowed`` for every entry (how close a passing check came).
    ``abs``: ``|analytic − numeric|``.
    """

    EXCESS = "excess"
    RATIO = "ratio"
    ABS = "abs"


class PlotUnavailable(ImportError):
    """PNG heatmaps need matplotlib, which is an optional extra."""

    def __init__(self) -> None:
        super().__init__(
            "PNG heatmaps need matplotlib, which is not installed: pip install 'convcheck[plot]' "
            "(or pip install matplotlib)"
        )


# ----------------------------------------------------------------------------------------------------
# Grids (pure)
# ----------------------------------------------------------------------------------------------------


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
    error = np.abs(np.asarray(f.output, dtype=np.float64) - f.reference)
    error = np.where(np.isfinite(error), error, np.inf)
    allowed = f.allowed if f.allowed > 0 else 1.0
    ratio = error / allowed
    return np.where(ratio > 1, ratio, 0.0).sum(axis=(0, 3))


# ----------------------------------------------------------------------------------------------------
# Terminal rendering
# ----------------------------------------------------------------------------------------------------


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


def _legend(top: float, what: str, fr: int = 1, fc: int = 1, calm: bool = False) -> Text:
    legend = Text()
    styles = _CALM if calm else _STYLES
    for level, label in enumerate(("0", "> 0", "≥ max/1000", "≥ max/100", "≥ max/10")):
        legend.append(SHADES[level], style=styles[level])
        legend.append(f" {label}  ")
    legend.append(f"max {top:.3g}: {what}", style="dim")
    if fr > 1 or fc > 1:
        legend.append(f"; a cell shows the max over {fr}×{fc} positions", style="dim")
    return legend


def _top(grid: np.ndarray) -> float:
    """The largest finite cell (the shading scale; infinite cells are drawn full)."""
    finite = grid[np.isfinite(grid)]
    return float(finite.max()) if finite.size else 0.0


def _largest(grid: np.ndarray) -> float:
    """The largest cell, infinite included (for the legend)."""
    return float(np.max(grid, initial=0.0, where=~np.isnan(grid)))


def _what(measure: Measure, summed: str) -> str:
    return {
        Measure.EXCESS: f"Σ error/allowed of the entries over tolerance, over {summed}",
        Measure.RATIO: f"Σ error/allowed over {summed}",
        Measure.ABS: f"Σ |analytic − numeric| over {summed}",
    }[measure]


def _measure_for(g: TensorResult | None, measure: Measure | None) -> Measure:
    """``excess`` for a failing tensor, ``ratio`` for a passing one (where it came closest), unless given."""
    if measure is not None:
        return measure
    return Measure.EXCESS if g is not None and not g.passed else Measure.RATIO


def _status(g: TensorResult | None) -> str:
    if g is None or not g.checked:
        return ""
    if g.passed:
        return " — every entry within tolerance"
    return f" — {g.over_tolerance:,} of {g.checked:,} entries over tolerance"


def _input_panel(result: CheckResult, measure: Measure | None) -> RenderableType | None:
    g = result.gradient("input")
    m = _measure_for(g, measure)
    grid = input_grid(result, m)
    if grid is None:
        return None
    title = Text(f"input gradient error over (h, w), summed over n and c_in{_status(g)}", style="bold")
    _, fr, fc = _pool(grid, MAX_ROWS, MAX_COLUMNS)
    if not np.any(grid > 0):
        return Group(title, Text("no entry over tolerance" if m is Measure.EXCESS else "no error", style="green"))
    calm = g is not None and g.passed
    return Group(
        title, render_grid(grid, calm=calm), _legend(_largest(grid), _what(m, "n and c_in"), fr, fc, calm=calm)
    )


def _weights_panel(result: CheckResult, measure: Measure | None) -> RenderableType | None:
    g = result.gradient("weights")
    m = _measure_for(g, measure)
    grids = weight_grids(result, m)
    if grids is None:
        return None
    c_in = grids.shape[0]
    title = Text(f"weight gradient error over (kh, kw) per input channel, summed over c_out{_status(g)}", style="bold")
    if not np.any(grids > 0):
        return Group(title, Text("no entry over tolerance" if m is Measure.EXCESS else "no error", style="green"))
    totals = np.nansum(grids, axis=(1, 2))
    order = list(range(c_in))
    note = None
    if c_in > MAX_CHANNELS:
        order = sorted(np.argsort(-totals, kind="stable")[:MAX_CHANNELS].tolist())
        note = Text(f"the {MAX_CHANNELS} of {c_in} input channels with the largest error", style="dim")
    top = _top(grids)
    calm = g is not None and g.passed
    cells = []
    for c in order:
        cell = Text()
        cell.append(f"c_in {c}\n", style="dim")
        cell.append_text(render_grid(grids[c], row_axis="kh", col_axis="kw", top=top, calm=calm))
        cells.append(cell)
    parts: list[RenderableType] = [title, Columns(cells, padding=(0, 3))]
    if note is not None:
        parts.append(note)
    parts.append(_legend(_largest(grids), _what(m, "c_out"), calm=calm))
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


# ----------------------------------------------------------------------------------------------------
# PNG (matplotlib, optional)
# ----------------------------------------------------------------------------------------------------


def _matplotlib() -> tuple[Any, Any]:
    """``(Figure, FigureCanvasAgg)``, imported on demand; raises ``PlotUnavailable`` without matplotlib.

    The object-oriented API is used so that no global pyplot state or backend is touched.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailable() from exc
    return Figure, FigureCanvasAgg


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "check"


def _draw(ax: Any, grid: np.ndarray, title: str, xlabel: str, ylabel: str, top: float, calm: bool = False) -> Any:
    """One heatmap on a log colour scale spanning four decades below ``top`` (as the terminal's shades);
    zero cells are white, unchecked cells grey, infinite ones (non-finite analytic values) full; greens for a
    tensor that passed."""
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.ticker import MaxNLocator

    cmap = colormaps["Greens" if calm else "magma_r"].with_extremes(under="white", bad="lightgrey")
    norm = LogNorm(vmin=top * 1e-4, vmax=top) if top > 0 else Normalize(vmin=0, vmax=1)
    shown = np.where(np.isinf(grid), max(top, 1.0), grid)
    shown = np.where(shown > 0, shown, 0.0 if top <= 0 else top * 1e-6)  # below vmin: drawn as "under"
    shown = np.where(np.isnan(grid), np.nan, shown)
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return image


def _short_what(measure: Measure) -> str:
    """A colorbar label."""
    return {
        Measure.EXCESS: "Σ error/allowed, entries over tolerance",
        Measure.RATIO: "Σ error/allowed",
        Measure.ABS: "Σ |analytic − numeric|",
    }[measure]


def _png_status(g: TensorResult | None) -> str:
    return " — within tolerance" if g is not None and g.passed else ""


def write_pngs(result: CheckResult, directory: str | Path, measure: Measure | None = None) -> list[Path]:
    """Write PNG heatmaps of ``result`` into ``directory`` (created if missing).

    Files are named after the check: ``<name>-forward.png`` (when the forward failed), ``<name>-input.png``
    and ``<name>-weights.png`` (one panel per input channel, up to ``MAX_CHANNELS``).

    Args:
        result: any finished check; nothing is written for tensors without arrays.
        directory: where to write.
        measure: as for ``heatmaps``.
    Returns:
        The paths written.
    Raises:
        PlotUnavailable: matplotlib is not installed (the ``plot`` extra).
    """
    Figure, FigureCanvasAgg = _matplotlib()
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = _file_stem(result.name)
    written: list[Path] = []

    def save(fig: Any, suffix: str) -> None:
        path = out_dir / f"{stem}-{suffix}.png"
        FigureCanvasAgg(fig)
        fig.savefig(path, dpi=120)
        written.append(path)

    f = result.forward
    fgrid = forward_grid(result)
    if fgrid is not None and f is not None and not f.ok:
        fig = Figure(figsize=(5, 4), layout="constrained")
        ax = fig.add_subplot()
        image = _draw(ax, fgrid, f"{result.name}: output error (Σ over n, c_out)", "ow", "oh", _top(fgrid))
        fig.colorbar(image, ax=ax, label="Σ |output − reference| / allowed, over tolerance")
        save(fig, "forward")

    g = result.gradient("input")
    m = _measure_for(g, measure)
    grid = input_grid(result, m)
    if grid is not None:
        fig = Figure(figsize=(6, 4.5), layout="constrained")
        ax = fig.add_subplot()
        calm = g is not None and g.passed
        title = f"{result.name}: input gradient error (Σ over n, c_in){_png_status(g)}"
        image = _draw(ax, grid, title, "w", "h", _top(grid), calm)
        fig.colorbar(image, ax=ax, label=_short_what(m))
        save(fig, "input")

    g = result.gradient("weights")
    m = _measure_for(g, measure)
    grids = weight_grids(result, m)
    if grids is not None:
        c_in = grids.shape[0]
        channels = list(range(c_in))
        if c_in > MAX_CHANNELS:
            channels = sorted(np.argsort(-np.nansum(grids, axis=(1, 2)), kind="stable")[:MAX_CHANNELS].tolist())
        cols = min(4, len(channels))
        rows = math.ceil(len(channels) / cols)
        fig = Figure(figsize=(2.4 * cols + 1, 2.2 * rows + 0.6), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        top = _top(grids)
        image = None
        for ax, c in zip(axes.flat, channels, strict=False):
            image = _draw(ax, grids[c], f"c_in {c}", "kw", "kh", top, g is not None and g.passed)
        for ax in list(axes.flat)[len(channels) :]:
            ax.set_axis_off()
        fig.suptitle(f"{result.name}: weight gradient error (Σ over c_out){_png_status(g)}", fontsize=10)
        if image is not None:
            fig.colorbar(image, ax=axes, label=_short_what(m))
        save(fig, "weights")
    return written
