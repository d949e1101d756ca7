"""The pre-commit hooks: each hook's ``entry`` and ``args`` run on the files pre-commit would pass it, and, where
the ``pre-commit`` command is installed, the hooks tried for real with ``pre-commit try-repo``."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from userproject import CONFIG, REPO, write_project

HOOKS = {hook["id"]: hook for hook in yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))}
TYPES = {"yaml": (".yaml", ".yml"), "python": (".py",)}  # the identify tags the hooks use
CHANGED = ["layer.py", "buggy.py", "convcheck.yaml", "notes.yaml", "docs/convcheck-notes.txt"]
# A layer whose import leaves a mark: validating its config must not import it.
MARKING = (
    "from pathlib import Path\n\nPath(__file__).with_name('imported').touch()\n\n\n"
    "def forward(x, w, b, stride, padding):\n    raise NotImplementedError\n\n\n"
    "def backward(dout, cache):\n    raise NotImplementedError\n"
)


def hook_command(hook_id: str, changed: list[str]) -> list[str]:
    """The command pre-commit runs for ``hook_id`` when ``changed`` files are committed (``convcheck`` stands for
    ``python -m convcheck``, since the hook's environment is not installed here); [] when it would not run."""
    hook = HOOKS[hook_id]
    files = [f for f in changed if re.search(hook["files"], f)]
    files = [f for f in files if all(f.endswith(TYPES[tag]) for tag in hook.get("types", []))]
    if not files:
        return []
    command = shlex.split(hook["entry"]) + list(hook.get("args", []))
    if hook.get("pass_filenames", True):
        command += files
    assert command[0] == "convcheck"
    return [sys.executable, "-m", "convcheck", *command[1:]]


def run_hook(hook_id: str, folder: Path, changed: list[str] = CHANGED) -> subprocess.CompletedProcess[str]:
    command = hook_command(hook_id, changed)
    assert command, f"{hook_id} would not run for {changed}"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def test_the_hooks_are_declared_for_python():
    assert set(HOOKS) == {"convcheck-validate", "convcheck-run"}
    assert all(hook["language"] == "python" for hook in HOOKS.values())
    assert HOOKS["convcheck-validate"]["entry"] == "convcheck validate"


def test_validate_gets_only_the_convcheck_configs():
    command = hook_command("convcheck-validate", CHANGED)
    assert command[-1:] == ["convcheck.yaml"] and "notes.yaml" not in command
    assert hook_command("convcheck-validate", ["configs/convcheck-small.yml"])[-1] == "configs/convcheck-small.yml"
    assert hook_command("convcheck-validate", ["layer.py"]) == []


def test_validate_passes_a_good_config_without_running_the_layer(tmp_path: Path):
    write_project(tmp_path, config=CONFIG.replace("impl: buggy.py", "impl: marking.py"))
    (tmp_path / "marking.py").write_text(MARKING, encoding="utf-8")
    completed = run_hook("convcheck-validate", tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert "5 checks valid" in completed.stdout
    assert not (tmp_path / "imported").exists()


def test_validate_fails_a_broken_config_with_its_message(tmp_path: Path):
    write_project(tmp_path, config=CONFIG.replace("padding: 1\n", "padding: -1\n"))
    completed = run_hook("convcheck-validate", tmp_path)
    assert completed.returncode == 2
    assert "convcheck.yaml:9:14: checks[1].padding" in completed.stderr


def test_run_checks_the_configs_when_a_layer_changes(tmp_path: Path):
    write_project(tmp_path)
    assert hook_command("convcheck-run", ["layer.py"])[-1] == "convcheck.yaml"  # the configs of args, no file names
    completed = run_hook("convcheck-run", tmp_path, ["layer.py"])
    assert completed.returncode == 1
    assert "4 passed, 1 failed" in completed.stdout


def test_run_passes_when_every_check_passes(tmp_path: Path):
    write_project(tmp_path, config=CONFIG[: CONFIG.index("  - name: wrong")])
    assert run_hook("convcheck-run", tmp_path).returncode == 0


@pytest.mark.skipif(shutil.which("pre-commit") is None, reason="the pre-commit command is not installed")
def test_pre_commit_try_repo_runs_both_hooks(tmp_path: Path):
    """The real thing: pre-commit installs convcheck from this repository (its HEAD) into its own environment.

    Both hooks run in one ``try-repo`` (no hook id: every hook of the repository), since each ``try-repo`` builds
    its environment afresh in a store of its own and that build is nearly all of the time; ``--verbose`` shows
    each hook's output, passed or failed, so each hook's verdict and output are read from its own section."""
    write_project(tmp_path)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "a layer"]):
        subprocess.run([*git, *command], cwd=tmp_path, check=True)
    command = ["pre-commit", "try-repo", str(REPO), "--all-files", "--verbose"]
    tried = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert tried.returncode == 1, tried.stdout  # a hook failed
    sections = hook_sections(tried.stdout)
    assert set(sections) == set(HOOKS), tried.stdout
    validate, run = sections["convcheck-validate"], sections["convcheck-run"]
    assert validate.verdict == "Passed" and "5 checks valid" in validate.output, tried.stdout
    assert run.verdict == "Failed" and "- exit code: 1" in run.output, tried.stdout
    assert "4 passed, 1 failed" in run.output, tried.stdout


@dataclass(frozen=True)
class HookSection:
    """One hook's part of pre-commit's output: the verdict on its ``name.....Passed`` line and what follows it."""

    verdict: str
    output: str


def hook_sections(stdout: str) -> dict[str, HookSection]:
    """Each hook's section of ``pre-commit run --verbose`` output, by hook id (the ``- hook id:`` line in it)."""
    names = "|".join(re.escape(hook["name"]) for hook in HOOKS.values())
    heading = re.compile(rf"^(?:{names})\.+(Passed|Failed|Skipped)$", re.MULTILINE)
    starts = list(heading.finditer(stdout))
    sections = {}
    for start, end in zip(starts, [*starts[1:], None], strict=True):
        output = stdout[start.end() : end.start() if end else len(stdout)]
        hook_id = re.search(r"^- hook id: (\S+)$", output, re.MULTILINE)
        assert hook_id, output
        sections[hook_id.group(1)] = HookSection(start.group(1), output)
    return sections
