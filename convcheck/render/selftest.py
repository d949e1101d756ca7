"""What ``convcheck selftest`` prints: one row per planted bug, then the correct layer, and a summary line."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from convcheck.render.base import FAIL_MARK, PASS_MARK
from convcheck.selftest import SelftestReport

__all__ = ["selftest_summary", "selftest_table"]


def selftest_table(report: SelftestReport) -> Table:
    """One row per planted bug (caught?, the tensors it showed in, the layers that exposed it), then the correct
    layer (passed everywhere?)."""
    table = Table(header_style="bold", show_lines=False)
    table.add_column("bug", overflow="fold")
    table.add_column("caught", justify="center")
    table.add_column("showed in", overflow="fold")
    table.add_column("expected", overflow="fold")
    table.add_column("exposed by", overflow="fold")
    for row in report.rows():
        ok = row.caught and row.as_expected
        mark = Text(PASS_MARK, style="bold green") if ok else Text(FAIL_MARK, style="bold red")
        layers = ", ".join(row.layers[:3]) + (f" (+{len(row.layers) - 3})" if len(row.layers) > 3 else "")
        table.add_row(
            Text.assemble(row.id, ("\n" + row.description, "dim")) if row.description else row.id,
            mark,
            ", ".join(row.tensors) or "—",
            ", ".join(row.expected) or "—",
            layers or "—",
        )
    return table


def selftest_summary(report: SelftestReport) -> str:
    """``N of M planted bugs caught, K false alarms on C checks of the correct layer (S s)``."""
    caught = sum(b.caught for b in report.bugs)
    alarms = len(report.false_alarms)
    return (
        f"{caught} of {len(report.bugs)} planted bugs caught, {alarms} false alarm{'s' if alarms != 1 else ''} "
        f"on {len(report.correct)} checks of the correct layer ({report.seconds:.1f} s)"
    )
