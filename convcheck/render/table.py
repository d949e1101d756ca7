"""The terminal: the results table, a failure panel per check that did not pass, and the summary line.

Gradient indices are shown in the user's layout (``nchw`` users see ``(n, c, h, w)`` and weights
``(c_out, c_in, kh, kw)``). Findings, hints and notes are shown as their ``str()``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from convcheck.render.base import AXES, FAIL_MARK, PASS_MARK, summary_line, user_index
from convcheck.render.heatmap import heatmaps
from convcheck.results import TENSORS, CheckResult, Status, TensorResult
from convcheck.spec import Layout

__all__ = ["LAYER_COLUMN_WIDTH", "explain_text", "failure_panel", "print_results", "results_table"]


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if math.isinf(value):
        return "inf"
    return f"{value:.1e}"


def _tensor_cell(g: TensorResult | None) -> Text:
    if g is None:
        return Text("—", style="dim")
    text = f"{_fmt(g.max_rel_error)}" if not g.projections else f"{_fmt(g.max_rel_error)} ({g.projections}p)"
    return Text(text, style="" if g.passed else "bold red")


def _checked_cell(result: CheckResult) -> str:
    if not result.gradients:
        return "—"
    if any(g.projections for g in result.gradients):
        return f"{sum(g.projections for g in result.gradients)} proj"
    checked = sum(g.checked for g in result.gradients)
    total = sum(g.total for g in result.gradients)
    return f"{checked:,}/{total:,}"


# Narrower than this, the results table leaves out the layer column rather than squeezing every column.
LAYER_COLUMN_WIDTH = 118


def results_table(results: Sequence[CheckResult], width: int | None = None) -> Table:
    """One row per check: name, layer, method, entries checked, max relative errors, kinks, seconds, verdict.

    ``width``: the console's width; below ``LAYER_COLUMN_WIDTH`` the layer column is left out.
    """
    with_layer = width is None or width >= LAYER_COLUMN_WIDTH
    table = Table(
        caption="input, weights, bias: max relative error of each gradient", header_style="bold", pad_edge=False
    )
    # Names, numbers and verdicts never wrap; on a narrow terminal the layer description folds instead.
    table.add_column("check", no_wrap=True, max_width=40)
    if with_layer:
        table.add_column("layer", overflow="fold")
    table.add_column("method", no_wrap=True)
    table.add_column("checked", justify="right", no_wrap=True)
    for tensor in TENSORS:
        table.add_column(tensor, justify="right", no_wrap=True)
    table.add_column("kinks", justify="right", no_wrap=True)
    table.add_column("s", justify="right", no_wrap=True)
    table.add_column("", justify="center", no_wrap=True, min_width=1)
    for r in results:
        mark = Text(PASS_MARK, style="bold green") if r.passed else Text(FAIL_MARK, style="bold red")
        if r.status is Status.ERROR:
            mark = Text(f"{FAIL_MARK} error", style="bold red")
        elif r.status is Status.SKIPPED:
            mark = Text("– skipped", style="yellow")
        elif r.warnings:
            mark.append(" ⚠", style="bold yellow")
        kinks = sum(g.kinks for g in r.gradients)
        table.add_row(
            Text(r.name),  # Text, not a string: names like "k3[stride=2]" are not Rich markup
            *([r.spec.shape.describe()] if with_layer else []),
            r.method.value if r.method else "—",
            _checked_cell(r),
            *(_tensor_cell(r.gradient(t)) for t in TENSORS),
            str(kinks) if r.gradients else "—",
            f"{r.seconds:.2f}",
            mark,
        )
    return table


def _entries_table(g: TensorResult, layout: Layout) -> Table:
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column(f"index ({AXES[layout][g.name]})")
    for column in ("analytic", "numeric", "abs error", "rel error", "allowed"):
        table.add_column(column, justify="right")
    for e in g.worst:
        style = "red" if e.abs_error > e.allowed else ""
        table.add_row(
            str(user_index(g.name, e.index, layout)) + (" kink" if e.at_kink else ""),
            f"{e.analytic:.6g}",
            f"{e.numeric:.6g}",
            _fmt(e.abs_error),
            _fmt(e.rel_error),
            _fmt(e.allowed),
            style=style,
        )
    return table


def failure_panel(result: CheckResult) -> Panel:
    """What went wrong in one failed or errored check: worst entries per failing tensor, forward, contract."""
    parts: list[RenderableType] = []
    layout = result.spec.layout
    if result.error:
        parts.append(Text(result.error))
    for finding in result.contract:
        parts.append(Text(f"contract: {finding!s}", style="red"))
    f = result.forward
    if f is not None and not f.ok:
        where = user_index("input", f.worst_index, layout) if f.worst_index else "?"
        parts.append(
            Text(
                f"forward: output differs from the reference convolution by up to {f.max_abs_error:.3g} "
                f"(allowed {f.allowed:.3g}); at output {where}: got {f.got:.6g}, expected {f.expected:.6g}",
                style="red",
            )
        )
    for g in result.gradients:
        if g.passed:
            continue
        share = g.over_tolerance / g.checked if g.checked else 1.0
        what = f"{g.over_tolerance:,} of {g.checked:,} entries ({share:.1%})" if g.checked else "projections"
        parts.append(Text(f"{g.name} gradient: {what} over tolerance", style="bold red"))
        parts.append(_entries_table(g, layout))
    for hint in result.diagnosis:
        parts.append(Text(f"hint: {hint!s}", style="yellow"))
    parts.extend(heatmaps(result, failing_only=True))
    if result.tolerance:
        t = result.tolerance
        parts.append(
            Text(
                f"eps {t.eps:.3g}, rtol {t.rtol:.3g}, atol {t.atol:.3g}; allowed = atol + rtol·|numeric| + "
                "rounding bound; seed "
                f"{result.spec.seed}",
                style="dim",
            )
        )
    for note in result.notes:
        parts.append(Text(str(note), style="dim"))
    title = Text(f"{FAIL_MARK} {result.name}" + (" (error)" if result.status is Status.ERROR else ""))
    return Panel(Group(*parts), title=title, title_align="left", border_style="red")


def print_results(
    console: Console,
    results: Sequence[CheckResult],
    *,
    quiet: bool = False,
    verbose: bool = False,
    heatmap: bool = False,
) -> None:
    """What ``convcheck run`` prints: the table, a panel per check that did not pass, the summary line.

    ``quiet``: the table lists only the checks that did not pass. ``verbose``: a panel for passing checks too.
    ``heatmap``: the heatmaps of passing checks (failure panels always show theirs).
    """
    shown = results if not quiet else [r for r in results if not r.status.ok]
    if shown:
        console.print(results_table(shown, width=console.width))
    for r in results:
        if r.status is Status.SKIPPED and not quiet:
            reason = "; ".join(map(str, r.notes))
            console.print(Text(f"– {r.name} skipped: {reason}", style="yellow"))
        elif not r.status.ok or verbose:
            console.print(failure_panel(r))
        elif heatmap:
            console.print(Text(f"{r.name}: heatmaps (within tolerance)"))
            for part in heatmaps(r):
                console.print(part)
    console.print(summary_line(results), markup=False, highlight=False)


def explain_text(result: CheckResult, width: int = 120) -> str:
    """The table row and, unless it passed, the failure panel, as plain text (no colour, no terminal codes)."""
    console = Console(width=width, record=True, color_system=None, force_terminal=False, file=io.StringIO())
    console.print(results_table([result]))
    if not result.status.ok:
        console.print(failure_panel(result))
    return console.export_text()
