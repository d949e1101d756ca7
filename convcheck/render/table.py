"""The terminal's results table: one row per check, designed for an 80-column terminal first.

Some columns always survive, whatever the width: the verdict (first, so no width can push it out), the check's
name (shortened with a legend, then wrapped at its ``[``/``,`` boundaries, never silently cut) and every error
in full ``1.8e-08`` form (input, weights, bias, forward). The other columns are added in ``OPTIONAL`` order
while they fit: on a narrow terminal the lower-priority ones drop first. ``layout_for(results, width)`` makes
that choice as a value, which the tests check at 60 to 200 columns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from convcheck.render.base import FAIL_MARK, PASS_MARK
from convcheck.results import TENSORS, CheckResult, Status, TensorResult
from convcheck.spec import CheckSpec, Layout

__all__ = [
    "ABBREVIATIONS",
    "CAPTION",
    "GAP",
    "NAME_CAP",
    "OPTIONAL",
    "REQUIRED",
    "TableLayout",
    "abbreviate",
    "error_cell",
    "layer_cell",
    "layout_for",
    "legend_for",
    "output_cell",
    "results_table",
    "verdict_cell",
    "wrap_name",
]

#: Columns every width shows, in order (``check`` is the name).
REQUIRED = ("result", "check", *TENSORS, "forward")
#: Columns shown when they fit, highest priority first: a column is shown only if every one before it is.
OPTIONAL = ("checked", "kinks", "method", "layer", "time")
#: How a long check name is shortened (sweep keys in its ``[key=value,…]`` part), with a legend under the table.
ABBREVIATIONS = {
    "stride": "s",
    "padding": "p",
    "filter_size": "k",
    "dilation": "d",
    "groups": "g",
    "in_frames": "f",
    "batch": "n",
    "in_height": "h",
    "in_width": "w",
    "in_depth": "cin",
    "out_depth": "cout",
    "activation": "act",
    "method": "m",
    "dtype": "dt",
    "layout": "lay",
}
GAP = 2  # characters between two columns (one of padding, one of the box's blank divider)
NAME_CAP = 32  # names longer than this (shortened) may wrap rather than push every optional column out


def _fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    if math.isinf(value):
        return "inf"
    return f"{value:.1e}"


def verdict_cell(r: CheckResult) -> Text:
    """``✓ pass`` (``✓ pass ⚠`` with warnings), ``✗ fail``, ``✗ error`` or ``– skipped``: a mark and a word, so
    the verdict reads without colour."""
    if r.status is Status.PASS:
        cell = Text(f"{PASS_MARK} pass", style="bold green")
        if r.warnings:
            cell.append(" ⚠", style="bold yellow")
        return cell
    if r.status is Status.SKIPPED:
        return Text("– skipped", style="yellow")
    return Text(f"{FAIL_MARK} {'error' if r.status is Status.ERROR else 'fail'}", style="bold red")


def error_cell(g: TensorResult | None) -> Text:
    """A gradient's max relative error in full ``1.8e-08`` form (red when it failed); ``—`` when not compared,
    or when the tensor has no entries (the bias of a layer without one). For ``directional`` it is the error of its
    random projections (the caption says so)."""
    if g is None or g.total == 0:
        return Text("—", style="dim")
    return Text(_fmt(g.max_rel_error), style="" if g.passed else "bold red")


def _forward_cell(r: CheckResult) -> Text:
    f = r.forward
    if f is None:
        return Text("—", style="dim")
    return Text(_fmt(f.max_abs_error), style="" if f.ok else "bold red")


def _checked_cell(result: CheckResult) -> str:
    if not result.gradients:
        return "—"
    if any(g.projections for g in result.gradients):
        return f"{sum(g.projections for g in result.gradients)} proj"
    checked = sum(g.checked for g in result.gradients)
    total = sum(g.total for g in result.gradients)
    return f"{checked:,}/{total:,}"


def layer_cell(spec: CheckSpec) -> str:
    """The geometry in the layer's own layout: ``8×32×48×16 → 32, k3 s1 p1`` (N×H×W×C_in → C_out) for nhwc,
    ``nchw 8×16×32×48 → 32, k3 s1 p1`` (N×C_in×H×W) for nchw."""
    nchw = spec.layout is Layout.NCHW
    return ("nchw " if nchw else "") + spec.shape.describe(channels_first=nchw)


def output_cell(spec: CheckSpec) -> str:
    """The output's shape in the layer's layout: ``(N, OH, OW, C_out)`` for nhwc, ``(N, C_out, OH, OW)`` for nchw."""
    n, *spatial, c = spec.shape.out_shape
    dims = (n, c, *spatial) if spec.layout is Layout.NCHW else (n, *spatial, c)
    return "×".join(map(str, dims))


def _cells(r: CheckResult) -> dict[str, Text]:
    kinks = sum(g.kinks for g in r.gradients)
    return {
        "result": verdict_cell(r),
        **{t: error_cell(r.gradient(t)) for t in TENSORS},
        "forward": _forward_cell(r),
        "checked": Text(_checked_cell(r)),
        "kinks": Text(str(kinks) if r.gradients else "—"),
        "method": Text(r.method.value if r.method else "—"),
        "layer": Text(layer_cell(r.spec)),
        "time": Text(f"{r.seconds:.2f} s"),
    }


def abbreviate(name: str) -> tuple[str, set[str]]:
    """``k3[stride=2,padding=1]`` → ``k3[s=2,p=1]`` and the keys shortened."""
    used: set[str] = set()

    def short(match: re.Match[str]) -> str:
        key = match.group(2)
        if key not in ABBREVIATIONS:
            return match.group(0)
        used.add(key)
        return f"{match.group(1)}{ABBREVIATIONS[key]}="

    return re.sub(r"([\[,])([a-z_]+)=", short, name), used


def plain_table(caption: str | None) -> Table:
    """The tables ``run`` and ``validate`` print: a bold header over a rule, no frame, no padding at the edges
    (every column counts at 80 columns), the caption left-aligned under it."""
    return Table(
        caption=caption,
        caption_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )


def wrap_name(name: str, width: int) -> str:
    """Lines of at most ``width`` cells, broken after ``[`` and ``,`` where possible (Rich folds what is left)."""
    pieces = re.findall(r"[^\[,]*[\[,]|[^\[,]+$", name) or [name]
    lines = [""]
    for piece in pieces:
        if lines[-1] and cell_len(lines[-1] + piece) > width:
            lines.append("")
        lines[-1] += piece
    return "\n".join(lines)


def legend_for(keys: set[str]) -> str:
    """The legend of the abbreviated keys, in ``ABBREVIATIONS`` order: ``s = stride, p = padding``."""
    return ", ".join(f"{ABBREVIATIONS[k]} = {k}" for k in sorted(keys, key=list(ABBREVIATIONS).index))


@dataclass(frozen=True)
class TableLayout:
    """How the table fits a width: its columns, the names shown, and the legend of abbreviated keys."""

    columns: tuple[str, ...]
    names: tuple[str, ...]
    name_width: int
    legend: str = ""


def _widths(rows: Sequence[dict[str, Text]]) -> dict[str, int]:
    columns = (*REQUIRED, *OPTIONAL)
    return {c: max([cell_len(c), *(row[c].cell_len for row in rows if c in row)]) for c in columns if c != "check"}


def layout_for(results: Sequence[CheckResult], width: int | None) -> TableLayout:
    """The columns and names for ``width`` (None: as wide as the table wants).

    The required columns always stay; optional ones are added in priority order while the shortened names
    (up to ``NAME_CAP`` cells) still fit beside them. The name then gets what is left: in full if it fits, else
    with sweep keys abbreviated (and a legend), else wrapped.
    """
    widths = _widths([_cells(r) for r in results])
    full = [r.name for r in results]
    natural = max([cell_len("check"), *(cell_len(n) for n in full)])
    shortened = [abbreviate(n) for n in full]
    names = [n for n, _ in shortened]
    fitted = max([cell_len("check"), *(cell_len(n) for n in names)])
    limit = width if width is not None else 10**6
    used = sum(widths[c] + GAP for c in REQUIRED if c != "check")
    columns = list(REQUIRED)
    for column in OPTIONAL:  # an optional column only if the (shortened) names still fit beside it
        if used + widths[column] + GAP + min(fitted, NAME_CAP) > limit:
            break
        columns.append(column)
        used += widths[column] + GAP
    room = max(limit - used, 6)
    if natural <= room:
        return TableLayout(tuple(columns), tuple(full), natural)
    legend = legend_for(set().union(*(k for _, k in shortened)))
    if fitted > room:
        names = [wrap_name(n, room) for n in names]
    return TableLayout(tuple(columns), tuple(names), min(fitted, room), legend)


_RIGHT = {*TENSORS, "forward", "checked", "kinks", "time"}
#: Under the table: what the numbers are (and, when names were shortened, the legend).
CAPTION = "errors: max relative error of each gradient; forward: max |output − reference|"


def results_table(results: Sequence[CheckResult], width: int | None = None) -> Table:
    """One row per check: verdict, name, the max relative error of each gradient, the forward's error, then the
    optional columns that fit ``width`` (the console's; None: all of them)."""
    layout = layout_for(results, width)
    caption = [CAPTION]
    if any(g.projections for r in results for g in r.gradients):
        caption.append("directional checks: errors of random projections of each gradient")
    if layout.legend:
        caption.append(f"names shortened: {layout.legend}")
    table = plain_table("\n".join(caption))
    for column in layout.columns:
        if column == "check":
            table.add_column("check", overflow="fold", min_width=layout.name_width, max_width=layout.name_width)
        else:
            table.add_column(column, justify="right" if column in _RIGHT else "left", no_wrap=True)
    for r, name in zip(results, layout.names, strict=True):
        cells = _cells(r)
        table.add_row(*(Text(name) if c == "check" else cells[c] for c in layout.columns))
    return table
