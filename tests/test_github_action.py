"""The GitHub Action, run here: ``action.yml``'s run step executed by bash with the variables GitHub sets
(``GITHUB_STEP_SUMMARY``, ``GITHUB_OUTPUT``, ``GITHUB_ACTIONS``) pointing at temporary files, and the summary
script on its own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from userproject import CONFIG, GREEN, RED, RED_LINE, REPO, write_project

from convcheck.github import MAX_ROWS, main, outputs, summary_markdown

ACTION = yaml.safe_load((REPO / "action.yml").read_text(encoding="utf-8"))
INPUT = re.compile(r"\$\{\{\s*inputs\.([\w-]+)\s*\}\}")


def _step(step_id: str | None = None, name: str | None = None) -> dict:
    return next(s for s in ACTION["runs"]["steps"] if (step_id and s.get("id") == step_id) or s.get("name") == name)


def run_step(folder: Path, inputs: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """The action's "Run convcheck" step, as GitHub runs it: bash, the step's env with the inputs filled in."""
    step = _step("run")
    values = {name: spec.get("default", "") for name, spec in ACTION["inputs"].items()} | inputs
    summary, output = folder / "step_summary.md", folder / "github_output"
    env = dict(os.environ, GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(summary), GITHUB_OUTPUT=str(output))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])  # instead of the install step
    env["GITHUB_ACTION_PATH"] = str(REPO)
    env |= {key: INPUT.sub(lambda m: values[m.group(1)], value) for key, value in step["env"].items()}
    completed = subprocess.run(
        ["bash", "-e", "-c", step["run"]], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )
    return completed, summary, output


def test_the_action_is_a_composite_that_installs_itself_and_runs_the_script():
    assert ACTION["runs"]["using"] == "composite"
    install = _step(name="Install convcheck")
    assert 'pip install --quiet "$GITHUB_ACTION_PATH"' in install["run"]
    assert "python -m convcheck.github run" in _step("run")["run"]
    assert all(step["shell"] == "bash" for step in ACTION["runs"]["steps"])


def test_every_input_used_is_declared_and_every_output_is_written():
    used = {
        name
        for step in ACTION["runs"]["steps"]
        for value in step.get("env", {}).values()
        for name in INPUT.findall(value)
    }
    assert used == set(ACTION["inputs"])
    assert not INPUT.search(_step("run")["run"]), "inputs are pasted into the script: pass them through env"
    written = set(outputs(None, 0))
    assert {f"${{{{ steps.run.outputs.{name} }}}}" for name in written} == {
        o["value"] for o in ACTION["outputs"].values()
    }


def test_a_failing_layer_gets_annotations_junit_a_summary_and_outputs(tmp_path: Path):
    write_project(tmp_path)
    completed, summary, output = run_step(tmp_path, {"args": "--quiet"})
    assert completed.returncode == 1, completed.stderr
    assert f"::error file=convcheck.yaml,line={RED_LINE}," in completed.stdout
    suite = ET.parse(tmp_path / "convcheck-junit.xml").getroot()
    assert suite.get("tests") == "5" and suite.get("failures") == "1"
    markdown = summary.read_text(encoding="utf-8")
    assert markdown.startswith("## convcheck: 1 failed, 4 passed of 5 checks")
    rows = [line for line in markdown.splitlines() if line.startswith(("| ✅", "| ❌"))]
    assert rows[0].startswith(f"| ❌ | {RED} |") and len(rows) == 5  # failures first
    assert all(f"| ✅ | {name} |" in markdown for name in GREEN)
    assert f"- **{RED}** (convcheck.yaml:{RED_LINE}): bias gradient: 2 of 2 entries over tolerance; hint: " in markdown
    assert output.read_text(encoding="utf-8").splitlines() == [
        "exit-code=1",
        "total=5",
        "passed=4",
        "failed=1",
        "errors=0",
    ]


def test_the_html_input_writes_the_report_and_is_off_by_default(tmp_path: Path):
    write_project(tmp_path)
    completed, _, _ = run_step(tmp_path, {"args": "--quiet"})
    assert completed.returncode == 1 and not list(tmp_path.glob("*.html"))
    completed, _, _ = run_step(tmp_path, {"args": "--quiet", "html": "report with space.html"})
    assert completed.returncode == 1, completed.stderr
    page = (tmp_path / "report with space.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and RED in page


def test_a_passing_run_exits_0_with_a_green_summary(tmp_path: Path):
    write_project(tmp_path, config=CONFIG[: CONFIG.index("  - name: wrong")])
    completed, summary, output = run_step(tmp_path, {"paths": "convcheck.yaml"})
    assert completed.returncode == 0, completed.stderr
    assert "::error" not in completed.stdout
    assert summary.read_text(encoding="utf-8").startswith("## convcheck: all 4 checks passed")
    assert "failed=0" in output.read_text(encoding="utf-8")


def test_an_invalid_config_exits_2_and_the_summary_says_nothing_was_run(tmp_path: Path):
    write_project(tmp_path, config="{name: broken, batch: 1}\n")
    completed, summary, output = run_step(tmp_path, {})
    assert completed.returncode == 2
    assert "in_height" in completed.stderr  # convcheck's own message, in the log
    markdown = summary.read_text(encoding="utf-8")
    assert markdown.startswith("## convcheck: no results") and "nothing was run" in markdown
    assert "exit-code=2" in output.read_text(encoding="utf-8")


def _document(checks: list[dict], **extra: object) -> dict:
    statuses = [c["status"] for c in checks]
    summary = {"total": len(checks), "passed": statuses.count("pass"), "failed": statuses.count("fail")}
    return {"convcheck": "0", "summary": summary | {"errors": statuses.count("error")}, "checks": checks, **extra}


def _check(name: str, status: str = "pass", **extra: object) -> dict:
    return {"name": name, "status": status, "layer": "1×4×4×1 → 1, k3 s1 p0", "gradients": {}, "seconds": 0.01} | extra


def test_names_cannot_break_the_table_or_inject_html():
    markdown = summary_markdown(_document([_check("a|b<script>`x`", "error", error="raised | <b>bold</b>\nsecond")]))
    row = next(line for line in markdown.splitlines() if line.startswith("| ⚠️"))
    assert row.count(" | ") == 6  # seven cells: no column added by the name's pipe
    assert "<script>" not in markdown and "<b>" not in markdown
    assert "- **a\\|b&lt;script&gt;\\`x\\`**: raised \\| &lt;b&gt;bold&lt;/b&gt; second" in markdown


def test_a_long_sweep_lists_every_failure_and_caps_the_passes():
    checks = [_check(f"pass{i}") for i in range(MAX_ROWS + 50)] + [_check("bad", "fail")]
    markdown = summary_markdown(_document(checks))
    rows = [line for line in markdown.splitlines() if line.startswith(("| ✅", "| ❌"))]
    assert len(rows) == MAX_ROWS and rows[0].startswith("| ❌ | bad |")
    assert "… and 51 more passing checks" in markdown


def test_the_sweep_sentence_and_an_interruption_are_shown():
    sentence = "all 2 failures have padding = 0; all 3 passes have padding ≥ 1"
    markdown = summary_markdown(_document([_check("a")], sweep={"sentence": sentence}, interrupted=True))
    assert f"**What the sweep says:** {sentence}" in markdown
    assert "**Interrupted**" in markdown


def test_summary_without_github_prints_the_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    results = tmp_path / "results.json"
    results.write_text('{"summary": {"total": 1, "passed": 1}, "checks": [{"name": "only", "status": "pass"}]}')
    assert main(["summary", str(results)]) == 0
    assert capsys.readouterr().out.startswith("## convcheck: all 1 check passed")
    assert main(["summary", str(tmp_path / "missing.json")]) == 2


def test_the_script_runs_as_a_module():
    completed = subprocess.run(
        [sys.executable, "-m", "convcheck.github", "--help"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert completed.returncode == 0 and "summary" in completed.stdout
