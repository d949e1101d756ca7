"""The ``--html`` report read as a parser reads it: one file that fetches nothing, every check in its table, a
panel per check that did not pass with what the JSON says of it, escaped user text, heatmaps that colour exactly
the failing cells, and a complete page after an interruption. (A real browser drives it in test_html_browser.)"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from convcheck.cli import app
from convcheck.exitcodes import ExitCode
from convcheck.render import html
from convcheck.render.base import Run
from convcheck.render.heatmap import shade_levels
from convcheck.render.html_parts import MAX_CELLS, SHADE_COLOURS, Markup, element, svg_grid
from convcheck.results import Hint, Note, NoteKind, Status, error_result
from convcheck.spec import SourceLocation

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: A sweep of the layer whose col2im assigns instead of accumulating: it fails exactly where windows overlap.
SWEEP = """\
checks:
  - name: {name}
    impl: {layer}
    batch: 2
    in_height: 7
    in_width: 8
    in_depth: 2
    out_depth: 3
    filter_size: [2, 3]
    stride: [1, 2]
    padding: [0, 1]
"""
HOSTILE = "<script>alert('x')</script> & \"q\" <b>"
#: Attributes through which a page could fetch something.
FETCHING = {"src", "href", "action", "formaction", "poster", "data", "srcset", "xlink:href", "background"}


class Page(HTMLParser):
    """What a parser finds in a page: every element with its attributes, the text by element id, the scripts."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.texts: dict[str, list[str]] = {}
        self._open: list[tuple[str, str | None]] = []  # (tag, id of the nearest element with one)
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if tag in {"meta", "input", "br", "hr", "img", "link"}:
            return
        inherited = self._open[-1][1] if self._open else None
        self._open.append((tag, attributes.get("id") or inherited))
        if tag == "script":
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._open and self._open[-1][0] == "script":
            self.scripts[-1] += data
        for _, owner in self._open[-1:]:
            self.texts.setdefault(owner or "", []).append(data)

    def text(self, id_: str) -> str:
        """The text of the element with this id (its children's included, up to the next element with an id)."""
        return "".join(self.texts.get(id_, []))

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attributes for name, attributes in self.elements if name == tag]


def run_report(tmp_path: Path, name: str = "sweep") -> tuple[int, str, dict, str]:
    """``convcheck run sweep.yaml`` in ``tmp_path`` with ``--html`` and ``--json``: exit code, HTML, JSON, stderr."""
    (tmp_path / "sweep.yaml").write_text(SWEEP.format(name=json.dumps(name), layer=EXAMPLES / "buggy_col2im.py"))
    with contextlib.chdir(tmp_path):
        command = ["run", "sweep.yaml", "--html", "report.html", "--json", "report.json", "--quiet"]
        result = CliRunner().invoke(app, command)
    document = json.loads((tmp_path / "report.json").read_text())
    return result.exit_code, (tmp_path / "report.html").read_text(), document, result.stderr


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, dict, str]:
    return run_report(tmp_path_factory.mktemp("html"))


def test_the_page_fetches_nothing_and_forbids_itself_to(sweep):
    _, text, _, _ = sweep
    page = Page(text)
    for tag, attributes in page.elements:
        for key, value in attributes.items():
            if key in FETCHING:
                assert value is not None and value.startswith(("#", "data:")), (tag, key, value)
    assert not page.all("link") and not page.all("img") and not page.all("iframe")
    styles = "".join(re.findall(r"<style>(.*?)</style>", text, flags=re.S))
    assert "url(" not in styles and "@import" not in styles and "@font-face" not in styles
    assert all("src" not in attributes for attributes in page.all("script"))  # the scripts are inline
    policy = next(a["content"] for a in page.all("meta") if a.get("http-equiv") == "Content-Security-Policy")
    assert policy is not None and "default-src 'none'" in policy


def assert_rows_fill_the_columns(text: str) -> None:
    """Every row of the table of checks has one cell per header."""
    table = re.search(r'<table id="checks">(.*?)</table>', text, flags=re.S)
    assert table is not None
    head, body = table.group(1).split("</thead>")
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S):
        assert row.count("<td") == head.count("<th "), row


def test_every_check_is_a_row_with_the_json_verdict(sweep):
    code, text, document, _ = sweep
    assert code == ExitCode.FAILED
    page = Page(text)
    rows = [a for a in page.all("tr") if a.get("data-status")]
    assert [r["data-status"] for r in rows] == [c["status"] for c in document["checks"]]
    for i, check in enumerate(document["checks"]):
        assert check["name"] in page.text(f"row-{i}")
    summary = page.text("verdict") + " ".join(page.texts[""])
    for key in ("total", "passed", "failed"):
        assert re.search(rf"{document['summary'][key]}\s*{'checks' if key == 'total' else key}", summary), key
    assert "exit code 1:" in page.text("exit-code")
    assert_rows_fill_the_columns(text)


def test_the_sweep_condition_is_stated_at_the_top(sweep):
    _, text, document, _ = sweep
    assert document["sweep"] is not None  # the layer fails exactly where windows overlap
    assert Page(text).text("sweep") == document["sweep"]["sentence"]


def test_each_failing_check_has_a_panel_saying_what_the_json_says(sweep):
    _, text, document, _ = sweep
    page = Page(text)
    panels = {a["id"] for a in page.all("details")}
    links = [a["href"] for a in page.all("a")]
    failing = [i for i, c in enumerate(document["checks"]) if c["status"] == "fail"]
    assert failing and panels == {f"check-{i}" for i in failing}
    assert sorted(links) == sorted(f"#check-{i}" for i in failing)  # each failing row links its panel
    for i in failing:
        check, panel = document["checks"][i], page.text(f"check-{i}")
        assert check["name"] in panel
        for hint in check["diagnosis"]:
            assert f"hint: {hint}" in panel
        worst = check["gradients"]["input"]["worst"]
        assert str(tuple(worst["index"])) in panel and f"{worst['analytic']:.6g}" in panel
        t = check["tolerance"]
        assert f"eps {t['eps']:.3g}, rtol {t['rtol']:.3g}, atol {t['atol']:.3g}" in panel
    assert len(page.all("svg")) >= len(failing)  # a heatmap of the input gradient at least, per failing check


def test_the_grid_data_holds_every_check_with_its_values(sweep):
    _, text, document, _ = sweep
    page = Page(text)
    data = json.loads(page.scripts[0])
    assert [(c["name"], c["status"]) for c in data["checks"]] == [(c["name"], c["status"]) for c in document["checks"]]
    assert all({"filter_size", "stride", "padding"} <= set(c["values"]) for c in data["checks"])
    chosen = {a["id"]: a for a in page.all("select")}
    assert {"grid-rows", "grid-cols"} <= set(chosen)
    selected = [a["value"] for a in page.all("option") if "selected" in a]
    assert selected == ["filter_size", "stride"]  # the sweep condition's keys: filter_size > stride


def test_user_text_is_escaped_everywhere(tmp_path: Path):
    code, text, document, _ = run_report(tmp_path, HOSTILE)
    assert code == ExitCode.FAILED
    page = Page(text)
    assert len(page.all("script")) == 2  # the data block and the page's own script, nothing from a name
    assert not page.all("b")
    for i, check in enumerate(document["checks"]):
        assert check["name"].startswith(HOSTILE) and check["name"] in page.text(f"row-{i}")
    data = json.loads(page.scripts[0])
    assert all(c["name"].startswith(HOSTILE) for c in data["checks"])
    assert "</script" not in page.scripts[0] and "<" not in page.scripts[0]


def test_messages_hints_notes_and_paths_are_escaped():
    from convcheck.spec import CheckSpec, ConvShape

    spec = replace(
        CheckSpec(name=HOSTILE, shape=ConvShape(1, 4, 4, 1, 1, 2, 1, 0)),
        source=SourceLocation(file=f"{HOSTILE}.yaml", line=3),
    )
    broken = replace(
        error_result(spec, 0.5, f"raised {HOSTILE}"),
        diagnosis=(Hint(label="<i>label</i>", text=HOSTILE),),
        notes=(Note(NoteKind.OTHER, HOSTILE),),
    )
    refused = replace(error_result(replace(spec, name="other"), 0.0, ""), status=Status.SKIPPED, error=None)
    text = html.render([broken, refused], Run(version="0", not_run=(HOSTILE,)))
    page = Page(text)
    assert not page.all("i") and not page.all("b") and len(page.all("script")) == 2
    panel = page.text("check-0")
    assert f"raised {HOSTILE}" in panel and f"hint: <i>label</i>: {HOSTILE}" in panel and HOSTILE in panel
    assert f"{HOSTILE}.yaml:3" in page.text("row-0") and HOSTILE in page.text("checks")  # the not-run row


def test_element_escapes_text_and_attributes_and_passes_markup():
    assert element("p", "<b> & </b>") == "<p>&lt;b&gt; &amp; &lt;/b&gt;</p>"
    assert element("a", "x", href='"><script>', class_="c") == '<a href="&quot;&gt;&lt;script&gt;" class="c">x</a>'
    assert element("details", element("summary", "s"), open=True, hidden=False) == (
        "<details open><summary>s</summary></details>"
    )
    assert element("div", Markup("<i>kept</i>"), None, ["<", 1]) == "<div><i>kept</i>&lt;1</div>"


def _cells(svg: str, colour: str, size: int, left: int, top: int) -> set[tuple[int, int]]:
    """The cells a path of ``colour`` covers, read back from its run rectangles."""
    match = re.search(rf'<path d="([^"]*)" fill="{colour}"', svg)
    cells = set()
    for x, y, width in re.findall(r"M(\d+) (\d+)h(\d+)v", match.group(1) if match else ""):
        row, col = (int(y) - top) // size, (int(x) - left) // size
        cells.update((row, col + k) for k in range(int(width) // size))
    return cells


@pytest.mark.parametrize("shape", [(7, 8), (5, 1), (40, 33)])
def test_a_heatmap_colours_exactly_the_cells_of_each_shade(shape):
    rng = np.random.default_rng(0)
    grid = np.where(rng.random(shape) < 0.4, 10.0 ** rng.uniform(-5, 2, shape), 0.0)
    grid[0, 0] = np.nan  # nothing checked there
    svg, fr, fc = svg_grid(grid, row_axis="h", col_axis="w", label="test")
    assert (fr, fc) == (1, 1)
    size = int(re.search(r'<rect x="(\d+)" y="(\d+)" width="(\d+)"', svg).group(3)) // shape[1]
    left, top = (int(v) for v in re.search(r'<rect x="(\d+)" y="(\d+)"', svg).groups())
    levels = shade_levels(grid)
    for level, colour in enumerate(SHADE_COLOURS[1:], start=1):
        expected = {tuple(map(int, cell)) for cell in np.argwhere(levels == level)}
        assert _cells(svg, colour, size, left, top) == expected, level
    assert _cells(svg, "#ffffff", size, left, top) == {(0, 0)}


def test_a_large_grid_is_pooled_and_keeps_a_single_failing_entry():
    grid = np.zeros((500, 7))
    grid[377, 3] = 5.0
    svg, fr, fc = svg_grid(grid, row_axis="h", col_axis="w", label="test")
    assert fr == -(-500 // MAX_CELLS) and fc == 1
    assert svg.count("<path") == 1 and svg.count("M") == 1  # one run: the block holding the entry


def test_grid_axes_prefer_the_sweep_condition_and_fall_back_to_one_column(sweep):
    from convcheck.checker import run_check
    from convcheck.spec import Activation, CheckSpec, ConvShape

    shape = ConvShape(1, 4, 4, 1, 1, 2, 1, 0)
    results = [
        run_check(CheckSpec(name=a.value, shape=shape, activation=a)) for a in (Activation.RELU, Activation.NONE)
    ]
    assert html.grid_axes(results) == (["activation"], ("activation", ""))
    assert html.grid_axes(results[:1]) == ([], ("", ""))
    _, _, document, _ = sweep
    assert document["sweep"]["condition"] == "filter_size > stride"


def test_a_signal_while_results_print_still_writes_the_whole_report(tmp_path: Path, monkeypatch):
    from convcheck.render import panels

    printing = panels.print_results

    def signalled_while_printing(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return printing(*args, **kwargs)

    monkeypatch.setattr(panels, "print_results", signalled_while_printing)
    code, text, document, stderr = run_report(tmp_path)
    assert code == ExitCode.INTERRUPTED, stderr
    assert text.rstrip().endswith("</html>")  # every check had finished: the whole report, its verdict
    page = Page(text)
    assert [a["data-status"] for a in page.all("tr") if a.get("data-status")] == [
        c["status"] for c in document["checks"]
    ]
    assert len(document["checks"]) == 8 and "6 of 8 checks did not pass" in page.text("verdict")


def test_checks_a_stopped_run_never_ran_are_rows_too(tmp_path: Path, monkeypatch):
    import convcheck.config

    loading = convcheck.config.load_configs

    def signalled_while_loading(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return loading(*args, **kwargs)

    monkeypatch.setattr(convcheck.config, "load_configs", signalled_while_loading)
    code, text, _, _ = run_report(tmp_path)
    assert code == ExitCode.INTERRUPTED
    page = Page(text)
    assert [a["data-status"] for a in page.all("tr") if a.get("data-status")] == ["not-run"] * 8
    assert_rows_fill_the_columns(text)
    assert "interrupted" in page.text("verdict") and "exit code 130" in page.text("exit-code")


@pytest.mark.parametrize(
    ("target", "says"), [("-", "--html -: the report goes to a file"), (".", "--html .: is a folder")]
)
def test_an_html_path_that_cannot_be_written_is_refused_before_anything_runs(tmp_path: Path, target, says):
    config = tmp_path / "sweep.yaml"
    config.write_text(SWEEP.format(name="s", layer=EXAMPLES / "buggy_col2im.py"))
    result = CliRunner().invoke(app, ["run", str(config), "--html", target])
    assert result.exit_code == ExitCode.INVALID and says in result.stderr, result.stderr


@pytest.mark.skipif(not Path("/proc").exists(), reason="the waiting layer reports its process through /proc: Linux")
def test_ctrl_c_while_a_check_runs_writes_the_finished_and_the_unrun_checks(tmp_path: Path):
    hostile = Path(__file__).parent / "fixtures" / "hostile"
    layer = (
        "  - {{name: {name}, impl: {impl}, batch: 1, in_height: 4, in_width: 4, in_depth: 1, out_depth: 1, "
        "filter_size: 3, padding: 1}}\n"
    )
    impls = [hostile / "good.py", hostile / "waits.py", hostile / "good.py"]
    config = tmp_path / "run.yaml"
    config.write_text("checks:\n" + "".join(layer.format(name=f"c{i}", impl=m) for i, m in enumerate(impls)))
    marker, page = tmp_path / "started", tmp_path / "report.html"
    command = [sys.executable, "-m", "convcheck", "run", str(config), "--html", str(page)]
    env = {**os.environ, "CONVCHECK_TEST_MARKER": str(marker)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert time.monotonic() < deadline and process.poll() is None, "the waiting layer never started"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == ExitCode.INTERRUPTED, err
    found = Page(page.read_text())
    assert [a["data-status"] for a in found.all("tr") if a.get("data-status")] == ["pass", "not-run", "not-run"]
    assert "interrupted after 1 of 3 checks" in found.text("verdict")


@given(st.text())
def test_any_text_reads_back_as_itself(text: str):
    page = Page(str(element("p", text, title=text, id="x")))
    assert page.text("x") == text and page.all("p")[0]["title"] == text and len(page.elements) == 1


def test_a_wrong_1d_forward_gets_its_panel_without_a_grid(tmp_path: Path):
    """A 1-D output (N, OW, C) has no (oh, ow) grid: the panels (terminal and HTML) say what is wrong without it."""
    layer = (EXAMPLES / "depthwise1d.py").read_text()
    wrong = layer.replace("return out + b, (x, w", "return out + b + 1.0, (x, w")
    assert wrong != layer
    (tmp_path / "layer.py").write_text(wrong)
    config = tmp_path / "c.yaml"
    config.write_text(
        "impl: layer.py\ndims: 1\nbatch: 2\nin_width: 9\nin_depth: 2\nout_depth: 2\ngroups: 2\nfilter_size: 3\n"
        "activation: none\n"
    )
    page = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["run", str(config), "--html", str(page)])
    assert result.exit_code == ExitCode.FAILED, result.output
    panel = Page(page.read_text()).text("check-0")
    assert "forward: output differs from the reference convolution" in panel


def test_a_green_run_says_so_and_has_no_panels():
    from convcheck.checker import run_check
    from convcheck.spec import CheckSpec, ConvShape

    results = [run_check(CheckSpec(name=f"s{s}", shape=ConvShape(1, 5, 5, 1, 2, 3, s, 1))) for s in (1, 2)]
    assert all(r.status is Status.PASS for r in results)
    page = Page(html.render(results, Run(version="0")))
    assert page.text("verdict") == "✓ every check passed (2)" and page.text("exit-code").startswith("exit code 0:")
    assert not page.all("details") and not page.all("svg") and not page.text("sweep")


def test_a_layer_without_a_bias_has_no_bias_error_in_its_row():
    from convcheck.checker import run_check
    from convcheck.spec import CheckSpec, ConvShape

    result = run_check(CheckSpec(name="no-bias-term", shape=ConvShape(1, 5, 5, 2, 2, 3, 1, 1, bias=False)))
    assert result.status is Status.PASS
    row = Page(html.render([result], Run(version="0"))).text("row-0")
    assert "—" in row and len(re.findall(r"\d\.\de[+-]\d\d", row)) == 2, row  # input and weights only
