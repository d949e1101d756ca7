"""The JUnit file reads as CI systems read it: a JUnit parser finds every check with its outcome, the failure's
panel in its body, the skipped checks with their reason, and the sweep condition in the properties."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from convcheck.cli import app
from convcheck.exitcodes import ExitCode

junitparser = pytest.importorskip("junitparser", reason="the JUnit parser is in the test extra")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SWEEP = """\
checks:
  - name: sweep
    impl: {layer}
    batch: 1
    in_height: 6
    in_width: 6
    in_depth: 1
    out_depth: 2
    filter_size: 2
    stride: [1, 2]
    padding: [0, 1]
"""


def test_a_parser_reads_failures_passes_and_the_sweep(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text(SWEEP.format(layer=EXAMPLES / "buggy_col2im.py"))
    junit = tmp_path / "out.xml"
    result = CliRunner().invoke(app, ["run", str(config), "--junit", str(junit)])
    assert result.exit_code == ExitCode.FAILED, result.output
    xml = junitparser.JUnitXml.fromfile(str(junit))
    suites = list(xml) if isinstance(xml, junitparser.JUnitXml) else [xml]
    cases = [case for suite in suites for case in suite]
    assert len(cases) == 4
    failed = [case for case in cases if any(isinstance(r, junitparser.Failure) for r in case.result)]
    passed = [case for case in cases if not case.result]
    assert failed and passed and len(failed) + len(passed) == 4
    body = next(r for r in failed[0].result if isinstance(r, junitparser.Failure)).text
    assert "input" in body and "\n" in body  # the panel, several lines, not one sentence
    properties = {p.name: p.value for suite in suites for p in suite.properties()}
    assert properties["convcheck.sweep"] == "stride = 1", properties
