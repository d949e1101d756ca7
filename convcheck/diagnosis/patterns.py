"""Forward failures with a pattern: windows read from the wrong place, or only some outputs computed.

Loop layers go wrong in a few typical ways that leave an exact trace in the output:

- the windows are placed 1 apart (the stride forgotten) or ``s²`` apart (the stride applied twice), or all of
  them start a few rows and columns off (the input padded twice);
- one loop index is used for both window coordinates (``x[i·s:…, i·s:…]``), so the output is right only where
  ``oh == ow``, or the two are swapped;
- only the first (or only the last) sample or output channel is computed: a ``return`` inside the loop, an
  assignment outside it.

The window rules compare the output, entry by entry within the forward's tolerance, with windows of the
reference convolution at stride 1 over a widely padded input (``P`` rows and columns): the window for output
``(oh, ow)`` starts at row ``oh·s − p + P`` of it, so a layer whose window starts at ``a·oh − p + P + d`` is
named by ``(a, d)``, when exactly one such placement matches and at least ``MIN_EVIDENCE`` output positions
tell it from the correct one (their windows overlap the input and differ from the reference's). They need the
verified point (``Evidence.point``); the index rules need only the arrays.
"""

from __future__ import annotations

from functools import cached_property
from typing import NamedTuple
from weakref import WeakKeyDictionary

import numpy as np

from convcheck import reference
from convcheck.diagnosis.evidence import FORWARD_SLACK, MIN_EVIDENCE, Evidence, Point
from convcheck.geometry import Window
from convcheck.results import Hint


def _failed_forward(ev: Evidence) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(output, reference, tolerance) of a failed, unexplained forward whose shape is the reference's."""
    f = ev.forward
    if f is None or f.ok or "forward" in ev.explained or f.output is None or f.reference is None:
        return None
    out = np.asarray(f.output, dtype=np.float64)
    return (out, f.reference, FORWARD_SLACK * f.allowed) if out.shape == f.reference.shape else None


class _Windows:
    """Every stride-1 window of the check's point over an input padded by ``P``: ``y[n, r, c, f]`` is the
    layer's output for the window whose top-left corner is input row ``r − P``, column ``c − P``.

    ``P`` is the least padding that holds every window the offsets (``±reach``) and steps (up to ``s²``) tried
    here place: from ``−p − reach`` to ``s²·(max(OH, OW) − 1) − p + reach``. A window past the input reads
    zeros, as numpy's slices past the end do for ``k = 1`` (an empty window sums to 0; a partial one with
    ``k > 1`` raises in the layer, so it never gets here).
    """

    def __init__(self, point: Point):
        s = point.shape
        self.point = point
        self.reach = 2 * s.padding + s.filter_size  # offsets tried: −reach … reach
        last = s.stride * s.stride * (max(s.out_height, s.out_width) - 1) - s.padding + self.reach
        self.pad = max(s.padding + self.reach, last + s.filter_size - min(s.in_height, s.in_width))
        wide = Window.of(2, stride=1, padding=self.pad)
        self.y = reference.forward(point.x, point.w, point.b, wide, point.activation)

    @cached_property
    def origin(self) -> int:
        """Row of ``y`` holding the correct window of output row 0: ``−p + P``."""
        return self.pad - self.point.shape.padding

    def take(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
        """``y`` at window rows ``rows[oh, ow]`` and columns ``cols[oh, ow]``; None when one lies outside."""
        _, height, width, _ = self.y.shape
        if rows.min() < 0 or cols.min() < 0 or rows.max() >= height or cols.max() >= width:
            return None
        return self.y[:, rows, cols, :]

    def telling(self, rows: np.ndarray, cols: np.ndarray, ref: np.ndarray, tol: float) -> int:
        """Output positions where the window at ``y`` rows ``rows``, columns ``cols`` overlaps the input and
        differs from the reference: the positions that tell this placement from the correct one (a window that
        reads only padding says nothing: several wrong placements read the same zeros)."""
        s = self.point.shape
        k = s.filter_size
        row0, col0 = rows - self.pad, cols - self.pad  # top-left corner in input coordinates
        inside = (row0 < s.in_height) & (row0 + k > 0) & (col0 < s.in_width) & (col0 + k > 0)
        taken = self.take(rows, cols)
        if taken is None:
            return 0
        differs = np.any(np.abs(taken - ref) > tol, axis=(0, 3))
        return int(np.sum(inside & differs))


#: One ``_Windows`` per evidence: the window rules share it (it is the costly part, one wide convolution).
_SHARED: WeakKeyDictionary[Evidence, _Windows] = WeakKeyDictionary()


def _windows(ev: Evidence, point: Point) -> _Windows:
    if ev not in _SHARED:
        _SHARED[ev] = _Windows(point)
    return _SHARED[ev]


def _grid(ev: Evidence) -> tuple[np.ndarray, np.ndarray]:
    """Output row and column indices, each ``(OH, OW)``."""
    return np.meshgrid(np.arange(ev.shape.out_height), np.arange(ev.shape.out_width), indexing="ij")


class _Placing(NamedTuple):
    """What the rules that place windows compare: a failed forward's output and reference ``(N, OH, OW, C_out)``,
    its tolerance, every window of the point, and the output's row and column indices ``(OH, OW)``."""

    out: np.ndarray
    ref: np.ndarray
    tol: float
    windows: _Windows
    oh: np.ndarray
    ow: np.ndarray


def _placing(ev: Evidence) -> _Placing | None:
    """The evidence for placing windows, or None: no failed forward, no point, or too few nonzero outputs."""
    arrays, point = _failed_forward(ev), ev.point
    if arrays is None or point is None or not _informative(arrays[0], arrays[2]):
        return None
    return _Placing(*arrays, _windows(ev, point), *_grid(ev))


def _informative(out: np.ndarray, tol: float) -> bool:
    """Enough clearly nonzero outputs that matching them is evidence (an all-zero output matches anything)."""
    return int(np.sum(np.abs(out) > tol)) >= MIN_EVIDENCE


def _matches(out: np.ndarray, candidate: np.ndarray | None, tol: float) -> bool:
    return candidate is not None and bool(np.all(np.abs(out - candidate) <= tol))


def _placed(
    out: np.ndarray, ref: np.ndarray, windows: _Windows, rows: np.ndarray, cols: np.ndarray, tol: float
) -> bool:
    """The output is the windows at ``rows``/``cols`` of ``windows.y``, and enough positions tell them apart."""
    return _matches(out, windows.take(rows, cols), tol) and windows.telling(rows, cols, ref, tol) >= MIN_EVIDENCE


def _window_text(a: int, d: int, stride: int, padding: int) -> tuple[str, str]:
    """(label, cause) for windows that start at ``a·oh + d`` instead of ``s·oh`` (in padded coordinates)."""
    causes = []
    if a != stride and a == 1:
        causes.append(f"the windows are 1 apart, not the stride {stride}: the window start is not multiplied by s")
    elif a != stride:
        causes.append(
            f"the windows are {a} = s² apart, not s = {stride}: the stride is applied twice (the start i·s is "
            "multiplied by s again)"
        )
    if d:
        rows = "row and column" if abs(d) == 1 else "rows and columns"
        where = f"{abs(d)} {rows} {'earlier' if d < 0 else 'later'}"
        why = {
            -padding: "the input is padded twice (padded before a call that pads again); pad it once",
            padding: "the padding offset p is added to a start in the already padded input",
        }.get(d, "check where each window starts")
        causes.append(f"each window starts {where} than it should: {why}")
    return ("stride" if a != stride else "window offset"), "; ".join(causes)


def rule_forward_windows(ev: Evidence) -> Hint | None:
    """The output is the reference's windows taken ``a`` apart from an offset start: the stride forgotten or
    applied twice, the input padded twice (exact, at the verified point)."""
    placing = _placing(ev)
    if placing is None:
        return None
    out, ref, tol, windows, oh, ow = placing
    s = ev.shape
    matches = [
        (a, d)
        for a in dict.fromkeys((s.stride, 1, s.stride * s.stride))
        for d in range(-windows.reach, windows.reach + 1)
        if (a, d) != (s.stride, 0)
        and _placed(out, ref, windows, a * oh + windows.origin + d, a * ow + windows.origin + d, tol)
    ]
    if len(matches) != 1:
        return None  # no such window placement, or several that this point cannot tell apart
    ((a, d),) = matches
    label, cause = _window_text(a, d, s.stride, s.padding)
    return Hint(
        label,
        f"the output at (oh, ow) equals the reference's window starting at row {a}·oh {_signed(d)} and column "
        f"{a}·ow {_signed(d)} (the reference's starts at s·oh = {s.stride}·oh), every entry: {cause}",
        ("forward",),
    )


def _signed(d: int) -> str:
    """``+ 2``, ``− 1``, or ``+ 0`` for an offset in a printed formula."""
    return f"− {-d}" if d < 0 else f"+ {d}"


def rule_forward_diagonal(ev: Evidence) -> Hint | None:
    """One loop index used for both window coordinates (right only where ``oh == ow``), or the two swapped."""
    placing = _placing(ev)
    if placing is None:
        return None
    out, ref, tol, windows, oh, ow = placing
    s = ev.shape
    origin = windows.origin
    candidates = (
        ("window index", oh, oh, "(oh, oh)", "the row index is used for the column too (x[…, i·s:…, i·s:…]): use j"),
        ("window index", ow, ow, "(ow, ow)", "the column index is used for the row too (x[…, j·s:…, j·s:…]): use i"),
        ("transposed", ow, oh, "(ow, oh)", "the window's row and column indices are swapped: rows go with i"),
    )
    for label, rows, cols, where, cause in candidates:
        if _placed(out, ref, windows, s.stride * rows + origin, s.stride * cols + origin, tol):
            right = np.all(np.abs(out - ref) <= tol, axis=(0, 3))
            return Hint(
                label,
                f"the output is right at {int(right.sum())} of the {right.size} positions, those where the two "
                f"indices agree, and equals the window at {where} everywhere: {cause}",
                ("forward",),
            )
    return None


def rule_forward_one_index(ev: Evidence) -> Hint | None:
    """The output is right for one sample (or one output channel) only, the first or the last: a ``return`` or
    ``break`` inside the loop over it, an assignment outside it, or ``x[0]`` where ``x[n]`` is meant."""
    arrays = _failed_forward(ev)
    if arrays is None:
        return None
    out, ref, tol = arrays
    for axis, label, what, loop in ((0, "batch loop", "sample", "n"), (3, "channel loop", "output channel", "f")):
        size = out.shape[axis]
        others = tuple(i for i in range(4) if i != axis)
        right = np.all(np.abs(out - ref) <= tol, axis=others)
        informative = np.sum(np.abs(ref) > tol, axis=others) >= MIN_EVIDENCE
        if size < 2 or int(right.sum()) != 1 or not (informative[right].all()):
            continue
        index = int(np.flatnonzero(right)[0])
        if index not in (0, size - 1):
            continue
        rest = np.delete(out, index, axis=axis)
        zeros = " (all 0: never computed)" if not np.any(rest) else ""
        if index == 0:
            cause = (
                f"the loop over {loop} stops after the first {what} (a return or break indented into "
                f"`for {loop} in range(…)`), or index 0 is used where {loop} is meant"
            )
        else:
            cause = (
                f"each {what}'s result overwrites the last (an assignment indented out of `for {loop} in "
                f"range(…)`), or index -1 is used where {loop} is meant"
            )
        return Hint(
            label,
            f"the output is right for {what} {index} only, wrong for the other {size - 1}{zeros}: {cause}",
            ("forward",),
        )
    return None
