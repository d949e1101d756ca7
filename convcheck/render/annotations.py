"""CI annotations: a GitHub Actions workflow command (``::error file=…,line=…::…``) for every failed check, so
that the failure shows on the config line in the pull request."""

from __future__ import annotations

from collections.abc import Sequence

from convcheck.render.base import Run, failure_message
from convcheck.results import CheckResult

__all__ = ["github_annotations", "render"]


def github_annotations(results: Sequence[CheckResult]) -> list[str]:
    """``::error file=…,line=…::…`` for every failed check (GitHub Actions workflow commands)."""
    lines = []
    for r in results:
        if r.status.ok:
            continue
        where = f"file={r.spec.source.file},line={r.spec.source.line}," if r.spec.source else ""
        # Workflow commands end at a newline and use % escapes: a message must stay on its one line.
        message = failure_message(r).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        lines.append(f"::error {where}title=convcheck {r.name}::{message}")
    return lines


def render(results: Sequence[CheckResult], run: Run) -> str:
    """The annotations, one per line (each ending in a newline); empty when every check passed."""
    return "".join(f"{line}\n" for line in github_annotations(results))
