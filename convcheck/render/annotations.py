"""CI annotations: a GitHub Actions workflow command (``::error file=…,line=…::…``) for every failed check, so
that the failure shows on the config line in the pull request."""

from __future__ import annotations

from collections.abc import Sequence

from convcheck.render.base import Run, failure_message
from convcheck.results import CheckResult

__all__ = ["escape_data", "escape_property", "github_annotations", "render"]


def escape_data(text: str) -> str:
    """A workflow command's message: ``%``, CR and LF escaped, so it stays on its one line (GitHub's toolkit
    escapes exactly these in a command's data)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value (``file``, ``title``): the data escapes, and ``:`` and ``,``, which
    would otherwise end the value or the property list."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotations(results: Sequence[CheckResult]) -> list[str]:
    """``::error file=…,line=…::…`` for every failed check (GitHub Actions workflow commands)."""
    lines = []
    for r in results:
        if r.status.ok:
            continue
        source = r.spec.source
        where = f"file={escape_property(source.file)},line={source.line}," if source else ""
        title = escape_property(f"convcheck {r.name}")
        lines.append(f"::error {where}title={title}::{escape_data(failure_message(r))}")
    return lines


def render(results: Sequence[CheckResult], run: Run) -> str:
    """The annotations, one per line (each ending in a newline); empty when every check passed."""
    return "".join(f"{line}\n" for line in github_annotations(results))
