"""The README stays true to the code: every config key, command and exit code it promises exists, and back."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from convcheck.cli import app
from convcheck.config.keys import CHECK_KEYS
from convcheck.exitcodes import ExitCode

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_config_reference_lists_exactly_the_accepted_keys():
    reference = README.split("## Config reference", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", reference, flags=re.MULTILINE))
    assert documented == set(CHECK_KEYS)


def test_every_command_is_documented():
    help_text = CliRunner().invoke(app, ["--help"], env={"NO_COLOR": "1", "COLUMNS": "120"}).stdout
    commands = re.findall(r"^\s{2}(\w+)\s{2,}", help_text.split("Commands:")[1], flags=re.MULTILINE)
    assert commands
    for command in commands:
        assert f"convcheck {command}" in README, command


def test_every_run_option_is_documented():
    help_text = CliRunner().invoke(app, ["run", "--help"], env={"NO_COLOR": "1", "COLUMNS": "200"}).stdout
    options = set(re.findall(r"(--[a-z][a-z-]+)", help_text)) - {"--help", "--no-fail-fast"}
    for option in options:
        assert option in README, option


def test_exit_codes_table_matches_the_enum():
    table = dict(re.findall(r"^\| (\d+) \| (.+) \|$", README, flags=re.MULTILINE))
    assert {int(code) for code in table} == {int(code) for code in ExitCode}


def test_quick_start_has_exactly_two_commands_and_ci_uses_the_test_one():
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.+?)\n```", quick)
    assert len(commands) == 2
    assert "convcheck run configs/textbook.yaml" in commands[0]
    test_command = commands[1].split("&& ")[-1]
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert test_command in ci
