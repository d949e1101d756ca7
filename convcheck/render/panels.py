"""The terminal: a panel per check worth explaining, the results table above them, and the summary line.

A panel reads top down as an answer: first what failed and why (the hint), then at most ``WORST_SHOWN`` worst
entries of each tensor, the heatmaps only when they show a pattern (or when asked), the notes, and last the
tolerance, stated as the bound that was really applied. Gradient indices are in the user's layout (``nchw``
users see ``(n, c, h, w)`` and weights ``(c_out, c_in, kh, kw)``). Findings, hints and notes are shown as their
``str()``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from convcheck.render.base import AXES, FAIL_MARK, PASS_MARK, summary_line, user_index
from convcheck.render.grids import forward_grid, gradient_grid, has_pattern, relative_bound
from convcheck.render.heatmap import heatmaps
from convcheck.render.table import results_table
from convcheck.results import CheckResult, NoteKind, Status, TensorResult
from convcheck.spec import Layout
from convcheck.sweeps import condition_of

__all__ = ["WORST_SHOWN", "check_panel", "digest", "explain_text", "failure_panel", "print_results", "tolerance_line"]

#: Worst entries a panel lists per tensor.
WORST_SHOWN = 5


def _fmt(value: float) -> str:
    return f"{value:.1e}"


def _entries_table(g: TensorResult, layout: Layout) -> Table:
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column(f"index ({AXES[layout][g.name]})", overflow="fold")
    for column in ("analytic", "numeric", "abs error", "allowed", "rel error"):
        table.add_column(column, justify="right", overflow="fold")  # a narrow panel wraps values, never cuts
    for e in g.worst[:WORST_SHOWN]:
        table.add_row(
            str(user_index(g.name, e.index, layout)) + (" kink" if e.at_kink else ""),
            f"{e.analytic:.6g}",
            f"{e.numeric:.6g}",
            _fmt(e.abs_error),
            _fmt(e.allowed),
            _fmt(e.rel_error),
            style="red" if e.abs_error > e.allowed else "",
        )
    return table


def _tensor_headline(g: TensorResult) -> Text:
    if g.passed:
        plural = "" if g.projections == 1 else "s"
        what = f"all {g.checked:,} checked entries" if g.checked else f"{g.projections} projection{plural}"
        return Text(f"{PASS_MARK} {g.name} gradient: {what} within tolerance", style="green")
    share = g.over_tolerance / g.checked if g.checked else 1.0
    what = f"{g.over_tolerance:,} of {g.checked:,} entries ({share:.1%})" if g.checked else "its projections"
    return Text(f"{FAIL_MARK} {g.name} gradient: {what} over tolerance", style="bold red")


def _what_failed(result: CheckResult) -> list[RenderableType]:
    """The first lines: the error, the contract findings, the forward and each failing gradient, then the hints."""
    layout = result.spec.layout
    parts: list[RenderableType] = []
    if result.error:
        parts.append(Text(f"{FAIL_MARK} could not run: {result.error}", style="bold red"))
    parts.extend(Text(f"{FAIL_MARK} contract: {finding!s}", style="red") for finding in result.contract)
    f = result.forward
    if f is not None and not f.ok:
        where = user_index("input", f.worst_index, layout) if f.worst_index else "?"
        parts.append(
            Text(
                f"{FAIL_MARK} forward: output differs from the reference convolution by up to "
                f"{f.max_abs_error:.3g} (allowed {f.allowed:.3g}); at output {where}: got {f.got:.6g}, "
                f"expected {f.expected:.6g}",
                style="bold red",
            )
        )
    parts.extend(_tensor_headline(g) for g in result.gradients if not g.passed)
    parts.extend(Text(f"hint: {hint!s}", style="yellow") for hint in result.diagnosis)
    return parts


def _patterned(result: CheckResult) -> bool:
    """Whether any failing grid shows a pattern (some cells wrong, some right)."""
    grids = [gradient_grid(result, g.name, None)[2] for g in result.gradients if not g.passed]
    if result.forward is not None and not result.forward.ok:
        grids.append(forward_grid(result))
    return any(has_pattern(grid) for grid in grids)


def tolerance_line(result: CheckResult) -> Text | None:
    """The step and tolerances, and the bound each gradient's entries were really held to as a relative error
    (``rtol`` plus the rounding term: the median of allowed/|numeric|); None when the check did not get that far."""
    t = result.tolerance
    if t is None:
        return None
    bounds = [(g.name, relative_bound(g)) for g in result.gradients]
    applied = ", ".join(f"{name} {bound:.2g}" for name, bound in bounds if bound is not None)
    text = (
        f"tolerance: eps {t.eps:.3g}, rtol {t.rtol:.3g}, atol {t.atol:.3g}, seed {result.spec.seed}; each entry "
        "is allowed atol + rtol·|numeric| + its rounding bound"
    )
    if applied:
        text += f"; as a relative error, for the median entry: {applied}"
    return Text(text, style="dim")


def check_panel(result: CheckResult, *, verbose: bool = False, heatmap: bool = False) -> Panel:
    """One check explained: red with ``✗`` when it did not pass, green with ``✓`` when it did (``-v``).

    ``verbose``: every tensor's worst entries (passing ones too) and the heatmaps whatever they show.
    ``heatmap``: the heatmaps whatever they show.
    """
    passed = result.status is Status.PASS
    parts = _what_failed(result)
    for g in result.gradients:
        if g.worst and (not g.passed or verbose):
            if g.passed:
                parts.append(_tensor_headline(g))
            parts.append(_entries_table(g, result.spec.layout))
    if verbose or heatmap or (not passed and _patterned(result)):
        parts.extend(heatmaps(result, failing_only=not (passed or verbose or heatmap)))
    # how auto chose its method is for -v; every other note (fallbacks, precision, the forward) always shows
    notes = [n for n in result.notes if verbose or n.kind is not NoteKind.METHOD_CHOSEN]
    parts.extend(Text(str(note), style="dim") for note in notes)
    tolerance = tolerance_line(result)
    if tolerance is not None:
        parts.append(tolerance)
    mark = PASS_MARK if passed else FAIL_MARK
    title = Text(f"{mark} {result.name}" + (" (error)" if result.status is Status.ERROR else ""))
    return Panel(Group(*parts), title=title, title_align="left", border_style="green" if passed else "red")


def failure_panel(result: CheckResult) -> Panel:
    """What went wrong in one failed or errored check (``check_panel`` without the verbose extras)."""
    return check_panel(result)


def _reason(result: CheckResult) -> str:
    """What a check that did not pass is about, in a few words: its first hint's label, else what failed."""
    if result.diagnosis:
        return result.diagnosis[0].label
    if result.status is Status.ERROR:
        return "could not run"
    wrong = [g.name for g in result.gradients if not g.passed]
    if result.forward is not None and not result.forward.ok:
        wrong.insert(0, "forward")
    if result.contract:
        wrong.insert(0, "contract")
    return ", ".join(wrong) + " wrong" if wrong else "failed"


def digest(results: Sequence[CheckResult]) -> list[Text]:
    """One line per reason, naming the checks that did not pass for it (like pytest's short summary), so the
    last screen of a long report still says what is wrong."""
    groups: dict[str, list[str]] = {}
    for r in results:
        if not r.status.ok:
            groups.setdefault(_reason(r), []).append(r.name)
    return [Text(f"{FAIL_MARK} {reason}: {', '.join(names)}", style="red") for reason, names in groups.items()]


def print_results(
    console: Console,
    results: Sequence[CheckResult],
    *,
    quiet: bool = False,
    verbose: bool = False,
    heatmap: bool = False,
    not_run: Sequence[str] = (),
) -> None:
    """What ``convcheck run`` prints: the table, a panel per check that did not pass, the summary line.

    ``quiet``: only the rows of the checks that did not pass, and the summary. ``verbose``: a panel for every
    check, passing ones too, with their worst entries. ``heatmap``: the heatmaps of every check.
    ``not_run``: the checks the run stopped before (counted as skipped).
    """
    shown = [r for r in results if not r.status.ok] if quiet else list(results)
    if shown:
        console.print(results_table(shown, width=console.width))
    sweep = condition_of(results)  # e.g. "all 17 failures have padding = 0; all 27 passes have padding ≥ 1"
    if sweep is not None:
        console.print(Text(sweep.sentence, style="bold"))
    if not quiet:
        for r in results:
            if r.status is Status.SKIPPED:  # refused by the layer as its config expects: the reason, one line
                console.print(Text(f"– {r.name} skipped: " + "; ".join(map(str, r.notes)), style="yellow"))
        panels = [r for r in results if r.status is not Status.SKIPPED and (not r.passed or verbose or heatmap)]
        for r in panels:
            console.print(check_panel(r, verbose=verbose, heatmap=heatmap))
        if any(not r.status.ok for r in panels):
            for line in digest(results):
                console.print(line)
    console.print(summary_line(results, not_run), markup=False, highlight=False)


def explain_text(result: CheckResult, width: int = 120) -> str:
    """The table row and, unless it passed, the failure panel, as plain text (no colour, no terminal codes)."""
    console = Console(width=width, record=True, color_system=None, force_terminal=False, file=io.StringIO())
    console.print(results_table([result], width=width))
    if not result.status.ok:
        console.print(failure_panel(result))
    return console.export_text()
