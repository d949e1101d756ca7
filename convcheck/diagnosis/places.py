"""Places (fallbacks for what no exact test explains): every entry of dx over tolerance lies in a region the
geometry defines, and at least ``MIN_EVIDENCE`` positions outside it were checked, have a clearly nonzero
gradient, and are right."""

from __future__ import annotations

import numpy as np

from convcheck.diagnosis.evidence import MIN_EVIDENCE, Evidence
from convcheck.diagnosis.geometry import (
    coverage_hw,
    hw,
    last_windows,
    overlap_evidence,
    right_positions,
    stride_evidence,
    window_rows,
)
from convcheck.diagnosis.wording import where_rows_cols
from convcheck.results import Hint


def rule_dx_overlap(ev: Evidence) -> Hint | None:
    """dx is wrong only where windows overlap and right where one window covers an entry: col2im assigns.

    col2im must add (``+=``) every window's contribution; assigning (``=``) keeps the last window's, which is
    only wrong where more than one window covers an entry.
    """
    t = ev.failing("input", complete=True)
    s = ev.shape
    if t is None or s.stride >= s.filter_size:
        return None
    cov = coverage_hw(s)
    bad = hw(t.bad)
    several = cov > 1
    if np.any(bad & ~several) or bad.sum() < 0.5 * several.sum() or right_positions(t, cov == 1) < MIN_EVIDENCE:
        return None
    return Hint(
        "col2im accumulate",
        f"dx is {overlap_evidence(t, s)}: col2im assigns (=) where it must accumulate (+=)",
        ("input",),
    )


def rule_dx_tail(ev: Evidence) -> Hint | None:
    """dx is wrong only where the last ``m ≤ R/2`` windows (in ``(n, oh, ow)`` order) reach: rows dropped.

    For each wrong entry take the latest window (row of ``M``) covering it; if all are among the last ``m``
    rows, the entries no tail window reaches are right, and dx is exactly 0 where only tail windows reach, the
    gradient of those rows never made it into dx (a blocked loop that drops its remainder, a wrong row count).
    """
    t = ev.failing("input", complete=True)
    s = ev.shape
    if t is None:
        return None
    k, st, p = s.filter_size, s.stride, s.padding
    oh, ow, total = s.out_height, s.out_width, s.batch * s.out_height * s.out_width

    def last_first(size: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Per input row: the last and the first window covering it (−1 when none)."""
        last, first = np.full(size, -1), np.full(size, -1)
        for i in range(count):
            covered = window_rows(i, size, k, st, p)
            last[covered] = i
            first[covered & (first < 0)] = i
        return last, first

    lh, fh = last_first(s.in_height, oh)
    lw, fw = last_first(s.in_width, ow)
    reached = ((lh[:, None] >= 0) & (lw[None, :] >= 0))[None]
    base = np.arange(s.batch)[:, None, None] * oh * ow
    latest = base + (lh[:, None] * ow + lw[None, :])[None]
    earliest = base + (fh[:, None] * ow + fw[None, :])[None]
    bad = t.bad.any(axis=3)
    if np.any(bad & ~reached):
        return None
    m = total - int(latest[bad].min())
    if not 0 < m <= total // 2:
        return None
    tail = reached & (latest >= total - m)
    only_tail = reached & (earliest >= total - m)
    right_elsewhere = np.sum(~tail & t.informative.any(axis=3) & ~bad)
    if right_elsewhere < MIN_EVIDENCE or np.any(t.analytic[only_tail]):
        return None
    zero_note = ", and exactly 0 where only they reach" if only_tail.any() else ""
    return Hint(
        "never written",
        f"dx is wrong only where the last {m} of the {total} windows (rows of M in (n, oh, ow) order) "
        f"reach{zero_note}: the gradient of those rows of dM (or dZ) is never written (a loop over blocks that "
        "drops the last, partial block?)",
        ("input",),
    )


def rule_dx_last_windows(ev: Evidence) -> Hint | None:
    """dx is wrong only where the last row or column of windows reaches, in every sample: the loop stops short.

    Looping over ``(H + 2p − k) // s`` window positions instead of ``… + 1`` drops the last row and column of
    windows; the error then lies in their footprint on the bottom and right border of every sample.
    """
    t = ev.failing("input", complete=True)
    if t is None:
        return None
    rows, cols = last_windows(ev.shape)
    footprint = rows[:, None] | cols[None, :]
    bad = hw(t.bad)
    every_sample = t.bad.any(axis=(1, 2, 3)).all()
    if np.any(bad & ~footprint) or not every_sample or right_positions(t, ~footprint) < MIN_EVIDENCE:
        return None
    return Hint(
        "border",
        f"dx is wrong only on its bottom/right border ({where_rows_cols(rows, cols)}), which the last row and "
        "column of windows cover, in every sample: the window loop misses its last iteration "
        "((H + 2p − k) // s iterations without the + 1?)",
        ("input",),
    )


def rule_dx_stride(ev: Evidence) -> Hint | None:
    """dx is zero past where windows placed every 1 row would end, or nonzero where no window reaches.

    col2im that places window ``i`` at row ``i`` instead of ``i·s`` fills padded rows ``< OH − 1 + k`` only;
    rows past that get exactly 0 though windows reach them. When ``s > k`` rows between windows get no gradient
    at all, and a nonzero analytic value there means a window was put in the wrong place.
    """
    t = ev.failing("input", complete=True)
    s = ev.shape
    if t is None or s.stride == 1:
        return None
    evidence = stride_evidence(t, s)
    if not evidence:
        return None
    return Hint(
        "stride",
        f"analytic dx is {' and '.join(evidence)} (stride {s.stride}, k = {s.filter_size}): col2im places the "
        "windows at the wrong rows; window i must start at padded row i·s",
        ("input",),
    )


def rule_dx_frame(ev: Evidence) -> Hint | None:
    """dx is wrong only in a thin frame at its edges (within ``max(p, 1)`` rows/columns): padding handling."""
    t = ev.failing("input", complete=True)
    s = ev.shape
    if t is None:
        return None
    width = max(s.padding, 1)
    rr, cc = np.arange(s.in_height), np.arange(s.in_width)
    frame = ((rr < width) | (rr >= s.in_height - width))[:, None] | ((cc < width) | (cc >= s.in_width - width))[None]
    if np.any(hw(t.bad) & ~frame) or right_positions(t, ~frame) < MIN_EVIDENCE:
        return None
    return Hint(
        "border",
        f"dx is wrong only within {width} row(s) and column(s) of its edges and right inside: look at the padding "
        "(the crop's offset, how x is padded) and at the windows that reach the border",
        ("input",),
    )
