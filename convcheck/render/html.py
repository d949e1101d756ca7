"""The ``--html`` report: one self-contained file that opens offline in any browser, nothing fetched.

Top down: the summary (the counts, the verdict, what the exit code means, and the sweep's condition when
``convcheck.sweeps`` finds one), a table of every check that sorts by any column and filters by text and by
status, a panel per check that did not pass (what failed, the hints, the worst entries, the notes, the tolerance
and the heatmaps: the terminal panel's content, from the same typed results), and for a sweep a grid whose two
axes are hyperparameters the reader chooses, each cell coloured by the verdicts of its checks.

The style sheet, the script and the heatmaps (SVG) are inline, and a Content-Security-Policy forbids the page
any request, so it reads the same on a laptop, as a CI artifact or attached to an issue. Every user-provided
string (names, paths, messages) is escaped (``html_parts.element``); the checks' values for the grid travel in
a JSON block whose ``<``, ``>`` and ``&`` are escaped, read by ``JSON.parse``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from convcheck.exitcodes import ExitCode
from convcheck.render.base import AXES, FAIL_MARK, PASS_MARK, Run, counts, summary_line, user_index
from convcheck.render.html_assets import SCRIPT, STYLE
from convcheck.render.html_parts import Markup, element, heatmap_figures
from convcheck.render.panels import WORST_SHOWN, tolerance_line
from convcheck.results import CheckResult, NoteKind, Status, TensorResult
from convcheck.sweeps import SweepCondition, condition_of, features

__all__ = ["EXIT_MEANINGS", "MAX_HEATMAP_PANELS", "grid_axes", "render"]

#: Failing checks whose panels draw heatmaps; the panels of further ones say so (a 300-check sweep stays small).
MAX_HEATMAP_PANELS = 100
#: What each exit code of ``convcheck run`` means (README, "Exit codes").
EXIT_MEANINGS = {
    ExitCode.OK: "every check passed",
    ExitCode.FAILED: "at least one check failed, or its implementation raised, crashed or timed out",
    ExitCode.INTERRUPTED: "interrupted: this report holds the checks that finished",
}
#: The policy of the page: inline style, script and images only; no request of any kind.
_POLICY = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
_TENSORS = ("input", "weights", "bias")
_STATUS_TEXT = {
    Status.PASS: f"{PASS_MARK} pass",
    Status.FAIL: f"{FAIL_MARK} fail",
    Status.ERROR: f"{FAIL_MARK} error",
    Status.SKIPPED: "– skipped",
}


def render(results: Sequence[CheckResult], run: Run) -> str:
    """The whole HTML document (``base.Document``): summary, table, panels and the sweep's grid."""
    sweep = condition_of(results)
    panels = _panel_ids(results)
    body = [
        _summary(results, run, sweep),
        _checks_table(results, run, panels),
        _panels_section(results, panels),
        _grid_section(results, sweep),
        element("script", Markup(_data(results, panels)), type="application/json", id="convcheck-data"),
        element("script", Markup(SCRIPT)),
    ]
    head = element(
        "head",
        element("meta", charset="utf-8"),
        element("meta", http_equiv="Content-Security-Policy", content=_POLICY),
        element("meta", name="viewport", content="width=device-width, initial-scale=1"),
        element("title", f"convcheck report: {summary_line(results, run.not_run)}"),
        element("style", Markup(STYLE)),
    )
    return "<!DOCTYPE html>\n" + element("html", head, element("body", body), lang="en") + "\n"


def _panel_ids(results: Sequence[CheckResult]) -> dict[int, str]:
    """The element id of each check's panel, by its position: the checks that failed or could not run."""
    return {i: f"check-{i}" for i, r in enumerate(results) if r.status in (Status.FAIL, Status.ERROR)}


def _exit_code(results: Sequence[CheckResult], run: Run) -> ExitCode:
    if run.interrupted:
        return ExitCode.INTERRUPTED
    return ExitCode.for_results(results, run.not_run)


def _summary(results: Sequence[CheckResult], run: Run, sweep: SweepCondition | None) -> Markup:
    c = counts(results, run.not_run)
    code = _exit_code(results, run)
    not_ok = c["failed"] + c["errors"]
    if run.interrupted:
        verdict, kind = f"interrupted after {len(results)} of {c['total']} checks", "interrupted"
    elif code is ExitCode.OK and c["skipped"]:
        verdict, kind = (
            f"{PASS_MARK} {c['passed']} checks passed, {c['skipped']} skipped as their configs expect",
            "pass",
        )
    elif code is ExitCode.OK:
        verdict, kind = f"{PASS_MARK} every check passed ({c['total']})", "pass"
    else:
        verdict, kind = f"{FAIL_MARK} {not_ok} of {c['total']} checks did not pass", "fail"
    items = [
        element("li", element("strong", c[key]), label, class_=f"count-{key}")
        for key, label in (
            ("total", "checks"),
            ("passed", "passed"),
            ("failed", "failed"),
            ("errors", "errors"),
            ("skipped", "skipped"),
            ("warnings", "warnings"),
        )
    ]
    code_text = f"exit code {int(code)}: {EXIT_MEANINGS[code]}"
    if code is not ExitCode.INTERRUPTED:
        code_text += " (4 or 5 instead when another output file could not be written)"
    return element(
        "header",
        element("h1", "convcheck report"),
        element("p", verdict, class_=f"verdict {kind}", id="verdict"),
        element("ul", items, class_="counts"),
        element("p", code_text, class_="exit-code", id="exit-code"),
        element("p", sweep.sentence, class_="sweep", id="sweep") if sweep is not None else None,
        element("p", f"convcheck {run.version}; suite {run.suite}", class_="meta"),
    )


def _number(value: float | None) -> str:
    """A cell's sort key: the number as text (``Infinity`` for ∞), empty when there is none."""
    if value is None or math.isnan(value):
        return ""
    return "Infinity" if value == math.inf else repr(value)


def _gradient_cell(g: TensorResult | None) -> Markup:
    if g is None or g.total == 0:  # not compared, or no entries (the bias of a layer without one)
        return element("td", "—", class_="num", data_sort="")
    shown = "nan" if math.isnan(g.max_rel_error) else f"{g.max_rel_error:.1e}"
    mark = "" if g.passed else f" {FAIL_MARK}"
    return element("td", shown + mark, class_="num" if g.passed else "num over", data_sort=_number(g.max_rel_error))


def _reason(r: CheckResult) -> str:
    """A few words on what a check that did not pass is about: its first hint's label, else what failed."""
    if r.status is Status.SKIPPED:
        return "; ".join(map(str, r.notes)) or "skipped"
    if r.status.ok:
        return "; ".join(f"warning: {w!s}" for w in r.warnings)
    return r.diagnosis[0].label if r.diagnosis else _headline(r)


def _breakable(name: str) -> list[str | Markup]:
    """A check's name with a line-break opportunity after each comma (``sweep[stride=2,<wbr>padding=1]``)."""
    parts: list[str | Markup] = []
    for i, piece in enumerate(name.split(",")):
        parts += [Markup(",<wbr>"), piece] if i else [piece]
    return parts


def _row(index: int, r: CheckResult, panel: str | None) -> Markup:
    status = r.status.value
    name = element("a", _breakable(r.name), href=f"#{panel}") if panel else _breakable(r.name)
    source = f"{r.spec.source.file}:{r.spec.source.line}" if r.spec.source else ""
    cells = [
        element("td", _STATUS_TEXT[r.status], class_=f"status {status}", data_sort=status),
        element("td", name, class_="name", data_sort=r.name),
        element("td", r.spec.shape.describe(), class_="mono layer"),
        element("td", r.method.value if r.method else r.spec.method.value),
        element("td", r.spec.dtype.value),
        *(_gradient_cell(r.gradient(t)) for t in _TENSORS),
        element("td", f"{r.forward_passes:,}", class_="num", data_sort=r.forward_passes),
        element("td", f"{r.seconds:.2f}", class_="num", data_sort=_number(r.seconds)),
        element("td", _reason(r), class_="why"),
        element("td", source, class_="mono path"),
    ]
    return element("tr", cells, id=f"row-{index}", data_status=status, data_name=r.name)


def _not_run_row(name: str) -> Markup:
    cells = [element("td", "– not run", class_="status not-run", data_sort="not-run"), element("td", name)]
    cells += [element("td", "") for _ in ("layer", "method", "dtype")]
    cells += [element("td", "—", class_="num", data_sort="") for _ in range(5)]
    cells += [element("td", "the run stopped before this check"), element("td", "")]
    return element("tr", cells, data_status="not-run", data_name=name)


_COLUMNS = ("status", "check", "layer", "method", "dtype", "input", "weights", "bias", "forward passes", "seconds")


def _checks_table(results: Sequence[CheckResult], run: Run, panels: dict[int, str]) -> Markup:
    headers = [element("th", element("button", name, type="button"), scope="col") for name in _COLUMNS]
    headers += [element("th", element("button", name, type="button"), scope="col") for name in ("why", "config")]
    rows = [_row(i, r, panels.get(i)) for i, r in enumerate(results)] + [_not_run_row(n) for n in run.not_run]
    statuses = [("", "every status"), ("not-ok", "did not pass"), *((s.value, s.value) for s in Status)]
    if run.not_run:
        statuses.append(("not-run", "not run"))
    controls = element(
        "div",
        element("input", type="search", id="filter", placeholder="filter by name, layer, reason…", aria_label="filter"),
        element("select", [element("option", text, value=value) for value, text in statuses], id="status-filter"),
        element("span", f"{len(rows)} checks", id="shown", class_="meta"),
        element(
            "span",
            element("span", ""),
            element("button", "show all", type="button", id="clear-cell"),
            id="cell-filter",
            hidden=True,
        ),
        class_="controls",
    )
    note = "input, weights, bias: the largest relative error of each gradient (✗: over tolerance)"
    return element(
        "section",
        element("h2", "Checks"),
        controls,
        element(
            "div",
            element("table", element("thead", element("tr", headers)), element("tbody", rows), id="checks"),
            class_="scroll",
        ),
        element("p", note, class_="meta"),
        id="table",
    )


def _what_failed(r: CheckResult) -> list[Markup]:
    """The panel's first lines: the error, the contract findings, the forward, each failing gradient, the hints."""
    lines = []
    if r.error:
        lines.append(element("div", f"{FAIL_MARK} could not run:", class_="line bad"))
        lines.append(element("pre", r.error))
    lines += [element("div", f"{FAIL_MARK} contract: {finding!s}", class_="line bad") for finding in r.contract]
    f = r.forward
    if f is not None and not f.ok:
        where = user_index("input", f.worst_index, r.spec.layout) if f.worst_index else "?"
        text = (
            f"{FAIL_MARK} forward: output differs from the reference convolution by up to {f.max_abs_error:.3g} "
            f"(allowed {f.allowed:.3g}); at output {where}: got {f.got:.6g}, expected {f.expected:.6g}"
        )
        lines.append(element("div", text, class_="line bad"))
    for g in r.gradients:
        if not g.passed:
            share = f" ({g.over_tolerance / g.checked:.1%})" if g.checked else ""
            what = f"{g.over_tolerance:,} of {g.checked:,} entries{share}" if g.checked else "its projections"
            lines.append(element("div", f"{FAIL_MARK} {g.name} gradient: {what} over tolerance", class_="line bad"))
    lines += [element("div", f"hint: {hint!s}", class_="line hint") for hint in r.diagnosis]
    return lines


def _entries(r: CheckResult, g: TensorResult) -> Markup:
    """The worst entries of one gradient (at most ``panels.WORST_SHOWN``), indices in the user's layout."""
    columns = (f"index ({AXES[r.spec.layout][g.name]})", "analytic", "numeric", "abs error", "allowed", "rel error")
    rows = [
        element(
            "tr",
            element("td", str(user_index(g.name, e.index, r.spec.layout)) + (" kink" if e.at_kink else "")),
            [element("td", f"{v:.6g}") for v in (e.analytic, e.numeric)],
            [element("td", f"{v:.1e}") for v in (e.abs_error, e.allowed, e.rel_error)],
            class_="over" if e.abs_error > e.allowed else None,
        )
        for e in g.worst[:WORST_SHOWN]
    ]
    head = element("thead", element("tr", [element("th", c) for c in columns]))
    return element(
        "table", element("caption", f"{g.name} gradient: worst entries"), head, element("tbody", rows), class_="entries"
    )


def _headline(r: CheckResult) -> str:
    """The panel's title line after the name: what is wrong, in counts, and the first hint's label."""
    if r.error:
        what = [r.error.splitlines()[0] if r.error.strip() else "could not run"]
    else:
        what = [
            f"{g.name} gradient: {g.over_tolerance:,} of {g.checked:,} over tolerance"
            for g in r.gradients
            if not g.passed and g.checked
        ]
        what += [f"{g.name} gradient wrong" for g in r.gradients if not g.passed and not g.checked]
        what += ["forward wrong"] if r.forward is not None and not r.forward.ok else []
        what += (
            [f"contract: {len(r.violations)} finding{'s' if len(r.violations) != 1 else ''}"] if r.violations else []
        )
    if r.diagnosis:
        what.append(f"hint: {r.diagnosis[0].label}")
    return "; ".join(what) or "failed"


def _panel(r: CheckResult, panel: str, heatmaps: bool) -> Markup:
    """One check that did not pass, as the terminal's failure panel says it, in a ``<details>`` to open."""
    parts: list[Markup] = _what_failed(r)
    parts += [_entries(r, g) for g in r.gradients if g.worst and not g.passed]
    if heatmaps:
        parts += heatmap_figures(r)
    else:
        parts.append(element("p", f"(heatmaps are drawn for the first {MAX_HEATMAP_PANELS} checks)", class_="note"))
    parts += [element("div", str(n), class_="line note") for n in r.notes if n.kind is not NoteKind.METHOD_CHOSEN]
    tolerance = tolerance_line(r)
    if tolerance is not None:
        parts.append(element("div", tolerance.plain, class_="line tolerance"))
    if r.spec.source is not None:
        parts.append(element("div", f"config: {r.spec.source.file}:{r.spec.source.line}", class_="line note"))
    title = f"{FAIL_MARK} {r.name}" + (" (error)" if r.status is Status.ERROR else "")
    summary = element("summary", title, element("span", f" — {_headline(r)}", class_="meta"))
    return element("details", summary, parts, id=panel, class_=f"panel {r.status.value}")


def _panels_section(results: Sequence[CheckResult], panels: dict[int, str]) -> Markup | None:
    if not panels:
        return None
    shown = [_panel(results[i], panel, n < MAX_HEATMAP_PANELS) for n, (i, panel) in enumerate(panels.items())]
    buttons = element(
        "div",
        element("button", "open all", type="button", id="open-all"),
        element("button", "close all", type="button", id="close-all"),
        class_="controls",
    )
    return element("section", element("h2", f"Checks that did not pass ({len(panels)})"), buttons, shown, id="panels")


def grid_axes(results: Sequence[CheckResult], sweep: SweepCondition | None = None) -> tuple[list[str], tuple[str, str]]:
    """The hyperparameters that vary among the checks (``sweeps.features``, in their order), and the two the
    grid shows first: the sweep condition's keys when it has them, then the first varying keys.

    An axis is ``""`` (one row or column) when fewer keys vary.
    """
    values: dict[str, set[object]] = {}
    for r in results:
        for key, value in features(r.spec).items():
            values.setdefault(key, set()).add(value)
    varying = [key for key, seen in values.items() if len(seen) > 1]
    preferred = [key for atom in (sweep.atoms if sweep else ()) for key in atom.keys if key in varying]
    chosen = [*dict.fromkeys([*preferred, *varying]), "", ""]
    return varying, (chosen[0], chosen[1])


def _grid_section(results: Sequence[CheckResult], sweep: SweepCondition | None) -> Markup | None:
    """The sweep's grid: two selects for its axes and the table the script draws (none for a single check)."""
    varying, (rows, cols) = grid_axes(results, sweep)
    if len(results) < 2 or not varying:
        return None

    def select(id_: str, chosen: str, label: str, none: bool) -> Markup:
        options = [element("option", "(none)", value="", selected=chosen == "")] if none else []
        options += [element("option", key, value=key, selected=key == chosen) for key in varying]
        return element("label", label, " ", element("select", options, id=id_))

    explain = (
        "Each cell holds the checks with those two values: green when all passed, red when all failed, orange "
        "when some did; ✗ failed, ✓ passed, ! errors, – skipped. Hover a cell for its checks; click it to see them "
        "in the table."
    )
    return element(
        "section",
        element("h2", "Sweep grid"),
        element(
            "div",
            select("grid-rows", rows, "rows:", False),
            select("grid-cols", cols, "columns:", True),
            class_="controls",
        ),
        element("table", id="grid-table"),
        element("p", explain, class_="meta"),
        id="grid",
    )


def _data(results: Sequence[CheckResult], panels: dict[int, str]) -> str:
    """The checks' values for the script, as JSON safe inside ``<script>`` (no ``<``, ``>`` or ``&`` in it)."""
    checks = [
        {"name": r.name, "status": r.status.value, "values": features(r.spec), "panel": panels.get(i)}
        for i, r in enumerate(results)
    ]
    text = json.dumps({"checks": checks}, ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
