"""What ``convcheck selftest`` prints: one row per planted bug, then the correct layer, and a summary line."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from convcheck.render.base import FAIL_MARK, PASS_MARK
from convcheck.selftest import SelftestReport, SelftestRow

__all__ = ["selftest_summary", "selftest_table"]


def selftest_table(report: SelftestReport) -> Table:
    """One row per planted bug (caught?, on how many of the checks that expose it and of those run, how many of
    its failures the diagnosis named, the tensors it showed in, the geometry that exposes it), then the correct
    layer (passed everywhere?), then the layers each sweep ran."""
    table = Table(header_style="bold", show_lines=False, caption=_sweeps(report), caption_justify="left")
    table.add_column("bug", overflow="fold")
    table.add_column("caught", justify="center")
    table.add_column("failed / exposed / run", justify="right")
    table.add_column("hinted", justify="right")
    table.add_column("showed in", overflow="fold")
    table.add_column("exposed by", overflow="fold")
    for row in report.rows():
        ok = row.caught and row.as_expected
        mark = Text(PASS_MARK, style="bold green") if ok else Text(FAIL_MARK, style="bold red")
        shown = ", ".join(row.tensors) or "—"
        if not row.as_expected:
            shown += f" (expected {', '.join(row.expected) or 'nothing'})"
        table.add_row(
            Text.assemble(row.id, ("\n" + row.description, "dim")) if row.description else row.id,
            mark,
            _counts(row),
            f"{row.hinted}/{row.failed}" if row.hint else "—",
            shown,
            row.exposed_by or "—",
        )
    return table


def _sweeps(report: SelftestReport) -> str:
    """The layers each kind of bug ran on (every dtype the report ran: float32 repeats them)."""
    seen: dict[bool, dict[str, None]] = {False: {}, True: {}}
    for outcome in report.bugs:
        for layer in outcome.layers:
            seen[outcome.bug.any_geometry][layer.spec.shape.describe()] = None
    parts = [
        f"{title} ({len(names)}): {'; '.join(names)}"
        for title, names in (("the 2-D layer's bugs ran on", seen[False]), ("the N-d bugs ran on", seen[True]))
        if names
    ]
    return "\n".join(parts)


def _counts(row: SelftestRow) -> str:
    """``6 / 6 / 10`` for a bug; ``0 / — / 24`` for the correct layer (nothing exposes it)."""
    exposed = str(row.exposed) if row.hint else "—"
    return f"{row.failed} / {exposed} / {row.runs}"


def selftest_summary(report: SelftestReport) -> str:
    """``N of M planted bugs caught (H of F failing checks named by their hint), K false alarms on C checks of the
    correct layer (S s)``."""
    caught = sum(b.caught for b in report.bugs)
    alarms = len(report.false_alarms)
    failed = sum(b.failed for b in report.bugs)
    hinted = sum(b.hinted for b in report.bugs)
    return (
        f"{caught} of {len(report.bugs)} planted bugs caught ({hinted} of {failed} failing checks named by their "
        f"hint), {alarms} false alarm{'s' if alarms != 1 else ''} on {len(report.correct)} checks of the correct "
        f"layer ({report.seconds:.1f} s)"
    )
