"""The GitHub Action's steps (``action.yml``), as a script that runs anywhere: ``python -m convcheck.github``.

    python -m convcheck.github run convcheck.yaml configs/ [-- more options of convcheck run]
    python -m convcheck.github summary results.json

``run`` runs ``convcheck run`` on the paths with GitHub annotations, ``--junit`` and ``--json``, then writes
the job summary and the step outputs, and exits with convcheck's exit code. ``summary`` writes the job
summary from a ``--json`` file. GitHub tells a step where to write through environment variables: the summary
(markdown) is appended to the file ``$GITHUB_STEP_SUMMARY`` and the outputs (``name=value`` lines) to
``$GITHUB_OUTPUT``; without them (on a laptop) the summary goes to stdout and the outputs are not written.
The summary is made from the JSON document only (its contract is in DESIGN.md), never from printed text.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from convcheck.exitcodes import ExitCode

SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
OUTPUT_ENV = "GITHUB_OUTPUT"
TENSORS = ("input", "weights", "bias")
MAX_ROWS = 200  # GitHub caps a step summary at 1 MiB; failures are always listed, passes up to this many rows
MARKS = {"pass": "✅", "fail": "❌", "error": "⚠️"}
DEFAULT_JSON = "convcheck-results.json"
DEFAULT_JUNIT = "convcheck-junit.xml"


def summary_markdown(document: Mapping[str, Any] | None, problem: str | None = None) -> str:
    """The job summary: a headline, a table of checks (failures first) and what each failure says.

    Args:
        document: the ``--json`` document of ``convcheck run``; None when the run wrote none.
        problem: why there is no document (e.g. the config was invalid, exit code 2).
    """
    if document is None:
        return f"## convcheck: no results\n\n{_cell(problem or 'convcheck wrote no results')}\n"
    checks: list[Mapping[str, Any]] = list(document.get("checks", []))
    counts = document.get("summary", {})
    bad = [c for c in checks if c.get("status") != "pass"]
    shown = bad + [c for c in checks if c.get("status") == "pass"][: max(MAX_ROWS - len(bad), 0)]
    lines = [f"## convcheck: {_headline(counts)}", ""]
    if document.get("interrupted"):
        lines += ["**Interrupted**: the table lists the checks that finished.", ""]
    lines += ["| | check | layer | input | weights | bias | seconds |", "|---|---|---|---:|---:|---:|---:|"]
    lines += [_row(check) for check in shown]
    if len(shown) < len(checks):
        lines.append(f"\n… and {len(checks) - len(shown)} more passing checks (see the JSON or JUnit file).")
    sweep = document.get("sweep")
    if isinstance(sweep, Mapping) and sweep.get("sentence"):
        lines += ["", f"**What the sweep says:** {_cell(str(sweep['sentence']))}"]
    if bad:
        lines += ["", "### What failed", ""] + [_failure(check) for check in bad]
    return "\n".join(lines) + "\n"


def _headline(counts: Mapping[str, Any]) -> str:
    total, passed = counts.get("total", 0), counts.get("passed", 0)
    if total and passed == total:
        return f"all {total} check{'s' if total != 1 else ''} passed"
    failed, errors = counts.get("failed", 0), counts.get("errors", 0)
    parts = [f"{failed} failed"] + ([f"{errors} errored"] if errors else []) + [f"{passed} passed"]
    return f"{', '.join(parts)} of {total} checks"


def _row(check: Mapping[str, Any]) -> str:
    status = str(check.get("status"))
    gradients = check.get("gradients") or {}
    errors = [_error_cell(gradients.get(tensor)) for tensor in TENSORS]
    seconds = check.get("seconds")
    cells = [
        MARKS.get(status, status),
        _cell(str(check.get("name"))),
        _cell(str(check.get("layer") or "")),
        *errors,
        f"{seconds:.2f}" if isinstance(seconds, int | float) else "",
    ]
    return "| " + " | ".join(cells) + " |"


def _error_cell(gradient: Mapping[str, Any] | None) -> str:
    """A gradient's max relative error; bold when it is over tolerance; empty for a tensor without entries."""
    if not gradient or gradient.get("total") == 0:
        return ""
    value = gradient.get("max_rel_error")
    text = f"{value:.1e}" if isinstance(value, int | float) and math.isfinite(value) else str(value)
    return text if gradient.get("passed", True) else f"**{text}**"


def _failure(check: Mapping[str, Any]) -> str:
    """One list item: the check, where it is declared, and what went wrong in it."""
    source = check.get("source") or {}
    where = f" ({_cell(str(source.get('file')))}:{source.get('line')})" if source.get("file") else ""
    parts = [str(check["error"])] if check.get("error") else []
    for tensor, gradient in (check.get("gradients") or {}).items():
        if not gradient.get("passed", True):
            wrong, checked = gradient.get("over_tolerance"), gradient.get("checked")
            parts.append(f"{tensor} gradient: {wrong} of {checked} entries over tolerance")
    forward = check.get("forward")
    if forward and not forward.get("ok", True):
        parts.append("forward differs from the reference convolution")
    parts += [f"contract: {finding}" for finding in check.get("contract", [])]
    parts += [f"hint: {hint}" for hint in check.get("diagnosis", [])[:1]]
    return f"- **{_cell(str(check.get('name')))}**{where}: " + _cell("; ".join(parts) or "failed")


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell: no HTML, no column break, no code span, one line."""
    return html.escape(text, quote=False).replace("|", "\\|").replace("`", "\\`").replace("\r", " ").replace("\n", " ")


def outputs(document: Mapping[str, Any] | None, code: int) -> dict[str, str]:
    """The step's outputs: convcheck's exit code and the counts of its summary."""
    counts = (document or {}).get("summary", {})
    found = {"exit-code": str(code)}
    found.update({key: str(counts.get(key, 0)) for key in ("total", "passed", "failed", "errors")})
    return found


def write_step_files(document: Mapping[str, Any] | None, code: int, problem: str | None = None) -> None:
    """Append the summary to ``$GITHUB_STEP_SUMMARY`` (stdout without it) and the outputs to ``$GITHUB_OUTPUT``."""
    markdown = summary_markdown(document, problem)
    summary_path = os.environ.get(SUMMARY_ENV)
    if summary_path:
        with open(summary_path, "a", encoding="utf-8") as handle:
            handle.write(markdown)
    else:
        sys.stdout.write(markdown)
    output_path = os.environ.get(OUTPUT_ENV)
    if output_path:
        with open(output_path, "a", encoding="utf-8") as handle:
            handle.writelines(f"{key}={value}\n" for key, value in outputs(document, code).items())


def read_document(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON document at ``path``, or None and why it could not be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, f"{path} was not written: the run stopped before any check (see the step's log)"
    except (OSError, ValueError) as exc:
        return None, f"{path} could not be read: {exc}"


def run(paths: Sequence[str], extra: Sequence[str], json_path: Path, junit: Path) -> int:
    """``convcheck run PATHS --annotate github --junit JUNIT --json JSON EXTRA``, then the step files.

    Returns:
        convcheck's exit code (0 passed, 1 failed, 2 invalid, …), which the step exits with.
    """
    json_path.unlink(missing_ok=True)  # a stale file from an earlier run must not become this run's summary
    command = [sys.executable, "-m", "convcheck", "run", *paths, "--annotate", "github"]
    command += ["--junit", str(junit), "--json", str(json_path), *extra]
    code = subprocess.run(command, check=False).returncode
    document, problem = read_document(json_path)
    if document is None and code == ExitCode.INVALID:
        problem = "the command line or a config is invalid, so nothing was run; the step's log says why"
    write_step_files(document, code, problem)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """The script: ``run PATHS… [-- OPTIONS…]`` or ``summary JSON``; returns the exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in words:  # what follows goes to convcheck run as it is
        words, extra = words[: words.index("--")], words[words.index("--") + 1 :]
    parser = argparse.ArgumentParser(prog="python -m convcheck.github", description="convcheck's GitHub Action steps")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run convcheck with annotations, JUnit, JSON and a job summary")
    run_parser.add_argument("paths", nargs="+", help="config files or folders")
    run_parser.add_argument("--json", dest="json_path", type=Path, default=Path(DEFAULT_JSON))
    run_parser.add_argument("--junit", type=Path, default=Path(DEFAULT_JUNIT))
    summary_parser = commands.add_parser("summary", help="write the job summary of a --json file")
    summary_parser.add_argument("json_path", type=Path)
    arguments = parser.parse_args(words)
    if arguments.command == "run":
        return run(arguments.paths, extra, arguments.json_path, arguments.junit)
    if extra:
        parser.error("summary takes no options after --")
    document, problem = read_document(arguments.json_path)
    write_step_files(document, ExitCode.OK if document is not None else ExitCode.INVALID, problem)
    return ExitCode.OK if document is not None else ExitCode.INVALID


if __name__ == "__main__":
    sys.exit(main())
