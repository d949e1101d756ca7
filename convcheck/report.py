"""Render results: the Rich table and failure panels, JSON, JUnit XML and CI annotations.

Rich lives here and in ``cli.py`` only. JSON is built as plain dicts and written with ``json``. Gradient indices
are shown in the user's layout (``nchw`` users see ``(n, c, h, w)`` and weights ``(c_out, c_in, kh, kw)``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from convcheck.heatmap import heatmaps
from convcheck.results import TENSORS, CheckResult, Entry, Status, TensorResult
from convcheck.spec import Layout

PASS_MARK = "✓"
FAIL_MARK = "✗"

# Internal NHWC axis order → the order a user of each layout reads.
_NCHW_ORDER = {"input": (0, 3, 1, 2), "weights": (3, 2, 0, 1), "bias": (0,)}
_AXES = {
    Layout.NHWC: {"input": "n, h, w, c", "weights": "kh, kw, c_in, c_out", "bias": "c_out"},
    Layout.NCHW: {"input": "n, c, h, w", "weights": "c_out, c_in, kh, kw", "bias": "c_out"},
}


def user_index(tensor: str, index: Sequence[int], layout: Layout) -> tuple[int, ...]:
    """An internal (NHWC) gradient index in the order of the user's layout."""
    if layout is Layout.NCHW and len(index) == len(_NCHW_ORDER[tensor]):
        return tuple(index[axis] for axis in _NCHW_ORDER[tensor])
    return tuple(index)


def counts(results: Sequence[CheckResult]) -> dict[str, int]:
    passed = sum(r.status is Status.PASS for r in results)
    failed = sum(r.status is Status.FAIL for r in results)
    errors = sum(r.status is Status.ERROR for r in results)
    return {"total": len(results), "passed": passed, "failed": failed, "errors": errors}


def summary_line(results: Sequence[CheckResult]) -> str:
    """``N passed, M failed`` (errors count as failed), then ``, E errors`` when there are any."""
    c = counts(results)
    line = f"{c['passed']} passed, {c['failed'] + c['errors']} failed"
    if c["errors"]:
        line += f", {c['errors']} error{'s' if c['errors'] != 1 else ''}"
    return line


# -- terminal ------------------------------------------------------------------------------------------------


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
    table.add_column(f"index ({_AXES[layout][g.name]})")
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
    for problem in result.contract:
        parts.append(Text(f"contract: {problem}", style="red"))
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
        parts.append(Text(f"hint: {hint}", style="yellow"))
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
        parts.append(Text(note, style="dim"))
    title = Text(f"{FAIL_MARK} {result.name}" + (" (error)" if result.status is Status.ERROR else ""))
    return Panel(Group(*parts), title=title, title_align="left", border_style="red")


# -- JSON ----------------------------------------------------------------------------------------------------


def _finite(value: float | None) -> float | str | None:
    """JSON has no NaN/Infinity: write them as strings."""
    if value is None:
        return None
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _entry_json(e: Entry, tensor: str, layout: Layout) -> dict[str, object]:
    return {
        "index": list(user_index(tensor, e.index, layout)),
        "analytic": _finite(e.analytic),
        "numeric": _finite(e.numeric),
        "abs_error": _finite(e.abs_error),
        "rel_error": _finite(e.rel_error),
        "allowed": _finite(e.allowed),
        "at_kink": e.at_kink,
    }


def _tensor_json(g: TensorResult, layout: Layout) -> dict[str, object]:
    return {
        "passed": g.passed,
        "max_abs_error": _finite(g.max_abs_error),
        "max_rel_error": _finite(g.max_rel_error),
        "checked": g.checked,
        "total": g.total,
        "projections": g.projections,
        "kinks": g.kinks,
        "over_tolerance": g.over_tolerance,
        "worst": _entry_json(g.worst[0], g.name, layout) if g.worst else None,
        "worst_entries": [_entry_json(e, g.name, layout) for e in g.worst],
    }


def check_json(r: CheckResult) -> dict[str, object]:
    layout = r.spec.layout
    config = dict(r.spec.config) if r.spec.config else _spec_config(r)
    return {
        "name": r.name,
        "status": r.status.value,
        "config": config,
        "layer": r.spec.shape.describe(),
        "method": r.method.value if r.method else None,
        "forward_passes": r.forward_passes,
        "tolerance": None
        if r.tolerance is None
        else {"eps": r.tolerance.eps, "rtol": r.tolerance.rtol, "atol": r.tolerance.atol},
        "gradients": {g.name: _tensor_json(g, layout) for g in r.gradients},
        "forward": None
        if r.forward is None
        else {
            "max_abs_error": _finite(r.forward.max_abs_error),
            "allowed": _finite(r.forward.allowed),
            "ok": r.forward.ok,
            "worst_index": list(user_index("input", r.forward.worst_index, layout)) if r.forward.worst_index else None,
        },
        "contract": list(r.contract),
        "diagnosis": [str(h) for h in r.diagnosis],
        "notes": list(r.notes),
        "error": r.error,
        "seconds": round(r.seconds, 6),
        "source": None if r.spec.source is None else {"file": r.spec.source.file, "line": r.spec.source.line},
    }


def _spec_config(r: CheckResult) -> dict[str, object]:
    s = r.spec.shape
    return {
        "batch": s.batch,
        "in_height": s.in_height,
        "in_width": s.in_width,
        "in_depth": s.in_depth,
        "out_depth": s.out_depth,
        "filter_size": s.filter_size,
        "stride": s.stride,
        "padding": s.padding,
        "activation": r.spec.activation.value,
        "method": r.spec.method.value,
        "dtype": r.spec.dtype.value,
        "seed": r.spec.seed,
        "layout": r.spec.layout.value,
    }


def to_json(results: Sequence[CheckResult], version: str, interrupted: bool = False) -> dict[str, object]:
    """The ``--json`` document (the contract in DESIGN.md; extra keys are additions)."""
    document: dict[str, object] = {
        "convcheck": version,
        "summary": counts(results),
        "checks": [check_json(r) for r in results],
    }
    if interrupted:
        document["interrupted"] = True
    return document


def json_text(results: Sequence[CheckResult], version: str, interrupted: bool = False) -> str:
    return json.dumps(to_json(results, version, interrupted), indent=2, allow_nan=False) + "\n"


# -- JUnit ---------------------------------------------------------------------------------------------------


def failure_message(r: CheckResult) -> str:
    """One line naming what failed: the tensor and its worst entry, the forward, the contract or the error."""
    if r.error:
        return r.error
    parts = []
    for g in r.gradients:
        if not g.passed and g.worst:
            e = g.worst[0]
            index = user_index(g.name, e.index, r.spec.layout)
            parts.append(
                f"{g.name} gradient wrong in {g.over_tolerance} of {g.checked or g.projections} "
                f"(worst {list(index)}: analytic {e.analytic:.6g}, numeric {e.numeric:.6g})"
            )
    if r.forward is not None and not r.forward.ok:
        parts.append(f"forward differs from the reference by up to {r.forward.max_abs_error:.3g}")
    parts.extend(f"contract: {p}" for p in r.contract)
    if r.diagnosis:
        parts.append(f"hint: {r.diagnosis[0]}")
    return "; ".join(parts) or "failed"


def junit_text(results: Sequence[CheckResult], suite: str = "convcheck") -> str:
    c = counts(results)
    root = ET.Element(
        "testsuites", name=suite, tests=str(c["total"]), failures=str(c["failed"]), errors=str(c["errors"])
    )
    ts = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(c["total"]),
        failures=str(c["failed"]),
        errors=str(c["errors"]),
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    for r in results:
        classname = Path(r.spec.source.file).stem if r.spec.source else suite
        case = ET.SubElement(ts, "testcase", name=r.name, classname=classname, time=f"{r.seconds:.3f}")
        if r.spec.source:
            case.set("file", r.spec.source.file)
            case.set("line", str(r.spec.source.line))
        if r.status is Status.FAIL:
            ET.SubElement(case, "failure", message=failure_message(r)).text = failure_message(r)
        elif r.status is Status.ERROR:
            ET.SubElement(case, "error", message=r.error or "error").text = r.error or "error"
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# -- CI annotations ------------------------------------------------------------------------------------------


def github_annotations(results: Sequence[CheckResult]) -> list[str]:
    """``::error file=…,line=…::…`` for every failed check (GitHub Actions workflow commands)."""
    lines = []
    for r in results:
        if r.passed:
            continue
        where = f"file={r.spec.source.file},line={r.spec.source.line}," if r.spec.source else ""
        message = failure_message(r).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        lines.append(f"::error {where}title=convcheck {r.name}::{message}")
    return lines


# -- files ---------------------------------------------------------------------------------------------------


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and a rename: never half-written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would hide CI artifacts from other users and steps
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# -- selftest ------------------------------------------------------------------------------------------------


def selftest_table(report: object) -> Table:
    """One row per planted bug (caught?, the tensors it showed in, the layers that exposed it), then the correct
    layer (passed everywhere?)."""
    table = Table(header_style="bold", show_lines=False)
    table.add_column("bug", overflow="fold")
    table.add_column("caught", justify="center")
    table.add_column("showed in", overflow="fold")
    table.add_column("expected", overflow="fold")
    table.add_column("exposed by", overflow="fold")
    for row in report.rows():  # type: ignore[attr-defined]
        ok = row.caught and row.as_expected
        mark = Text(PASS_MARK, style="bold green") if ok else Text(FAIL_MARK, style="bold red")
        layers = ", ".join(row.layers[:3]) + (f" (+{len(row.layers) - 3})" if len(row.layers) > 3 else "")
        table.add_row(
            Text.assemble(row.id, ("\n" + row.description, "dim")) if row.description else row.id,
            mark,
            ", ".join(row.tensors) or "—",
            ", ".join(row.expected) or "—",
            layers or "—",
        )
    return table


def selftest_summary(report: object) -> str:
    r = report  # a convcheck.selftest.SelftestReport
    caught = sum(b.caught for b in r.bugs)  # type: ignore[attr-defined]
    alarms = len(r.false_alarms)  # type: ignore[attr-defined]
    return (
        f"{caught} of {len(r.bugs)} planted bugs caught, {alarms} false alarm{'s' if alarms != 1 else ''} "  # type: ignore[attr-defined]
        f"on {len(r.correct)} checks of the correct layer ({r.seconds:.1f} s)"  # type: ignore[attr-defined]
    )
