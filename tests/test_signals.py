"""SIGINT, SIGTERM and SIGHUP at several moments of a run: complete partial results, exit 130, no traceback, and
no process left behind."""

from __future__ import annotations

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

from convcheck.cli import app
from convcheck.exitcodes import ExitCode

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals, prctl and /proc: Linux")

HOSTILE = Path(__file__).parent / "fixtures" / "hostile"
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
LAYER = (  # one small check, in YAML's flow style
    "  - {{name: {name}, impl: {impl}, batch: 2, in_height: 5, in_width: 6, in_depth: 2, out_depth: 3, "
    "filter_size: 3, padding: 1}}\n"
)


def config(tmp_path: Path, impls: list[str]) -> Path:
    text = "checks:\n" + "".join(LAYER.format(name=f"c{i}-{Path(m).stem}", impl=m) for i, m in enumerate(impls))
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def wait_for(predicate, what: str, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("finished", [0, 1], ids=["before-any-result", "after-one-result"])
def test_a_signal_while_checks_run_keeps_the_results_so_far(tmp_path, signum, finished):
    impls = [str(HOSTILE / "good.py")] * finished + [str(HOSTILE / "waits.py"), str(HOSTILE / "good.py")]
    marker = tmp_path / "started"
    json_path, junit_path = tmp_path / "out.json", tmp_path / "out.xml"
    command = [sys.executable, "-m", "convcheck", "run", str(config(tmp_path, impls))]
    command += ["--json", str(json_path), "--junit", str(junit_path)]
    env = {**os.environ, "CONVCHECK_TEST_MARKER": str(marker), "COLUMNS": "120"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for(marker.exists, "the waiting layer to start")
        process.send_signal(signum)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == ExitCode.INTERRUPTED, err
    assert "Traceback" not in err and f"interrupted ({signum.name})" in err
    document = json.loads(json_path.read_text())
    assert [c["status"] for c in document["checks"]] == ["pass"] * finished
    cases = ET.parse(junit_path).getroot().findall(".//testcase")
    ran = [case for case in cases if case.find("skipped") is None]
    assert len(ran) == finished  # the checks that did not run are listed too, as skipped
    layer = int(marker.read_text())
    wait_for(lambda: not Path(f"/proc/{layer}").exists(), "the layer's process to be gone", limit=10)


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_a_signal_while_results_print_lets_every_output_complete(tmp_path, monkeypatch, signum):
    from convcheck.render import panels

    printing = panels.print_results

    def signalled_while_printing(*args, **kwargs):
        os.kill(os.getpid(), signum)
        return printing(*args, **kwargs)

    monkeypatch.setattr(panels, "print_results", signalled_while_printing)
    path = tmp_path / "run.yaml"
    path.write_text("checks:\n" + LAYER.format(name="a", impl="builtin") + LAYER.format(name="b", impl="builtin"))
    json_path, junit_path = tmp_path / "out.json", tmp_path / "out.xml"
    before = signal.getsignal(signum)
    result = CliRunner().invoke(app, ["run", str(path), "--json", str(json_path), "--junit", str(junit_path)])
    assert result.exit_code == ExitCode.INTERRUPTED, result.output
    assert [c["status"] for c in json.loads(json_path.read_text())["checks"]] == ["pass", "pass"]
    assert len(ET.parse(junit_path).getroot().findall(".//testcase")) == 2
    assert signal.getsignal(signum) == before  # the run gives the handlers back


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_a_signal_while_configs_load_runs_nothing_and_still_writes_the_outputs(tmp_path, monkeypatch, signum):
    import convcheck.config

    loading = convcheck.config.load_configs

    def signalled_while_loading(*args, **kwargs):
        os.kill(os.getpid(), signum)
        return loading(*args, **kwargs)

    monkeypatch.setattr(convcheck.config, "load_configs", signalled_while_loading)
    path = tmp_path / "run.yaml"
    path.write_text("checks:\n" + LAYER.format(name="a", impl="builtin"))
    json_path = tmp_path / "out.json"
    result = CliRunner().invoke(app, ["run", str(path), "--json", str(json_path)])
    assert result.exit_code == ExitCode.INTERRUPTED, result.output
    document = json.loads(json_path.read_text())
    assert document["checks"] == [] and document["interrupted"] is True
    assert f"interrupted ({signum.name})" in result.stderr
