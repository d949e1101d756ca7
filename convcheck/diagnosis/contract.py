"""Contract problems that have a known cause: a padding crop that returns dx with the wrong size, a backward
that is right once and wrong when called again. The rules read the contract's findings by kind."""

from __future__ import annotations

from convcheck.diagnosis.evidence import Evidence
from convcheck.diagnosis.shapes import SPATIAL, spatial_sizes
from convcheck.results import FindingKind, Hint
from convcheck.spec import ConvShape

#: Findings that say a repeated backward call did not return the first call's gradients.
_REPEAT_CHANGED = (FindingKind.REPEAT_DIFFERS, FindingKind.STATE_OUTSIDE_CACHE, FindingKind.REPEAT_FAILED)


def rule_crop_shape(ev: Evidence) -> Hint | None:
    """dx came back with the wrong spatial size, one a padding crop produces.

    ``dpad[:, p:-p, p:-p]`` is empty at ``p = 0`` (``-0`` is ``0``); an uncropped dx has ``H + 2p`` rows; a
    crop applied to the unpadded gradient ``H − 2p``. The contract reports the shape (``Finding.shape``, the
    4 dims dx was returned with in the user's layout: rows and columns at axes 1 and 2 in NHWC, 2 and 3 in
    NCHW); this names the crop.
    """
    s = ev.shape
    p = s.padding
    for finding in ev.result.contract:
        dims = finding.shape if finding.kind is FindingKind.SHAPE and finding.tensor == "dx" else None
        if dims is None or len(dims) != 4:
            continue
        rows, cols = (dims[axis] for axis in SPATIAL[ev.result.spec.layout])
        if rows == 0 and cols == 0 and p == 0:
            why = "the crop dpad[:, p:-p, p:-p] keeps nothing when p = 0 (0:-0 is an empty slice); crop only if p > 0"
        elif (rows, cols) == (s.in_height + 2 * p, s.in_width + 2 * p) and p > 0:
            why = f"that is the padded size H + 2p: the padding (p = {p}) is never cropped"
        elif (rows, cols) == (s.in_height - 2 * p, s.in_width - 2 * p) and p > 0:
            why = f"that is H − 2p: the padding (p = {p}) is cropped from a gradient that has none"
        else:
            continue
        return Hint("padding", f"dx has {rows}×{cols} positions for a {s.in_height}×{s.in_width} input: {why}")
    return None


def rule_repeatability(ev: Evidence) -> Hint | None:
    """A second backward on the same cache (or after another forward) differs from the first, or fails.

    Gradient checking calls forward and backward many times; an implementation that accumulates into a buffer
    that persists across calls, or keeps state outside its cache, is right once and wrong afterwards.
    """
    for finding in ev.result.contract:
        if finding.kind is FindingKind.REPEAT_ACCUMULATES:
            return Hint(
                "repeatability",
                "a second backward call returned twice the first gradient: it is accumulated (+=) into a buffer "
                "nothing zeroes; allocate the gradient fresh in every call",
            )
        if finding.kind in _REPEAT_CHANGED:
            return Hint(
                "repeatability",
                "backward returns other gradients when called again: it modifies its cache or keeps state "
                "outside it (see the contract problem)",
            )
    return None


def rule_bias_without_bias(ev: Evidence) -> Hint | None:
    """A layer without a bias returned a db with entries (or another value than None): it computed ``Σ dZ``
    anyway. With ``bias: false`` b has no entries, so neither may db (None for a user's layer)."""
    s = ev.shape
    if s.bias:
        return None
    for finding in ev.result.contract:
        if finding.tensor != "db" or finding.kind not in (FindingKind.SHAPE, FindingKind.NOT_AN_ARRAY):
            continue
        got = f"shape {finding.shape}" if finding.shape is not None else "a value"
        return Hint(
            "no bias",
            f"db has {got} for a layer without a bias (bias: false): the backward computes db = Σ dZ although "
            "the forward adds no b; return None for db when there is no bias",
            ("bias",),
        )
    return None


def rule_crop_shape_nd(ev: Evidence) -> Hint | None:
    """Off the textbook geometry: dx came back with the spatial sizes a padding crop gets wrong, on every axis
    with padding — uncropped (``size + before + after``), cropped from a gradient that has no padding
    (``size − before − after``), or empty where ``dpad[before:-after]`` meets ``after = 0`` (``-0`` is ``0``)."""
    s = ev.shape
    got = spatial_sizes(ev, "dx") if not s.is_basic else None
    if got is None or got == s.spatial_in:
        return None
    padded = tuple(n + a + b for n, (a, b) in zip(s.spatial_in, s.pads, strict=True))
    shrunk = tuple(n - a - b for n, (a, b) in zip(s.spatial_in, s.pads, strict=True))
    emptied = tuple(0 if b == 0 else n for n, (_, b) in zip(s.spatial_in, s.pads, strict=True))
    shown = "×".join(map(str, got))
    size = "×".join(map(str, s.spatial_in))
    if got == padded:
        why = f"that is the padded size: the padding {_pads(s)} is never cropped"
    elif got == shrunk and min(shrunk) >= 0:
        why = f"that is the input's size minus the padding {_pads(s)}: it is cropped from a gradient that has none"
    elif got == emptied and 0 in got:
        why = (
            "the crop dpad[before:-after] keeps nothing along an axis with no padding after (0:-0 is an empty "
            "slice): crop as dpad[before:before + size]"
        )
    else:
        return None
    return Hint("padding", f"dx has {shown} positions for a {size} input: {why}")


def _pads(s: ConvShape) -> str:
    """``(1, 2)`` per axis, as a hint prints the padding."""
    return ", ".join(f"({a}, {b})" for a, b in s.pads)
