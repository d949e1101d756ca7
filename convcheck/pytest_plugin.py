"""The pytest plugin: every check of a ``convcheck.yaml`` becomes a test item, so a plain ``pytest`` runs them.

pytest loads this module through the ``pytest11`` entry point named ``convcheck`` (``pip install convcheck``
is all it takes; ``-p no:convcheck`` turns it off). It is the only module of convcheck that imports pytest,
which is not a dependency: pytest imports the plugin, never the other way round.

What is collected: every file named ``convcheck.yaml`` or ``convcheck*.yaml`` (``.yml`` too) in the
directories pytest collects, every YAML file named on the command line, and the files matching the patterns
of the ``convcheck_paths`` ini option (see docs/ci.md). Each expanded check is one item named after the
check, so node ids (``tests/convcheck.yaml::k3[stride=2,padding=0]``) are stable across runs and workers,
which is what ``--lf``, ``-k`` and pytest-xdist need. A failing check's report is the failure panel of
``convcheck run`` in plain text; a config error is a collection error carrying convcheck's own message.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # numpy comes with these: pytest loads the plugin in every run, collecting a config or not
    from convcheck.results import CheckResult
    from convcheck.spec import CheckSpec

#: The names a config file must have to be collected without any configuration.
NAME_PATTERNS = ("convcheck.yaml", "convcheck*.yaml", "convcheck.yml", "convcheck*.yml")
YAML_SUFFIXES = (".yaml", ".yml")
PATHS_INI = "convcheck_paths"
MARKER = "convcheck"
PANEL_WIDTH = 120  # fixed, not the terminal's: the same text goes to JUnit, and xdist workers have no terminal


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        PATHS_INI,
        type="linelist",
        default=[],
        help=(
            "convcheck: more config files to collect, as glob patterns relative to the rootdir "
            "(e.g. configs/*.yaml) or folders; they must lie where pytest collects"
        ),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: a check from a convcheck config file (added by convcheck)")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if is_config(file_path, parent.config.rootpath, parent.config.getini(PATHS_INI), parent.session.isinitpath):
        return ConfigFile.from_parent(parent, path=file_path)
    return None


def is_config(path: Path, root: Path, patterns: Sequence[str], named: Any = None) -> bool:
    """Whether pytest should collect ``path`` as a convcheck config.

    Args:
        path: a file pytest is about to collect.
        root: the rootdir, which ``patterns`` are relative to.
        patterns: the ``convcheck_paths`` ini lines: glob patterns of files, or folders (every YAML file in them).
        named: ``session.isinitpath``: a YAML file named on the command line is collected whatever its name.
    """
    if path.suffix not in YAML_SUFFIXES:
        return False
    if any(fnmatch.fnmatch(path.name, pattern) for pattern in NAME_PATTERNS):
        return True
    if named is not None and named(path):
        return True
    try:
        relative = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        relative = None
    for pattern in patterns:
        folder = (root / pattern).resolve()
        if folder.is_dir() and folder in path.resolve().parents:
            return True
        if relative is not None and fnmatch.fnmatch(relative, pattern):
            return True
    return False


class ConfigFile(pytest.File):
    """One config file: its expanded checks, or a collection error with every problem the loader found."""

    def collect(self) -> Iterator[CheckItem]:
        from convcheck.config import load_file

        load = load_file(self._shown_path())
        if load.errors:
            raise self.CollectError(config_problems(load.errors))
        for spec in load.specs:
            yield CheckItem.from_parent(self, name=spec.name, spec=spec)

    def _shown_path(self) -> Path:
        """The file relative to the current folder, as messages name it (like ``convcheck run``)."""
        try:
            return self.path.relative_to(Path.cwd())
        except ValueError:
            return self.path


def config_problems(errors: Sequence[object]) -> str:
    """What the command prints for a broken config: one line per problem (file, line, field, what is allowed)."""
    count = len(errors)
    lines = [str(error) for error in errors]
    lines.append(f"{count} problem{'s' if count != 1 else ''} in this config file; none of its checks was collected.")
    return "\n".join(lines)


class CheckFailed(Exception):
    """Raised by an item whose check failed or errored; ``repr_failure`` renders its result, not a traceback."""

    def __init__(self, result: CheckResult) -> None:
        super().__init__(result.name)
        self.result = result


class CheckItem(pytest.Item):
    """One expanded check. It runs as ``convcheck run`` runs a check in its own process (with its timeout)."""

    def __init__(self, *, spec: CheckSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.add_marker(MARKER)

    def runtest(self) -> None:
        from convcheck.batch.guard import run_one
        from convcheck.results import Status

        result = run_one(self.spec)
        self.user_properties.append(("convcheck_status", result.status.value))
        if result.status is Status.PASS:
            return
        if result.status in (Status.FAIL, Status.ERROR):
            raise CheckFailed(result)
        pytest.skip(result.error or result.status.value)  # a status beyond pass/fail/error: not a verdict

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CheckFailed):
            return CheckReport(excinfo.value.result, str(self.path), self._line(), PANEL_WIDTH)
        return super().repr_failure(excinfo, style=style)  # a bug in convcheck: its traceback helps

    def reportinfo(self) -> tuple[Path, int | None, str]:
        line = self._line()
        return self.path, None if line is None else line - 1, f"convcheck check {self.name}"

    def _line(self) -> int | None:
        return None if self.spec.source is None else self.spec.source.line


@dataclass(frozen=True)
class Crash:
    """Where and, in one line, why a check failed: what pytest's ``-ra`` summary, ``--tb=line`` and JUnit's
    ``message`` attribute show."""

    path: str
    lineno: int | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.lineno is None else f"{self.path}:{self.lineno}"
        return f"{where}: {self.message}"


class CheckReport:
    """A failed check's report for pytest: the failure panel in plain text, and a one-line crash message."""

    def __init__(self, result: CheckResult, path: str, line: int | None, width: int) -> None:
        from convcheck.api import explain

        summary = headline(result)
        # The headline first: under pytest-xdist the report travels as text, and pytest's one-line summary of a
        # failure is then the text's first line.
        self.text = summary + "\n" + explain(result, width=width).rstrip("\n")
        self.reprcrash = Crash(path, line, summary)

    def toterminal(self, tw: Any) -> None:
        for line in self.text.splitlines():
            tw.line(line)

    def __str__(self) -> str:
        return self.text


def headline(result: CheckResult) -> str:
    """One line: the error, or what is over tolerance, and the first hint."""
    if result.error:
        return result.error
    parts = [
        f"{g.name} gradient: {g.over_tolerance:,} entries over tolerance" for g in result.gradients if not g.passed
    ]
    if result.forward is not None and not result.forward.ok:
        parts.append("forward differs from the reference")
    if result.contract:
        parts.append(f"{len(result.contract)} contract finding{'s' if len(result.contract) != 1 else ''}")
    if result.diagnosis:
        parts.append(f"hint: {result.diagnosis[0]}")
    return f"{result.status.value}: " + ("; ".join(parts) or "failed")


__all__ = ["CheckFailed", "CheckItem", "CheckReport", "ConfigFile", "config_problems", "headline", "is_config"]
