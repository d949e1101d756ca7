"""The README and the tutorial are true line by line where a test can tell: every config they show loads, the
widths they claim are the widths rendered, every option they name exists, and the sample screens are what the
code prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rich.cells import cell_len
from typer.testing import CliRunner

from convcheck import cli
from convcheck.cli import app
from convcheck.config import load_configs
from convcheck.starter import starter_files

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
TUTORIAL = (ROOT / "docs" / "tutorial.md").read_text()
COMMANDS = ("run", "validate", "init", "schema", "selftest")


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def _configs(text: str) -> list[str]:
    """The YAML blocks that are convcheck configs (not CI workflows or one-line snippets)."""
    return [b for b in _blocks(text, "yaml") if "jobs:" not in b and ("batch:" in b or "checks:" in b)]


@pytest.mark.parametrize("index", range(len(_configs(README))))
def test_every_config_the_readme_shows_loads(tmp_path, index):
    text = _configs(README)[index]
    layer = starter_files(tmp_path / "c.yaml")[tmp_path / "layers.py"]
    (tmp_path / "layers.py").write_text(layer)  # the README's own-layer example names layers.py
    config = tmp_path / "c.yaml"
    config.write_text(text)
    loaded = load_configs([config])
    assert not loaded.errors, [str(e) for e in loaded.errors]
    assert loaded.specs


def test_no_false_claims_the_issue_found():
    assert "three-line" not in README and "DESIGN.md" not in README
    assert "pip install convcheck" not in README  # not on a package index: installed from a checkout


def test_the_pipe_width_it_claims_is_the_one_rendered_and_samples_fit():
    claimed = re.search(r"renders (\d+) columns wide", README)
    assert claimed and int(claimed.group(1)) == cli.PIPE_WIDTH
    samples = [b for b in _blocks(README, "text") if "passed, " in b]
    assert len(samples) >= 2
    for sample in samples:
        assert max(cell_len(line) for line in sample.splitlines()) <= cli.PIPE_WIDTH


def _mask(text: str) -> list[str]:
    """Lines with times masked: they are the only thing that changes between runs."""
    masked = [re.sub(r"\d+\.\d+ s\b", "T s", line.rstrip()) for line in text.splitlines()]
    return [re.sub(r"\s+", " ", line) for line in masked]


@pytest.mark.parametrize(
    ("name", "config"), [("buggy-col2im", "examples/buggy_col2im.yaml"), ("textbook-layer", "configs/textbook.yaml")]
)
def test_the_sample_screens_are_what_the_command_prints(name, config):
    sample = next(b for b in _blocks(README, "text") if name in b)
    env = {"NO_COLOR": "1", "COLUMNS": None}  # a pipe: no COLUMNS
    result = CliRunner().invoke(app, ["run", str(ROOT / config)], env=env)
    assert _mask(result.stdout) == _mask(sample)


def test_every_option_the_readme_names_exists():
    helps = "\n".join(
        CliRunner().invoke(app, [*c, "-h"], env={"COLUMNS": "200"}).stdout for c in [(), *((c,) for c in COMMANDS)]
    )
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", README + TUTORIAL))
    not_ours = {
        "--strict-markers",
        "--strict-config",
        "--nworkers",
        "--nthreads",
        "--check",
        "--install-completion",
        "--layers",
    }  # pytest's, dask's, ruff's, typer's and benchmarks/false_alarms.py's options
    assert {o for o in named - not_ours if o not in helps} == set()


def test_the_tutorial_screens_fit_80_columns_and_run_the_commands_it_names():
    screens = _blocks(TUTORIAL, "text")
    assert len(screens) >= 5
    for screen in screens:
        assert max(cell_len(line) for line in screen.splitlines()) <= 80
    typed = [line[2:] for s in screens for line in s.splitlines() if line.startswith("$ ") and len(line) > 2]
    assert typed[0] == "convcheck init" and typed.count("convcheck run") == 2
    assert "✗ col2im accumulate" in screens[3] and "2 passed, 0 failed" in screens[1]
