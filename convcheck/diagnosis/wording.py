"""How hints print tensors, index offsets and row ranges."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from convcheck.diagnosis.evidence import SHORT, Gradient


def _span(mask: np.ndarray) -> str:
    """``"3"``, ``"3–5"`` or ``"0, 2, 4"`` for the True positions of a 1-D mask."""
    idx = [int(i) for i in np.flatnonzero(mask)]
    if not idx:
        return "none"
    if idx == list(range(idx[0], idx[-1] + 1)):
        return str(idx[0]) if len(idx) == 1 else f"{idx[0]}–{idx[-1]}"
    return ", ".join(map(str, idx[:8])) + (", …" if len(idx) > 8 else "")


def names(tensors: Sequence[Gradient | str]) -> str:
    """``"dx"``, ``"dx and dw"``, ``"dx, dw and db"`` for gradients or tensor names (``input``, …)."""
    short = [SHORT[t] if isinstance(t, str) else t.short for t in tensors]
    return short[0] if len(short) == 1 else ", ".join(short[:-1]) + " and " + short[-1]


def plural(tensors: Sequence[object], one: str, many: str) -> str:
    """``one`` for a single tensor, else ``many`` (``"is"``/``"are"``)."""
    return one if len(tensors) == 1 else many


def offset(d: int) -> str:
    """``− 1`` for a shift of 1, ``+ 2`` for −2 (index arithmetic as printed in a hint)."""
    return f"− {d}" if d >= 0 else f"+ {-d}"


def where_rows_cols(rows: np.ndarray, cols: np.ndarray) -> str:
    """``"rows 3–4 and columns 5–6"`` for row mask ``(H,)`` and column mask ``(W,)``; an empty axis is left out."""
    parts = ([f"rows {_span(rows)}"] if rows.any() else []) + ([f"columns {_span(cols)}"] if cols.any() else [])
    return " and ".join(parts)
