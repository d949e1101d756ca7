"""The terminal a user really has: the results table and panels at 60 to 200 columns, piped and on a terminal,
with and without colour. Properties, not pasted screens: every line fits, every verdict and every error (in
full ``1.8e-08`` form) survives, names are never silently cut, and lower-priority columns drop first."""

from __future__ import annotations

import io
import re

import pytest
from rich.cells import cell_len
from rich.console import Console

from convcheck import bugs
from convcheck.batch.outcome import error_result
from convcheck.checker import run_check
from convcheck.render.base import counts, summary_line
from convcheck.render.panels import WORST_SHOWN, check_panel, print_results
from convcheck.render.table import ABBREVIATIONS, OPTIONAL, REQUIRED, layout_for
from convcheck.results import TENSORS, Status
from convcheck.spec import Activation, CheckSpec, ConvShape, Layout, Method

WIDTHS = (60, 80, 100, 120, 200)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def results():
    """A passing sweep with long names, one check failing in its input gradient, one failing only in its
    forward, and one that could not run."""
    shape = ConvShape(2, 6, 7, 2, 3, 3, 2, 1)
    passing = [
        run_check(
            CheckSpec(
                f"sweep[stride={s},padding={p},activation=tanh]",
                ConvShape(2, 6, 7, 2, 3, 3, s, p),
                Activation.TANH,
                method=Method.FULL,
            )
        )
        for s, p in ((1, 0), (2, 1))
    ]
    spec = CheckSpec("buggy-col2im", shape, Activation.RELU, method=Method.FULL)
    col2im = run_check(spec, layer=bugs.get("col2im-assign").make(shape.stride, shape.padding, Activation.RELU))
    nobias = bugs.get("forward-missing-bias")
    forward = []
    if nobias is not None:
        forward = [
            run_check(
                CheckSpec("no-bias", shape, method=Method.FULL),
                layer=nobias.make(shape.stride, shape.padding, Activation.RELU),
            )
        ]
    crashed = error_result(CheckSpec("crashed", shape, layout=Layout.NCHW), 0.1, "forward raised ValueError: boom")
    assert [r.status for r in (col2im, *forward)] == [Status.FAIL, Status.FAIL] and not forward[0].forward.ok
    return [*passing, col2im, *forward, crashed]


def _render(results, width, *, terminal, color, quiet=False, verbose=False):
    console = Console(
        width=width,
        file=io.StringIO(),
        force_terminal=terminal,
        no_color=not color,
        color_system="standard" if color else None,
        legacy_windows=False,
    )
    print_results(console, results, quiet=quiet, verbose=verbose)
    return console.file.getvalue()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize(("terminal", "color"), [(False, False), (True, False), (True, True)])
def test_every_line_fits_and_every_verdict_and_error_survives(results, width, terminal, color):
    raw = _render(results, width, terminal=terminal, color=color)
    assert bool(ANSI.search(raw)) == color  # colour exactly when asked (NO_COLOR: none)
    text = ANSI.sub("", raw)
    lines = text.splitlines()
    assert all(cell_len(line.rstrip()) <= width for line in lines), max(lines, key=cell_len)
    c = counts(results)
    table = text.split("errors: max relative error")[0]
    assert table.count("✓ pass") == c["passed"]
    assert table.count("✗ fail") == c["failed"] and table.count("✗ error") == c["errors"]
    for r in results:
        for t in TENSORS:
            g = r.gradient(t)
            if g is not None:
                assert f"{g.max_rel_error:.1e}" in table, (width, r.name, t)
        if r.forward is not None:
            assert f"{r.forward.max_abs_error:.1e}" in table
    assert lines[-1] == summary_line(results)


@pytest.mark.parametrize("width", WIDTHS)
def test_names_are_shortened_with_a_legend_or_wrapped_never_cut(results, width):
    layout = layout_for(results, width)
    legend = dict(item.split(" = ") for item in layout.legend.split(", ")) if layout.legend else {}
    for r, shown in zip(results, layout.names, strict=True):
        joined = shown.replace("\n", "")
        expanded = re.sub(r"([\[,])([a-z]+)=", lambda m: f"{m.group(1)}{legend.get(m.group(2), m.group(2))}=", joined)
        assert expanded == r.name
        assert all(cell_len(line) <= layout.name_width for line in shown.splitlines()) or "\n" not in shown
    assert set(legend.values()) <= set(ABBREVIATIONS)


def test_lower_priority_columns_drop_first(results):
    previous: set[str] = set()
    for width in range(40, 260, 5):
        columns = layout_for(results, width).columns
        assert columns[: len(REQUIRED)] == REQUIRED
        optional = columns[len(REQUIRED) :]
        assert optional == OPTIONAL[: len(optional)]  # a prefix: never a lower one without every higher one
        assert previous <= set(columns)
        previous = set(columns)
    assert set(layout_for(results, 200).columns) == {*REQUIRED, *OPTIONAL}
    assert layout_for(results, 80).names[0] != results[0].name  # the long sweep names are shortened at 80


def test_quiet_prints_only_failing_rows_and_the_summary(results):
    text = _render(results, 80, terminal=False, color=False, quiet=True)
    assert "✓ pass" not in text and "╭" not in text  # no passing row, no panel
    assert text.count("✗ fail") + text.count("✗ error") == sum(not r.passed for r in results)
    assert text.splitlines()[-1] == summary_line(results)


def test_verbose_marks_passing_checks_as_passing_with_their_worst_entries(results):
    text = _render(results, 100, terminal=False, color=False, verbose=True)
    for r in results:
        mark = "✓" if r.passed else "✗"
        assert f"─ {mark} {r.name}" in text
    first = results[0]
    assert first.passed and f"{first.gradient('input').worst[0].analytic:.6g}" in text


def test_a_failure_panel_says_what_and_why_first_and_the_tolerance_last(results):
    col2im = next(r for r in results if r.name == "buggy-col2im")
    console = Console(width=80, file=io.StringIO(), color_system=None)
    console.print(check_panel(col2im))
    inner = [line.strip("│ ").rstrip(" │") for line in console.file.getvalue().splitlines()[1:-1]]
    assert inner[0].startswith("✗ input gradient:")
    assert inner[1].startswith("hint: col2im accumulate")
    assert "tolerance: eps" in "\n".join(inner[-3:])
    rows = [line for line in inner if re.match(r"\(\d", line)]
    assert 0 < len(rows) <= WORST_SHOWN


def test_the_tolerance_line_states_the_bound_really_applied(results):
    from convcheck.render.grids import relative_bound

    for r in results:
        for g in r.gradients:
            bound = relative_bound(g)
            if bound is None:
                continue
            # the median entry's allowed relative error is at least rtol (allowed = atol + rtol·|n| + rounding)
            assert bound >= r.tolerance.rtol
            passed_entries = [e for e in g.worst if e.abs_error <= e.allowed and e.numeric]
            for e in passed_entries:  # an entry that passed was within the bound it was really given
                assert e.rel_error <= e.allowed / abs(e.numeric) * (1 + 1e-12)


def test_one_counting_rule_errors_are_never_failures(results):
    from convcheck.exitcodes import ExitCode
    from convcheck.render import json as json_doc
    from convcheck.render import junit
    from convcheck.render.base import Run

    run = Run(version="0", not_run=("later",))
    c = counts(results, run.not_run)
    assert c["errors"] == sum(r.status is Status.ERROR for r in results) == 1
    assert c["failed"] == sum(r.status is Status.FAIL for r in results)
    assert c["total"] == c["passed"] + c["failed"] + c["errors"] + c["skipped"]
    assert json_doc.to_json(results, run)["summary"] == c
    xml = junit.render(results, run)
    assert f'tests="{c["total"]}" failures="{c["failed"]}" errors="{c["errors"]}" skipped="1"' in xml
    line = summary_line(results, run.not_run)
    assert line.startswith(f"{c['passed']} passed, {c['failed']} failed, 1 error, 1 skipped")
    assert ExitCode.for_results(results, run.not_run) is ExitCode.FAILED
    assert ExitCode.for_results([r for r in results if r.passed]) is ExitCode.OK


def test_the_layer_column_uses_the_layers_own_layout():
    from convcheck.render.table import layer_cell, output_cell

    shape = ConvShape(8, 32, 48, 16, 4, 3, 2, 1)
    assert layer_cell(CheckSpec("a", shape)) == "8×32×48×16 → 4, k3 s2 p1"  # N×H×W×C_in
    assert layer_cell(CheckSpec("a", shape, layout=Layout.NCHW)) == "nchw 8×16×32×48 → 4, k3 s2 p1"  # N×C_in×H×W
    n, oh, ow, c = shape.out_shape
    assert output_cell(CheckSpec("a", shape, layout=Layout.NCHW)) == f"{n}×{c}×{oh}×{ow}"


def test_a_failure_only_in_the_forward_shows_in_its_row(results):
    row = next(r for r in results if r.name == "no-bias")
    assert not row.forward.ok
    text = _render([row], 80, terminal=False, color=False)
    assert f"{row.forward.max_abs_error:.1e}" in text.splitlines()[2]  # the row, under header and rule


def test_a_layer_without_a_bias_shows_no_bias_error():
    """No bias means no bias entries: its column says ``—``, never an error of 0 that was never measured."""
    result = run_check(CheckSpec("no-bias-term", ConvShape(2, 5, 6, 2, 3, 3, 1, 1, bias=False), method=Method.FULL))
    assert result.passed and result.gradient(TENSORS[2]).total == 0
    header, _, row = _render([result], 120, terminal=False, color=False).splitlines()[:3]
    cells = dict(zip(header.split()[2:], row.split()[3:], strict=False))  # after "✓ pass" and the name
    assert cells["bias"] == "—" and cells["input"] != "—" and cells["weights"] != "—"


def test_every_geometry_key_of_a_sweep_name_is_shortened_alike():
    """Names shorten with the letters the layer column uses (k3 s2 d2 g4): dilation and groups too."""
    shape = ConvShape(2, 6, 7, 4, 4, 3)
    names = [f"depthwise-layer[stride={s},dilation={d},groups={g}]" for s in (1, 2) for d in (1, 2) for g in (1, 4)]
    results = [error_result(CheckSpec(name, shape), 0.1, "forward raised ValueError: boom") for name in names]
    layout = layout_for(results, 80)
    assert layout.legend == "s = stride, d = dilation, g = groups"
    assert layout.names[-1].replace("\n", "") == "depthwise-layer[s=2,d=2,g=4]"


@pytest.mark.parametrize("width", WIDTHS)
def test_validate_table_fits_and_keeps_every_name_method_and_cost(width):
    from pathlib import Path

    from convcheck.config import load_configs
    from convcheck.methods import planned_passes
    from convcheck.render.plan import plan_table

    specs = load_configs([Path(__file__).resolve().parent.parent / "configs"]).specs
    planned = [planned_passes(s) for s in specs]
    console = Console(width=width, file=io.StringIO(), legacy_windows=False)
    console.print(plan_table(specs, planned, width))
    text = console.file.getvalue()
    lines = text.splitlines()
    assert all(cell_len(line.rstrip()) <= width for line in lines), max(lines, key=cell_len)
    legend = " ".join(text.split("names shortened: ")[1].split()) if "names shortened: " in text else ""
    short = {key: abbreviation for abbreviation, key in (item.split(" = ") for item in legend.split(", ") if item)}
    column = "".join(line.split(" ", 1)[0] for line in lines)  # the check column, its wrapped lines joined
    for spec, (method, passes) in zip(specs, planned, strict=True):
        shown = re.sub(r"([\[,])([a-z_]+)=", lambda m: f"{m.group(1)}{short.get(m.group(2), m.group(2))}=", spec.name)
        assert shown in column, (width, spec.name)
        assert re.search(rf"{re.escape(method)}\s+{re.escape(f'{passes:,}')}\s*$", text, re.M), (width, spec.name)
