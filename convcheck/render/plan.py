"""``validate``'s table: what each check will run (geometry, output, method, cost), fitted to the terminal.

Built like the results table (``render.table``): the check's name, its method and its cost in forward passes
always stay; the layer's geometry wraps between its words; the output shape, activation and dtype are shown
while they fit, in that order. Long names are shortened with the results table's abbreviations and a legend.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from convcheck.render.table import (
    GAP,
    NAME_CAP,
    abbreviate,
    layer_cell,
    legend_for,
    output_cell,
    plain_table,
    wrap_name,
)
from convcheck.spec import CheckSpec

__all__ = ["plan_table"]

#: Shown while they fit, highest priority first (``layer`` always stays, wrapped if it must).
_OPTIONAL = ("output", "act", "dtype")
_LAYER_MIN = 16  # the geometry wraps between words down to this width: "2×7×9×4 → 4," fits


def plan_table(specs: Sequence[CheckSpec], planned: Sequence[tuple[str, int]], width: int | None = None) -> Table:
    """One row per check. ``planned`` is each check's (method, forward passes); ``width`` the console's."""
    rows = [
        {
            "layer": layer_cell(s),
            "output": output_cell(s),
            "act": s.activation.value,
            "dtype": s.dtype.value,
            "method": method,
            "passes": f"{passes:,}",
        }
        for s, (method, passes) in zip(specs, planned, strict=True)
    ]
    widths = {c: max([cell_len(c), *(cell_len(row[c]) for row in rows)]) for c in (*_OPTIONAL, "method", "passes")}
    full = [s.name for s in specs]
    shortened = [abbreviate(name) for name in full]
    fitted = max([cell_len("check"), *(cell_len(name) for name, _ in shortened)])
    natural_layer = max([cell_len("layer"), *(cell_len(row["layer"]) for row in rows)])
    limit = width if width is not None else 10**6
    used = widths["method"] + widths["passes"] + 2 * GAP + min(natural_layer, _LAYER_MIN) + GAP
    columns = []
    for column in _OPTIONAL:
        if used + widths[column] + GAP + min(fitted, NAME_CAP) > limit:
            break
        columns.append(column)
        used += widths[column] + GAP
    room = max(limit - used, 6)
    natural = max([cell_len("check"), *(cell_len(name) for name in full)])
    if natural <= room:
        names, legend, name_width = full, "", natural
    else:
        names = [name if fitted <= room else wrap_name(name, room) for name, _ in shortened]
        legend, name_width = legend_for(set().union(*(keys for _, keys in shortened))), min(fitted, room)
    table = plain_table(f"names shortened: {legend}" if legend else None)
    table.add_column("check", overflow="fold", min_width=name_width, max_width=name_width)
    others = sum(widths[c] + GAP for c in (*columns, "method", "passes")) + name_width + GAP
    table.add_column("layer", overflow="fold", max_width=max(min(natural_layer, limit - others), _LAYER_MIN))
    for column in columns:
        table.add_column(column, no_wrap=True)
    table.add_column("method", no_wrap=True)
    table.add_column("passes", justify="right", no_wrap=True)
    for name, row in zip(names, rows, strict=True):
        table.add_row(Text(name), Text(row["layer"]), *(Text(row[c]) for c in [*columns, "method", "passes"]))
    return table
