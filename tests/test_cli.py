"""End-to-end tests of the ``convcheck`` command: exit codes, parsed JSON and JUnit, streams, annotations."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convcheck.checker import run_check
from convcheck.cli import app
from convcheck.exitcodes import ExitCode
from convcheck.render import annotations
from convcheck.render.base import Run
from convcheck.render.documents import DOCUMENTS
from convcheck.spec import CheckSpec, ConvShape, Method

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
EXAMPLES = ROOT / "examples"
ENV = {"NO_COLOR": "1", "COLUMNS": "160", "GITHUB_ACTIONS": "false"}

SMALL = """\
checks:
  - name: small
    batch: 2
    in_height: 5
    in_width: 6
    in_depth: 2
    out_depth: 3
    filter_size: 3
    stride: [1, 2]
    padding: 1
"""


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env={**ENV, **(env or {})})


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_run_small_sweep_json_to_stdout_is_only_json(tmp_path):
    config = write(tmp_path, "small.yaml", SMALL)
    result = invoke("run", str(config), "--json", "-")
    assert result.exit_code == ExitCode.OK, result.stderr
    document = json.loads(result.stdout)  # nothing but JSON on stdout
    assert document["summary"] == {"total": 2, "passed": 2, "failed": 0, "errors": 0, "skipped": 0, "warnings": 0}
    names = [c["name"] for c in document["checks"]]
    assert names == ["small[stride=1]", "small[stride=2]"]
    check = document["checks"][0]
    assert set(check) >= {"name", "status", "config", "gradients", "forward", "diagnosis", "error", "seconds"}
    assert set(check["gradients"]) == {"input", "weights", "bias"}
    grad = check["gradients"]["input"]
    assert grad["checked"] == grad["total"] == 2 * 5 * 6 * 2
    assert set(grad["worst"]) >= {"index", "analytic", "numeric"}
    assert check["forward"]["ok"] is True
    assert "passed" in result.stderr  # the table and summary went to stderr


def test_failing_implementation_exit_1_with_json_and_junit(tmp_path):
    json_path, junit_path = tmp_path / "out.json", tmp_path / "out.xml"
    result = invoke("run", str(EXAMPLES / "buggy_col2im.yaml"), "--json", str(json_path), "--junit", str(junit_path))
    assert result.exit_code == ExitCode.FAILED
    assert result.stdout.strip().splitlines()[-1] == "0 passed, 1 failed"
    check = json.loads(json_path.read_text())["checks"][0]
    assert check["status"] == "fail"
    assert any(hint.startswith("col2im accumulate") for hint in check["diagnosis"]), check["diagnosis"]
    assert check["gradients"]["input"]["passed"] is False
    assert check["gradients"]["weights"]["passed"] is True
    suite = ET.parse(junit_path).getroot()
    cases = suite.findall(".//testcase")
    assert len(cases) == 1
    failure = cases[0].find("failure")
    assert failure is not None and "input gradient" in failure.get("message")
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_error_row_for_a_crashing_implementation(tmp_path):
    impl = write(
        tmp_path,
        "raises.py",
        "def forward(x, w, b, stride, padding):\n    raise ValueError('boom')\n"
        "def backward(dout, cache):\n    return None\n",
    )
    config = write(tmp_path, "c.yaml", f"impl: {impl.name}\n" + SMALL.split("  - ", 1)[1].replace("    ", ""))
    result = invoke("run", str(config), "--json", "-")
    assert result.exit_code == ExitCode.FAILED
    checks = json.loads(result.stdout)["checks"]
    assert {c["status"] for c in checks} == {"error"}
    assert "boom" in checks[0]["error"] and "raises.py:2" in checks[0]["error"]
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [
        (SMALL.replace("stride:", "strides:"), "strides", 9),
        (SMALL.replace("in_width: 6", "in_width: wide"), "in_width", 5),
        (SMALL.replace("filter_size: 3", "filter_size: 9"), "filter_size", 8),
        ("checks: [\n", "(yaml)", 2),
    ],
)
def test_bad_config_exit_2_names_field_and_line(tmp_path, text, field, line):
    config = write(tmp_path, "bad.yaml", text)
    result = invoke("run", str(config))
    assert result.exit_code == ExitCode.INVALID
    assert "Traceback" not in result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"{config}:{line}:") and field in first and "allowed:" in first
    assert result.stdout == ""  # nothing was run


def test_every_document_format_renders_the_results_it_is_given_as_text():
    """The formats behind ``--json`` and ``--junit`` share one interface: ``render(results, run) -> str``."""
    results = [run_check(CheckSpec("tiny", ConvShape(1, 4, 4, 1, 1, 3, 1, 1), method=Method.FULL))]
    run = Run(version="9.9", interrupted=True)
    texts = {name: render(results, run) for name, render in DOCUMENTS.items()}
    document = json.loads(texts["json"])
    assert (document["convcheck"], document["interrupted"], document["checks"][0]["name"]) == ("9.9", True, "tiny")
    suite = ET.fromstring(texts["junit"].encode())
    assert suite.get("tests") == "1" and suite.find("testsuite/testcase").get("name") == "tiny"
    assert annotations.render(results, run) == ""  # nothing failed: no annotation, not even an empty line


def test_validate_lists_expanded_checks_with_cost(tmp_path):
    config = write(tmp_path, "small.yaml", SMALL)
    result = invoke("validate", str(config))
    assert result.exit_code == ExitCode.OK
    assert "small[stride=2]" in result.stdout and "2×5×6×3" in result.stdout
    assert "2 checks valid" in result.stdout


def test_init_writes_a_runnable_config_and_refuses_to_overwrite(tmp_path):
    target = tmp_path / "mine.yaml"
    assert invoke("init", str(target)).exit_code == ExitCode.OK
    assert invoke("init", str(target)).exit_code == ExitCode.INVALID
    assert invoke("init", str(target), "--force").exit_code == ExitCode.OK
    result = invoke("run", str(target), "--json", "-")
    assert result.exit_code == ExitCode.OK, result.stderr
    assert json.loads(result.stdout)["summary"]["passed"] == 2


def test_schema_is_json_and_version_prints():
    result = invoke("schema")
    assert result.exit_code == ExitCode.OK and "properties" in json.dumps(json.loads(result.stdout))
    version = invoke("--version")
    assert version.exit_code == ExitCode.OK and version.stdout.startswith("convcheck ")


def test_github_annotations_point_at_the_check_line(tmp_path):
    result = invoke("run", str(EXAMPLES / "buggy_col2im.yaml"), env={"GITHUB_ACTIONS": "true"})
    assert result.exit_code == ExitCode.FAILED
    lines = [line for line in result.stdout.splitlines() if line.startswith("::error ")]
    assert len(lines) == 1 and "buggy_col2im.yaml" in lines[0] and ",line=" in lines[0]


def test_no_color_means_no_escape_codes(tmp_path):
    result = invoke("run", str(write(tmp_path, "small.yaml", SMALL)))
    assert "\x1b[" not in result.stdout


def test_overrides_apply_to_every_check(tmp_path):
    config = write(tmp_path, "small.yaml", SMALL)
    result = invoke("run", str(config), "--json", "-", "--method", "directional", "--seed", "3")
    checks = json.loads(result.stdout)["checks"]
    assert {c["method"] for c in checks} == {"directional"}


def test_selftest_quick_is_green():
    result = invoke("selftest", "--quick")
    assert result.exit_code == ExitCode.OK, result.stdout[-2000:]
    assert "false alarm" in result.stdout


# configs/textbook.yaml (the seed layer, three quarters of the run below) is run by test_readme.py's
# test_the_sample_screens_are_what_the_command_prints, whose README screen shows it passing with every entry checked.
RUN_TO_THE_README_SCREEN = "textbook.yaml"


def test_every_bundled_config_runs_and_passes():
    bundled = sorted(p for p in CONFIGS.rglob("*") if p.suffix in (".yaml", ".yml"))
    assert RUN_TO_THE_README_SCREEN in {p.name for p in bundled}
    others = [str(p) for p in bundled if p.name != RUN_TO_THE_README_SCREEN]
    result = invoke("run", *others, "--json", "-", "--jobs", "1")
    assert result.exit_code == ExitCode.OK, result.stderr[-3000:]
    document = json.loads(result.stdout)
    assert document["summary"]["failed"] == document["summary"]["errors"] == 0
    assert document["summary"]["total"] >= 20


def test_python_dash_m_and_help_examples():
    env = {**os.environ, **ENV}
    out = subprocess.run([sys.executable, "-m", "convcheck", "--help"], capture_output=True, text=True, env=env)
    assert out.returncode == ExitCode.OK and "convcheck run configs/textbook.yaml" in out.stdout
    for command in ("run", "validate", "init", "schema", "selftest"):
        help_text = invoke(command, "--help").stdout
        assert "Examples" in help_text, command


def test_heatmap_and_plot_options(tmp_path):
    config = write(tmp_path, "small.yaml", SMALL)
    shown = invoke("run", str(config), "--heatmap")
    assert shown.exit_code == ExitCode.OK and "input gradient error over (h, w)" in shown.stdout
    plots = tmp_path / "plots"
    result = invoke("run", str(EXAMPLES / "buggy_col2im.yaml"), "--plot", str(plots))
    if importlib.util.find_spec("matplotlib") is None:
        assert result.exit_code == ExitCode.INVALID and "convcheck[plot]" in result.stderr
    else:
        assert result.exit_code == ExitCode.FAILED
        names = sorted(p.name for p in plots.iterdir())
        assert [name.split("-")[-1] for name in names] == ["input.png", "weights.png"]
        assert all(name.startswith("buggy-col2im-") for name in names)


def test_ctrl_c_prints_results_so_far_and_exits_130(tmp_path):
    # Two checks pass, the third announces itself and waits forever: Ctrl-C then lands while a check runs, on
    # every machine however loaded (the test waits for the announcement, never for a guessed time).
    hostile = Path(__file__).parent / "fixtures" / "hostile"
    layers = [hostile / "good.py"] * 2 + [hostile / "waits.py"] + [hostile / "good.py"] * 3
    checks = "".join(
        f"  - {{name: c{i}, impl: {layer}, batch: 2, in_height: 5, in_width: 6, in_depth: 2, out_depth: 3, "
        "filter_size: 3, padding: 1}\n"
        for i, layer in enumerate(layers)
    )
    config = write(tmp_path, "long.yaml", "checks:\n" + checks)
    json_path, marker = tmp_path / "partial.json", tmp_path / "started"
    command = [sys.executable, "-m", "convcheck", "run", str(config), "--json", str(json_path), "--jobs", "1"]
    env = {**os.environ, **ENV, "CONVCHECK_TEST_MARKER": str(marker)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert time.monotonic() < deadline and process.poll() is None, "the waiting layer never started"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == ExitCode.INTERRUPTED, err
    assert "interrupted" in err and "Traceback" not in err
    document = json.loads(json_path.read_text())  # complete JSON, never half-written
    assert document["interrupted"] is True
    summary = document["summary"]
    assert summary["total"] == len(layers) and summary["passed"] == 2  # the checks not run count as skipped
    assert summary["passed"] + summary["skipped"] == len(layers) and len(document["checks"]) == 2
    assert out.strip().splitlines()[-1] == f"2 passed, 0 failed, {summary['skipped']} skipped"


def test_bad_impl_override_and_unwritable_outputs_are_invalid_command_lines(tmp_path):
    config = write(tmp_path, "small.yaml", SMALL)
    missing = invoke("run", str(config), "--impl", str(tmp_path / "nothere.py"))
    assert missing.exit_code == ExitCode.INVALID and "nothere.py" in missing.stderr and missing.stdout == ""
    (tmp_path / "a-file").write_text("")
    for option, target in (("--json", tmp_path / "a-file" / "out.json"), ("--junit", tmp_path)):
        result = invoke("run", str(config), option, str(target))
        assert result.exit_code == ExitCode.INVALID and option in result.stderr and "Traceback" not in result.stderr
        assert result.stdout == ""  # refused before anything ran


def test_a_bug_in_convcheck_is_one_paragraph_and_exit_3(tmp_path, monkeypatch, capsys):
    import convcheck.cli as cli

    def broken(*_args, **_kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(cli, "_load", broken)
    monkeypatch.setattr(sys, "argv", ["convcheck", "run", str(write(tmp_path, "small.yaml", SMALL))])
    monkeypatch.delenv("CONVCHECK_DEBUG", raising=False)
    with pytest.raises(SystemExit) as caught:
        cli.entry()
    assert caught.value.code == ExitCode.INTERNAL
    err = capsys.readouterr().err
    assert "internal error (RuntimeError: simulated bug)" in err and "Traceback" not in err


def test_user_code_that_kills_its_process_is_an_error_row_not_a_green_run(tmp_path):
    impl = write(
        tmp_path,
        "dies.py",
        "import os\n\ndef forward(x, w, b, stride, padding):\n    os._exit(0)\n\n"
        "def backward(dout, cache):\n    return None\n",
    )
    config = write(tmp_path, "c.yaml", f"impl: {impl.name}\n" + SMALL.split("  - ", 1)[1].replace("    ", ""))
    junit_path = tmp_path / "out.xml"
    command = [sys.executable, "-m", "convcheck", "run", str(config), "--junit", str(junit_path)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **ENV}, timeout=120)
    assert done.returncode == ExitCode.FAILED, done.stdout + done.stderr
    assert "crashed the worker process" in done.stdout
    assert len(ET.parse(junit_path).getroot().findall(".//error")) == 2
    assert junit_path.stat().st_mode & 0o044  # readable by others, as a CI artifact should be
    refused = invoke("run", str(config), "--junit", "-")
    assert refused.exit_code == ExitCode.INVALID and "--junit -" in refused.stderr


def test_the_options_written_out_choices_are_the_enums_values():
    """``--method``, ``--dtype`` and ``--layout`` list their choices without importing ``convcheck.spec``; they
    must stay the enums' values, in order, and parse to the enums' members."""
    from convcheck import options
    from convcheck.spec import DType, Layout

    for choices, enum, name in (
        (options.METHOD_CHOICES, Method, "Method"),
        (options.DTYPE_CHOICES, DType, "DType"),
        (options.LAYOUT_CHOICES, Layout, "Layout"),
    ):
        assert choices == tuple(member.value for member in enum)
        parse = options.spec_choice(name, choices, name.lower())
        assert [parse(value.upper()) for value in choices] == list(enum)


def test_help_does_not_import_the_spec_module():
    """Nor numpy, nor dataclasses unless Typer does: each a share of --help's start-up."""
    code = "import sys, typer\nby_typer = 'dataclasses' in sys.modules\nfrom convcheck.cli import entry\n"
    code += "sys.argv = ['convcheck', '--help']\ntry:\n    entry()\nexcept SystemExit:\n    pass\n"
    code += "print('convcheck.spec' in sys.modules, 'numpy' in sys.modules, ('dataclasses' in sys.modules) > by_typer)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False False False"
