"""Gradient transforms (need only the arrays): the analytic gradient is the numeric one rescaled, shifted or
rearranged, entry by entry within ``MATCH_SLACK`` times the tolerance each entry was allowed."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from convcheck.bugs.row_order import dw_read_channels_first, dw_written_channels_first
from convcheck.diagnosis.evidence import MATCH_SLACK, MIN_EVIDENCE, RATIO_PRECISION, Evidence, Gradient
from convcheck.diagnosis.wording import names, offset
from convcheck.results import Hint
from convcheck.spec import ConvShape
from convcheck.user.shapes import TO_NCHW


def _ratio(t: Gradient) -> float | None:
    """The constant ``r`` (≠ 0, 1) with ``analytic = r × numeric`` at every checked entry, if there is one.

    Needs at least ``MIN_EVIDENCE`` informative entries: any single entry has "a constant ratio".
    """
    if int(t.informative.sum()) < MIN_EVIDENCE:
        return None
    m = t.checked
    a, n = t.analytic[m], t.numeric[m]
    if not np.all(np.isfinite(a)):
        return None
    r = float(a @ n) / float(n @ n)
    if r == 0 or abs(r - 1) < RATIO_PRECISION:
        return None
    if not np.all(np.abs(a - r * n) <= MATCH_SLACK * max(1.0, abs(r)) * t.allowed[m]):
        return None
    return r


def _factor_name(r: float, shape: ConvShape) -> str | None:
    """Name a ratio analytic/numeric by the geometry's counts (batch, positions) when it equals one."""
    n, positions = shape.batch, shape.out_height * shape.out_width
    named = [
        (1 / (n * positions), f"1/(N·OH·OW) = 1/{n * positions}: averaged over the N·OH·OW output positions"),
        (1 / n, f"1/N = 1/{n}: divided by the batch size (a mean where the loss sums)"),
        (1 / positions, f"1/(OH·OW) = 1/{positions}: averaged over the OH·OW output positions"),
        (float(n), f"N = {n}: multiplied by the batch size"),
        (-1.0, "the sign is flipped"),
        (2.0, "doubled (added twice?)"),
        (0.5, "halved"),
    ]
    for value, text in named:
        if value != 1 and abs(r - value) <= RATIO_PRECISION * abs(value):
            return text
    return None


def _show_ratio(r: float) -> str:
    inverse = 1 / r
    if abs(r) < 1 and abs(inverse - round(inverse)) < RATIO_PRECISION * abs(inverse):
        return f"1/{round(inverse)}" if r > 0 else f"−1/{abs(round(inverse))}"
    return f"{r:.4g}"


def rule_constant_ratio(ev: Evidence) -> Hint | None:
    """``analytic = r × numeric`` at every entry of a tensor: a scaling bug; the factor says which.

    A constant factor over a whole tensor means the pattern of the gradient is right and only its scale is
    not: a mean where the loss sums (1/N, 1/(N·OH·OW)), a sign, a factor 2. Only the bias off by such a factor
    means the bias reduction averages; dx and dw off by 1/N mean a mean-vs-sum confusion over the batch.
    """
    groups: dict[float, list[Gradient]] = {}
    for t in ev.failed():
        r = _ratio(t)
        if r is not None:
            key = next((k for k in groups if abs(k - r) <= RATIO_PRECISION * abs(k)), r)
            groups.setdefault(key, []).append(t)
    if not groups:
        return None
    r, tensors = max(groups.items(), key=lambda kv: len(kv[1]))
    named = _factor_name(r, ev.shape)
    where = f"analytic = {_show_ratio(r)} × numeric at every entry of {names(tensors)}"
    why = f" — {named}" if named else ": the gradient's pattern is right, its scale is not"
    explains = tuple(t.name for t in tensors)
    if explains == ("bias",):
        return Hint("bias reduction", f"{where}{why}; db must sum dZ over all N·OH·OW positions", explains)
    return Hint("sign" if abs(r + 1) < RATIO_PRECISION else "scaling", where + why, explains)


def _shift_matches(t: Gradient, dh: int, dw: int) -> bool:
    """``analytic[h, w] = numeric[h − dh, w − dw]`` wherever both exist, with informative entries among them."""
    _, h, w, _ = t.analytic.shape
    if abs(dh) >= h or abs(dw) >= w:
        return False

    def part(a: np.ndarray, oh: int, ow: int) -> np.ndarray:
        return a[:, max(oh, 0) : h + min(oh, 0), max(ow, 0) : w + min(ow, 0), :]

    a = part(t.analytic, dh, dw)
    n = part(t.numeric, -dh, -dw)
    tol = MATCH_SLACK * np.maximum(part(t.allowed, dh, dw), part(t.allowed, -dh, -dw))
    m = part(t.checked, dh, dw) & part(t.checked, -dh, -dw)
    return bool(np.sum(m & (np.abs(n) > tol)) >= MIN_EVIDENCE and np.all(np.abs(a - n)[m] <= tol[m]))


def rule_dx_shifted(ev: Evidence) -> Hint | None:
    """dx equals the numeric dx shifted by a row and/or column: the padding crop starts off by that much.

    Cropping ``dpad[:, p−1 : p−1+H]`` instead of ``dpad[:, p : p+H]`` gives ``dx[h] = true dx[h − 1]``
    exactly, so the shift is an identity between the two arrays, not a resemblance.
    """
    t = ev.failing("input", complete=True)
    if t is None:
        return None
    for dh, dw in ((1, 1), (-1, -1), (1, 0), (0, 1), (-1, 0), (0, -1), (2, 2), (-2, -2)):
        if _shift_matches(t, dh, dw):
            return Hint(
                "padding",
                f"analytic dx at (h, w) = numeric dx at (h {offset(dh)}, w {offset(dw)}), every entry: dx is "
                f"shifted by ({dh}, {dw}), so the padding crop (rows p to p + H − 1 of the padded gradient, "
                f"p = {ev.shape.padding}) or the window offset is off by that",
                ("input",),
            )
    return None


def _weight_transforms(shape: tuple[int, ...]) -> list[tuple[str, str, Callable[[np.ndarray], np.ndarray]]]:
    """Named rearrangements of ``dw: (k, k, C_in, C_out)`` that common layout mistakes produce."""
    k, _, c_in, c_out = shape
    kk = k * k * c_in
    return [
        (
            "flipped kernel",
            "flipped in (kh, kw) (rotated 180°): a convolution where the forward correlates",
            lambda a: a[::-1, ::-1],
        ),
        ("transposed", "with kh and kw swapped: the kernel's spatial axes are transposed", lambda a: a.swapaxes(0, 1)),
        (
            "row order",
            "with its k·k·C_in rows read in (c_in, kh, kw) order, though im2col lays a window out as (kh, kw, c_in)",
            lambda a: dw_read_channels_first(a, shape),
        ),
        (
            "row order",
            "with its k·k·C_in rows written in (c_in, kh, kw) order, though im2col lays a window out as (kh, kw, c_in)",
            lambda a: dw_written_channels_first(a, shape),
        ),
        (
            "channel order",
            "with C_in and C_out swapped ((C_out, C_in) reshaped to (C_in, C_out))",
            lambda a: a.swapaxes(2, 3).reshape(shape),
        ),
        (
            "channel order",
            "with C_in and C_out swapped ((C_in, C_out) read as (C_out, C_in))",
            lambda a: a.reshape(k, k, c_out, c_in).swapaxes(2, 3),
        ),
        (
            "transposed",
            "as (C_out, k·k·C_in) reshaped without a transpose: dZᵀ·M instead of Mᵀ·dZ",
            lambda a: a.reshape(kk, c_out).T.reshape(shape),
        ),
        (
            "transposed",
            "read as (C_out, k·k·C_in) and reshaped without a transpose",
            lambda a: a.reshape(c_out, kk).T.reshape(shape),
        ),
        (
            "layout",
            "in PyTorch's (C_out, C_in, kh, kw) layout reshaped to (kh, kw, C_in, C_out)",
            lambda a: a.transpose(TO_NCHW["w"]).reshape(shape),
        ),
    ]


def rule_dw_rearranged(ev: Evidence) -> Hint | None:
    """dw equals the numeric dw with its axes flipped, swapped or permuted: a layout mistake, named.

    Each candidate is an index map; maps that are the identity on this shape are skipped, and candidates
    that coincide on it (a channel swap and a transposed product when k = 1) are reported together.
    """
    t = ev.failing("weights", complete=True)
    if t is None:
        return None
    shape = t.analytic.shape
    ident = np.arange(t.analytic.size).reshape(shape)
    found: list[tuple[str, str]] = []
    matched: np.ndarray | None = None
    for label, what, fn in _weight_transforms(shape):
        index_map = fn(ident)
        if index_map.shape != shape or np.array_equal(index_map, ident):
            continue
        if matched is not None:
            if np.array_equal(index_map, matched):
                found.append((label, what))
            continue
        flat = index_map.reshape(-1)
        allowed = np.maximum(t.allowed, t.allowed.reshape(-1)[flat].reshape(shape))
        if t.equals(t.numeric.reshape(-1)[flat].reshape(shape), allowed):
            found.append((label, what))
            matched = index_map
    if not found:
        return None
    labels = " / ".join(dict.fromkeys(label for label, _ in found))
    whats = "; equivalently, on this shape, ".join(what for _, what in found)
    return Hint(labels, f"analytic dw equals the numeric dw {whats}", ("weights",))
