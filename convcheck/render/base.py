"""What every output format shares: the run a document describes, the document interface, and the pieces of
wording (counts, the one-line failure message, indices in the user's layout) that several formats show alike.

No Rich here: the text documents (JSON, JUnit, annotations) import this module without the terminal's library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from convcheck.results import CheckResult, NoteKind, Status
from convcheck.spec import Layout
from convcheck.user.shapes import channels_first

__all__ = [
    "AXES",
    "FAIL_MARK",
    "PASS_MARK",
    "WARNING_NOTES",
    "Document",
    "Run",
    "counts",
    "failure_message",
    "summary_line",
    "user_index",
]

PASS_MARK = "✓"
FAIL_MARK = "✗"

# Internal NHWC axis order → the order a user of each layout reads.
_NCHW_ORDER = {"input": "x", "weights": "w", "bias": "b"}  # the contract's tensor of each gradient
#: The axis names of each gradient's index, as a user of each layout reads them.
AXES = {
    Layout.NHWC: {"input": "n, h, w, c", "weights": "kh, kw, c_in, c_out", "bias": "c_out"},
    Layout.NCHW: {"input": "n, c, h, w", "weights": "c_out, c_in, kh, kw", "bias": "c_out"},
}


@dataclass(frozen=True)
class Run:
    """What a document says about the run besides its results.

    ``version``: convcheck's, written into the JSON. ``interrupted``: Ctrl-C ended the batch early.
    ``suite``: the JUnit suite name (and the class name of checks that have no config file).
    ``not_run``: the names of the checks that were planned but did not run; every format counts them as skipped.
    """

    version: str
    interrupted: bool = False
    suite: str = "convcheck"
    not_run: tuple[str, ...] = ()  # checks of the run that did not run (``--fail-fast``, Ctrl-C): skipped


class Document(Protocol):
    """A text output format: ``render(results, run)`` is the whole document, ready to write to a file."""

    def __call__(self, results: Sequence[CheckResult], run: Run, /) -> str: ...


def user_index(tensor: str, index: Sequence[int], layout: Layout) -> tuple[int, ...]:
    """An internal (NHWC) gradient index in the order of the user's layout."""
    if layout is Layout.NCHW and tensor in _NCHW_ORDER:
        return tuple(index[axis] for axis in channels_first(_NCHW_ORDER[tensor], len(index)))
    return tuple(index)


#: Notes that make a check count as a warning: it ran, but with less protection than asked for.
WARNING_NOTES = frozenset({NoteKind.TIMEOUT_NOT_ENFORCED})


def counts(results: Sequence[CheckResult], not_run: Sequence[str] = ()) -> dict[str, int]:
    """The one counting rule of every output (the table's summary line, JSON, JUnit, the exit code).

    ``passed``, ``failed`` (a gradient, the forward or the contract is wrong) and ``errors`` (the check could not
    run to its end) count the checks that ran: an error is never counted as failed. ``skipped``: checks the layer
    refused as their config expects (``expected_error``), and checks that did not run (``not_run``: after
    ``--fail-fast`` stopped the batch, or Ctrl-C). ``total`` is all of them. ``warnings`` counts checks (of any
    status) with a warning: a contract finding that cannot change a gradient, or a note in ``WARNING_NOTES``.
    """
    passed = sum(r.status is Status.PASS for r in results)
    failed = sum(r.status is Status.FAIL for r in results)
    errors = sum(r.status is Status.ERROR for r in results)
    warnings = sum(bool(r.warnings) or any(n.kind in WARNING_NOTES for n in r.notes) for r in results)
    skipped = sum(r.status is Status.SKIPPED for r in results) + len(not_run)
    return {
        "total": len(results) + len(not_run),
        "passed": passed,
        "failed": failed,
        "errors": errors,
        "skipped": skipped,
        "warnings": warnings,
    }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def summary_line(results: Sequence[CheckResult], not_run: Sequence[str] = ()) -> str:
    """``N passed, M failed``, then ``E errors``, ``S skipped`` and ``W warnings`` when there are any.

    The numbers are ``counts``: the same as the JSON summary and the JUnit attributes (errors are not failures).
    """
    c = counts(results, not_run)
    parts = [f"{c['passed']} passed", f"{c['failed']} failed"]
    if c["errors"]:
        parts.append(_plural(c["errors"], "error"))
    if c["skipped"]:
        parts.append(f"{c['skipped']} skipped")
    if c["warnings"]:
        parts.append(_plural(c["warnings"], "warning"))
    return ", ".join(parts)


def failure_message(r: CheckResult) -> str:
    """One line naming what failed: the tensor and its worst entry, the forward, the contract or the error."""
    if r.error:
        return r.error
    parts = []
    for g in r.gradients:
        if not g.passed and g.worst:
            e = g.worst[0]
            index = user_index(g.name, e.index, r.spec.layout)
            parts.append(
                f"{g.name} gradient wrong in {g.over_tolerance} of {g.checked or g.projections} "
                f"(worst {list(index)}: analytic {e.analytic:.6g}, numeric {e.numeric:.6g})"
            )
    if r.forward is not None and not r.forward.ok:
        parts.append(f"forward differs from the reference by up to {r.forward.max_abs_error:.3g}")
    parts.extend(f"contract: {finding!s}" for finding in r.contract)
    if r.diagnosis:
        parts.append(f"hint: {r.diagnosis[0]!s}")
    return "; ".join(parts) or "failed"
