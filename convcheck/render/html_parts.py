"""The pieces of the HTML report: elements whose text is always escaped, and the heatmaps as inline SVG.

``element`` is the one way the report makes HTML: every ``str`` it is given (a check's name, an error message, a
hint) is escaped, and only ``Markup`` (what ``element`` itself returns) passes through as it is. So a check named
``<script>`` shows as that text, and no caller has to remember to escape.

The heatmaps draw the same grids as the terminal's (``grids``: the input gradient over ``(h, w)``, the weight
gradient over ``(kh, kw)`` per input channel, the output over ``(oh, ow)`` when the forward failed), with the
terminal's five shades (``heatmap.shade_levels``: zero, then by decade below the grid's maximum) as colours.
Cells with nothing checked are white. A grid larger than ``MAX_CELLS`` on a side is max-pooled in blocks, so a
thin line of errors stays visible. Each shade is one SVG ``path`` made of the runs of equal cells along a row,
so a grid costs bytes in proportion to its pattern's edges, not to its size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from html import escape

import numpy as np

from convcheck.render.grids import MAX_CHANNELS, finite_top, forward_grid, gradient_grid, shown_channels
from convcheck.render.heatmap import shade_levels
from convcheck.results import CheckResult

__all__ = ["MAX_CELLS", "SHADE_COLOURS", "Markup", "element", "heatmap_figures", "join", "svg_grid"]

#: The largest number of cells drawn along either side of a grid; larger grids are max-pooled in blocks.
MAX_CELLS = 96
#: Fill of each shade level (0: no entry over tolerance, then ``> 0``, ``≥ max/1000``, ``≥ max/100``, ``≥ max/10``).
SHADE_COLOURS = ("#eef1f4", "#fde68a", "#fb923c", "#dc2626", "#7f1d1d")
SHADE_LABELS = ("0", "> 0", "≥ max/1000", "≥ max/100", "≥ max/10")
_UNCHECKED = "#ffffff"
_VOID = frozenset({"meta", "input", "br", "hr", "img", "link"})


class Markup(str):
    """Text that is HTML already (made by ``element``): it is inserted as it is, never escaped again."""


def _text(child: object) -> str:
    if child is None or child is False:
        return ""
    if isinstance(child, Markup):
        return child
    if isinstance(child, str | int | float):
        return escape(str(child), quote=False)
    if isinstance(child, Iterable):
        return "".join(_text(c) for c in child)
    raise TypeError(f"cannot put a {type(child).__name__} into HTML")


def join(*children: object) -> Markup:
    """Several children side by side, escaped as ``element`` escapes them."""
    return Markup(_text(children))


def element(tag: str, *children: object, **attributes: object) -> Markup:
    """``<tag attributes>children</tag>``; text children and attribute values are escaped.

    Attribute names are the keywords with ``_`` as ``-`` and a trailing ``_`` dropped (``class_``, ``data_sort``,
    ``aria_label``); None and False leave an attribute out, True writes it bare (``open``, ``hidden``).
    """
    parts = [tag]
    for key, value in attributes.items():
        if value is None or value is False:
            continue
        name = key.rstrip("_").replace("_", "-")
        parts.append(name if value is True else f'{name}="{escape(str(value), quote=True)}"')
    opening = "<" + " ".join(parts) + ">"
    if tag in _VOID:
        return Markup(opening)
    return Markup(f"{opening}{_text(children)}</{tag}>")


def _pooled(grid: np.ndarray) -> tuple[np.ndarray, int, int]:
    """``grid`` max-pooled in blocks so that neither side exceeds ``MAX_CELLS``; a block of unchecked cells
    stays NaN. Returns the grid and the block's rows and columns."""
    rows, cols = grid.shape
    fr, fc = math.ceil(rows / MAX_CELLS), math.ceil(cols / MAX_CELLS)
    if fr == fc == 1:
        return grid, 1, 1
    filled = np.where(np.isnan(grid), -np.inf, grid)  # cells are ≥ 0, ∞ or NaN: -∞ marks "nothing checked"
    pooled = np.maximum.reduceat(filled, np.arange(0, rows, fr), axis=0)
    pooled = np.maximum.reduceat(pooled, np.arange(0, cols, fc), axis=1)
    return np.where(pooled == -np.inf, np.nan, pooled), fr, fc


def _runs(levels: np.ndarray, level: int, size: int, left: int, top: int) -> str:
    """SVG path data covering the cells of ``level``: one rectangle per run of them along a row."""
    data = []
    for i, row in enumerate(levels):
        j = 0
        while j < len(row):
            if row[j] != level:
                j += 1
                continue
            start = j
            while j < len(row) and row[j] == level:
                j += 1
            data.append(f"M{left + start * size} {top + i * size}h{(j - start) * size}v{size}h{(start - j) * size}z")
    return "".join(data)


def _ticks(count: int, block: int, size: int) -> list[int]:
    """The cells whose original coordinate is written on an axis: every 1st, 2nd, 5th, … so labels never touch."""
    widest = 7 * len(str((count - 1) * block)) + 4  # pixels a label takes, at the axes' font size
    step = next((k for k in (1, 2, 5, 10, 20, 50, 100) if k * size >= widest), count)
    return list(range(0, count, step))


def svg_grid(
    grid: np.ndarray, *, row_axis: str, col_axis: str, label: str, top: float | None = None
) -> tuple[Markup, int, int]:
    """A 2-D grid (rows, cols; ≥ 0, ∞, or NaN where nothing was checked) as an inline SVG heatmap.

    Args:
        grid: the cells; ``top`` is the value drawn as the darkest shade (default: the grid's largest).
        row_axis, col_axis: the axes' names (``h``/``w``, ``kh``/``kw``, ``oh``/``ow``), written at the corner.
        label: what the grid shows, for screen readers and as the SVG's title.
    Returns:
        The SVG and the block size ``(rows, cols)`` it was pooled by (1, 1: cell for cell).
    """
    pooled, fr, fc = _pooled(np.asarray(grid, dtype=np.float64))
    levels = shade_levels(pooled, top)
    n_rows, n_cols = levels.shape
    size = max(4, min(18, 420 // max(n_rows, n_cols)))
    corner = f"{row_axis}\\{col_axis}"
    left, top_margin = max(8 + 7 * len(str((n_rows - 1) * fr)), 7 * len(corner)), 16
    width, height = left + n_cols * size + 1, top_margin + n_rows * size + 1
    shapes = [
        element("rect", x=left, y=top_margin, width=n_cols * size, height=n_rows * size, fill=SHADE_COLOURS[0]),
    ]
    for level, colour in ((-1, _UNCHECKED), *enumerate(SHADE_COLOURS)):
        if level != 0 and (data := _runs(levels, level, size, left, top_margin)):
            shapes.append(element("path", d=data, fill=colour))
    labels = [element("text", corner, x=1, y=11, class_="corner")]
    labels += [
        element("text", j * fc, x=left + j * size + size / 2, y=11, text_anchor="middle")
        for j in _ticks(n_cols, fc, size)
    ]
    labels += [
        element("text", i * fr, x=left - 3, y=top_margin + i * size + size / 2 + 4, text_anchor="end")
        for i in _ticks(n_rows, fr, max(size, 12))
    ]
    svg = element(
        "svg",
        element("title", label),
        element("g", shapes, shape_rendering="crispEdges"),
        element("g", labels, class_="axis"),
        xmlns="http://www.w3.org/2000/svg",
        width=width,
        height=height,
        viewBox=f"0 0 {width} {height}",
        role="img",
        aria_label=label,
        class_="heatmap",
    )
    return svg, fr, fc


def _legend(top: float, what: str, blocks: tuple[int, int]) -> Markup:
    swatches = [
        element("span", element("i", style=f"background:{colour}"), label, class_="swatch")
        for colour, label in zip(SHADE_COLOURS, SHADE_LABELS, strict=True)
    ]
    swatches.append(element("span", element("i", style=f"background:{_UNCHECKED}"), "not checked", class_="swatch"))
    text = f"max {top:.3g}: {what}"
    if blocks != (1, 1):
        text += f"; a cell shows the max over {blocks[0]}×{blocks[1]} positions"
    return element("p", swatches, element("span", text), class_="legend")


def _largest(grid: np.ndarray) -> float:
    return float(np.max(grid, initial=0.0, where=~np.isnan(grid)))


def _figure(caption: str, body: object, legend: Markup) -> Markup:
    return element("figure", element("figcaption", caption), body, legend)


def heatmap_figures(result: CheckResult) -> list[Markup]:
    """Where a failing check's errors are: a figure per grid of the forward (when it failed) and of each
    failing gradient, with the shades' legend. Tensors without per-entry arrays (directional, errored) have none.

    Each entry contributes its error relative to what it was allowed when that is over 1, else 0
    (``grids.Measure.EXCESS``), so a coloured cell is exactly where some entry failed.
    """
    figures = []
    grid = forward_grid(result) if result.forward is not None and not result.forward.ok else None
    if grid is not None:
        svg, fr, fc = svg_grid(grid, row_axis="oh", col_axis="ow", label="output error over (oh, ow)")
        what = "Σ |output − reference| / allowed of the entries over tolerance, over n and c_out"
        figures.append(
            _figure("output error over (oh, ow), summed over n and c_out", svg, _legend(_largest(grid), what, (fr, fc)))
        )
    g, _, grid = gradient_grid(result, "input", None)
    if g is not None and not g.passed and grid is not None:
        svg, fr, fc = svg_grid(grid, row_axis="h", col_axis="w", label="input gradient error over (h, w)")
        what = "Σ error/allowed of the entries over tolerance, over n and c_in"
        caption = (
            f"input gradient error over (h, w), summed over n and c_in: {g.over_tolerance:,} of {g.checked:,} "
            "entries over tolerance"
        )
        figures.append(_figure(caption, svg, _legend(_largest(grid), what, (fr, fc))))
    g, _, grids = gradient_grid(result, "weights", None)
    if g is not None and not g.passed and grids is not None:
        figures.append(_weight_figure(grids, g.over_tolerance, g.checked))
    return figures


def _weight_figure(grids: np.ndarray, over: int, checked: int) -> Markup:
    """The weight gradient's grids, one per input channel (at most ``MAX_CHANNELS``), on one shared scale."""
    top = finite_top(grids)
    cells = []
    for c in shown_channels(grids):
        svg, _, _ = svg_grid(grids[c], row_axis="kh", col_axis="kw", label=f"weight gradient error, c_in {c}", top=top)
        cells.append(element("div", element("span", f"c_in {c}", class_="channel"), svg, class_="cell"))
    caption = (
        f"weight gradient error over (kh, kw) per input channel, summed over c_out: {over:,} of {checked:,} "
        "entries over tolerance"
    )
    if grids.shape[0] > MAX_CHANNELS:
        caption += f" (the {MAX_CHANNELS} of {grids.shape[0]} input channels with the largest error)"
    legend = _legend(_largest(grids), "Σ error/allowed of the entries over tolerance, over c_out", (1, 1))
    return _figure(caption, element("div", cells, class_="channels"), legend)
