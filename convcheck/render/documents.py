"""The text documents convcheck writes to files, by format name: the table the CLI's output options use.

Every entry is a ``base.Document``: ``render(results, run) -> str``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from convcheck.render import html, json, junit
from convcheck.render.base import Document, Run
from convcheck.render.files import write_atomic
from convcheck.results import CheckResult

__all__ = ["DOCUMENTS", "write_documents"]

DOCUMENTS: dict[str, Document] = {"json": json.render, "junit": junit.render, "html": html.render}


def write_documents(results: Sequence[CheckResult], run: Run, paths: Mapping[str, str | Path | None]) -> list[OSError]:
    """Write each format in ``paths`` (a ``DOCUMENTS`` name → its file; None: not wanted), in that order.

    A file that cannot be written does not stop the others (a full disk must not cost the JUnit report too).

    Returns:
        The failures, one ``OSError`` per file not written (``filename`` and ``strerror`` say which and why).
    """
    failures = []
    for name, path in paths.items():
        if path is not None:
            try:
                write_atomic(path, DOCUMENTS[name](results, run))
            except OSError as exc:
                failures.append(exc)
    return failures
