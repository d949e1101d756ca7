"""Gradient transforms (need only the arrays): the analytic gradient is the numeric one rescaled, shifted or
rearranged, entry by entry within ``MATCH_SLACK`` times the tolerance each entry was allowed."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from convcheck.bugs.row_order import dw_read_channels_first, dw_written_channels_first
from convcheck.diagnosis.axes import shifts
from convcheck.diagnosis.evidence import MATCH_SLACK, MIN_EVIDENCE, RATIO_PRECISION, Evidence, Gradient
from convcheck.diagnosis.wording import names, offset
from convcheck.results import Hint
from convcheck.spec import ConvShape


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
    """Name a ratio analytic/numeric by the geometry's counts (batch, output positions) when it equals one."""
    n, positions = shape.batch, math.prod(shape.spatial_out)
    named = [
        (1 / (n * positions), f"1/(N·∏O) = 1/{n * positions}: averaged over the N·∏O output positions"),
        (1 / n, f"1/N = 1/{n}: divided by the batch size (a mean where the loss sums)"),
        (1 / positions, f"1/∏O = 1/{positions}: averaged over one sample's ∏O output positions"),
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
    not: a mean where the loss sums (1/N, 1/(N·∏O)), a sign, a factor 2. Only the bias off by such a factor
    means the bias reduction averages; dx and dw off by 1/N mean a mean-vs-sum confusion over the batch. Any
    geometry: ``∏O`` is the output positions of one sample (``OH·OW`` in 2-D).
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
        return Hint("bias reduction", f"{where}{why}; db must sum dZ over all N·∏O output positions", explains)
    return Hint("sign" if abs(r + 1) < RATIO_PRECISION else "scaling", where + why, explains)


def _shift_matches(t: Gradient, shift: tuple[int, ...]) -> bool:
    """``analytic[i] = numeric[i − shift]`` (per spatial axis) wherever both exist, with informative entries."""
    sizes = t.analytic.shape[1:-1]
    if any(abs(d) >= size for d, size in zip(shift, sizes, strict=True)):
        return False

    def part(a: np.ndarray, sign: int) -> np.ndarray:
        inside = [slice(max(sign * d, 0), size + min(sign * d, 0)) for d, size in zip(shift, sizes, strict=True)]
        index: tuple[slice, ...] = (slice(None), *inside, slice(None))
        return a[index]

    a = part(t.analytic, 1)
    n = part(t.numeric, -1)
    tol = MATCH_SLACK * np.maximum(part(t.allowed, 1), part(t.allowed, -1))
    m = part(t.checked, 1) & part(t.checked, -1)
    informative = m & (np.abs(n) > tol)
    # Evidence at several positions, not only several samples or channels of one: on a layer two rows wide a
    # shift by one compares a single row, which many mistakes happen to reproduce.
    positions = int(np.sum(informative.any(axis=(0, -1))))
    return bool(positions >= MIN_EVIDENCE and np.all(np.abs(a - n)[m] <= tol[m]))


def rule_dx_shifted(ev: Evidence) -> Hint | None:
    """dx equals the numeric dx shifted by a row and/or column: the padding crop starts off by that much.

    Cropping ``dpad[:, p−1 : p−1+H]`` instead of ``dpad[:, p : p+H]`` gives ``dx[h] = true dx[h − 1]``
    exactly, so the shift is an identity between the two arrays, not a resemblance. Any geometry: the shift is
    per spatial axis, and the hint names the padding before on each.
    """
    t = ev.failing("input", complete=True)
    if t is None:
        return None
    s = ev.shape
    for shift in shifts(s.dims, farthest=2):  # a crop from 0, not p, is off by p: 1 or 2
        if _shift_matches(t, shift):
            at = ", ".join(s.axes)
            moved = ", ".join(f"{axis[0]} {offset(d)}" for axis, d in zip(s.axes, shift, strict=True))
            before = ", ".join(str(b) for b, _ in s.pads)
            return Hint(
                "padding",
                f"analytic dx at ({at}) = numeric dx at ({moved}), every entry: dx is shifted by {shift}, so the "
                f"padding crop (from the padding before, {before}, for the input's size on each axis) or the "
                "window offset is off by that",
                ("input",),
            )
    return None


def _weight_transforms(shape: tuple[int, ...]) -> list[tuple[str, str, Callable[[np.ndarray], np.ndarray]]]:
    """Named rearrangements of ``dw: (*kernel, C_in, C_out)`` that common layout mistakes produce (a rearrangement
    that does not keep the shape on this kernel, such as swapping the axes of a 3x5 one, is skipped)."""
    *kernel, c_in, c_out = shape
    dims, kk = len(kernel), math.prod(kernel) * c_in
    spatial = tuple(range(dims))
    reverse_all = (slice(None, None, -1),) * dims
    return [
        (
            "flipped kernel",
            "flipped along every spatial axis (rotated 180°): a convolution where the forward correlates",
            lambda a: a[reverse_all],
        ),
        (
            "transposed",
            "with kh and kw swapped: the kernel's spatial axes are transposed",
            lambda a: a.swapaxes(-4, -3) if dims > 1 else a,
        ),
        (
            "row order",
            "with its ∏k·C_in rows read in (c_in, *kernel) order, though im2col lays a window out as (*kernel, c_in)",
            lambda a: dw_read_channels_first(a, shape),
        ),
        (
            "row order",
            "with its ∏k·C_in rows written in (c_in, *kernel) order, though im2col lays a window out as "
            "(*kernel, c_in)",
            lambda a: dw_written_channels_first(a, shape),
        ),
        (
            "channel order",
            "with C_in and C_out swapped ((C_out, C_in) reshaped to (C_in, C_out))",
            lambda a: a.swapaxes(-2, -1).reshape(shape),
        ),
        (
            "channel order",
            "with C_in and C_out swapped ((C_in, C_out) read as (C_out, C_in))",
            lambda a: a.reshape(*kernel, c_out, c_in).swapaxes(-2, -1),
        ),
        (
            "transposed",
            "as (C_out, ∏k·C_in) reshaped without a transpose: dZᵀ·M instead of Mᵀ·dZ",
            lambda a: a.reshape(kk, c_out).T.reshape(shape),
        ),
        (
            "transposed",
            "read as (C_out, ∏k·C_in) and reshaped without a transpose",
            lambda a: a.reshape(c_out, kk).T.reshape(shape),
        ),
        (
            "layout",
            "in PyTorch's (C_out, C_in, *kernel) layout reshaped to (*kernel, C_in, C_out)",
            lambda a: a.transpose(dims + 1, dims, *spatial).reshape(shape),
        ),
    ]


def rule_dw_rearranged(ev: Evidence) -> Hint | None:
    """dw equals the numeric dw with its axes flipped, swapped or permuted: a layout mistake, named.

    Each candidate is an index map; maps that are the identity on this shape are skipped, and candidates
    that coincide on it (a channel swap and a transposed product when k = 1) are reported together. Any geometry
    without groups (with groups the weight's channel axis is ``C_in/g`` and the group rules speak); the 2-D
    transpose of the kernel only where it keeps the shape (a square kernel).
    """
    t = ev.failing("weights", complete=True)
    if t is None or ev.shape.groups != 1:
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
