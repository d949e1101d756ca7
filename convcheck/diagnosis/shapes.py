"""Shape and dtype failures with a recognisable cause, read from the contract's typed findings.

A wrong shape stops a check before any number is compared, so these rules work from what the contract
records: ``Finding.shape`` (the shape returned, in the user's layout) and ``Finding.dtype``. Each names the
formula or the allocation that produces exactly that shape or dtype, and the one-line fix:

- dx cropped by a fixed amount ``q`` that is not the padding (``dx_pad[:, :, 1:-1, 1:-1]``);
- dx sized from the output, ``(OH − 1)·s + k − 2p``, which is short when ``(H + 2p − k)`` is not a multiple
  of the stride;
- the output sized by a wrong formula (no ``+ 1``, the padding once, no padding, no stride, rounded up, the
  other axis's size);
- db shaped ``(C_out, 1)``, ``(1, C_out)`` or ``(1, C_out, 1, 1)`` (a keepdims sum, b's column shape);
- dw returned with w's axes permuted (PyTorch's order in an NHWC layer, or the reverse);
- arrays that come back float64 for a float32 layer: allocated without a dtype, or promoted by an integer
  activation mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from itertools import permutations

import numpy as np

from convcheck.diagnosis.axes import per_axis
from convcheck.diagnosis.evidence import Evidence
from convcheck.results import Finding, FindingKind, Hint
from convcheck.spec import Activation, ConvShape, Layout

#: Where the spatial axes and the weight axes are in each layout (``dx``/``out``: rows, columns).
SPATIAL = {Layout.NHWC: (1, 2), Layout.NCHW: (2, 3)}
WEIGHT_AXES = {Layout.NHWC: ("kh", "kw", "C_in", "C_out"), Layout.NCHW: ("C_out", "C_in", "kh", "kw")}


def _shapes(ev: Evidence, tensor: str) -> Iterator[tuple[int, ...]]:
    """The shapes the contract reports ``tensor`` (``out``, ``dx``, ``dw``, ``db``) was returned with."""
    for finding in ev.result.contract:
        if finding.kind is FindingKind.SHAPE and finding.tensor == tensor and finding.shape is not None:
            yield finding.shape


def spatial(ev: Evidence, tensor: str) -> tuple[int, int] | None:
    """(rows, columns) of the first 4-d ``tensor`` (``dx`` or ``out``) with a wrong shape, in the user's layout."""
    for dims in _shapes(ev, tensor):
        if len(dims) == 4:
            rows, cols = SPATIAL[ev.result.spec.layout]
            return dims[rows], dims[cols]
    return None


def rule_fixed_crop(ev: Evidence) -> Hint | None:
    """dx is ``H + 2p − 2q`` by ``W + 2p − 2q`` for one ``q ≥ 1`` other than ``p``: a crop by a fixed amount.

    ``dx_pad[:, :, 1:-1, 1:-1]`` is right only at ``p = 1``: at ``p = 0`` it truncates dx by two rows and
    columns, at ``p = 2`` it leaves two. (``q = 0`` and ``q = 2p`` are ``rule_crop_shape``'s.)
    """
    got = spatial(ev, "dx")
    s = ev.shape
    p = s.padding
    if got is None or 0 in got:
        return None
    rows, cols = got
    q2 = s.in_height + 2 * p - rows
    if q2 != s.in_width + 2 * p - cols or q2 <= 0 or q2 % 2 or q2 // 2 in (p, 2 * p):
        return None
    q = q2 // 2
    what = "truncated by" if q > p else "larger by"
    crop = "dx_pad[:, :, p:p + H, p:p + W]" if ev.result.spec.layout is Layout.NCHW else "dx_pad[:, p:p + H, p:p + W]"
    return Hint(
        "padding",
        f"dx has {rows}×{cols} positions for a {s.in_height}×{s.in_width} input ({what} {2 * abs(q - p)} rows and "
        f"columns): the crop removes {q} on each side, but the padding is p = {p}; crop by p ({crop}), not by a "
        "fixed number",
    )


def _from_output(size: int, count: int, s: ConvShape) -> int:
    """The input size an axis rebuilt from its output count would have: ``(count − 1)·s + k − 2p``."""
    return (count - 1) * s.stride + s.filter_size - 2 * s.padding


def rule_input_size(ev: Evidence) -> Hint | None:
    """dx is ``(OH − 1)·s + k − 2p`` rows (and the same for columns): the input size was rebuilt from dout.

    That equals ``H`` exactly when ``(H + 2p − k)`` is a multiple of the stride, so the layer passes those
    geometries and returns a truncated dx on the others.
    """
    got = spatial(ev, "dx")
    s = ev.shape
    if got is None:
        return None
    want = (_from_output(s.in_height, s.out_height, s), _from_output(s.in_width, s.out_width, s))
    if got != want or got == (s.in_height, s.in_width):
        return None
    short = [
        f"{axis} + 2p − k = {size + 2 * s.padding - s.filter_size}"
        for axis, size, rebuilt in (("H", s.in_height, want[0]), ("W", s.in_width, want[1]))
        if rebuilt != size
    ]
    return Hint(
        "input size",
        f"dx has {got[0]}×{got[1]} positions for a {s.in_height}×{s.in_width} input, which is (OH − 1)·s + k − 2p: "
        f"the input size is rebuilt from dout's size, which loses the rows the last window does not reach when "
        f"{' and '.join(short)} is not a multiple of the stride {s.stride}; take H and W from x's shape (keep it in "
        "the cache)",
    )


#: Wrong output-size formulas: a description and the size it gives along an axis of ``size`` positions.
OUTPUT_FORMULAS: tuple[tuple[str, Callable[[int, int, int, int], int]], ...] = (
    ("(H + 2p − k) // s without the + 1", lambda n, k, s, p: (n + 2 * p - k) // s),
    ("(H + p − k) // s + 1, the padding counted once", lambda n, k, s, p: (n + p - k) // s + 1),
    ("(H − k) // s + 1, without the padding", lambda n, k, s, p: (n - k) // s + 1),
    ("H + 2p − k + 1, without the stride", lambda n, k, s, p: n + 2 * p - k + 1),
    ("ceil((H + 2p − k) / s) + 1, rounded up", lambda n, k, s, p: math.ceil((n + 2 * p - k) / s) + 1),
    ("(H + 2p − k + 1) // s, the + 1 inside the division", lambda n, k, s, p: (n + 2 * p - k + 1) // s),
)


def rule_output_size(ev: Evidence) -> Hint | None:
    """The output's spatial size is what a known wrong formula gives, or one axis's size computed from the other."""
    got = spatial(ev, "out")
    s = ev.shape
    if got is None or got == (s.out_height, s.out_width):  # the positions are right (the channels may not be)
        return None
    k, st, p = s.filter_size, s.stride, s.padding
    oh, ow = s.out_height, s.out_width
    head = f"the output has {got[0]}×{got[1]} positions where OH×OW = {oh}×{ow} ({s.in_height}×{s.in_width} input)"
    if got == (oh, s.out_height) and oh != ow:
        return Hint("output size", f"{head}: OW = {got[1]} is computed from H, not W; use W for OW")
    if got == (ow, ow) and oh != ow:
        return Hint("output size", f"{head}: OH = {got[0]} is computed from W, not H; use H for OH")
    if got == (ow, oh) and oh != ow:
        return Hint("output size", f"{head}: OH and OW are swapped; OH = (H + 2p − k) // s + 1, OW from W")
    for what, formula in OUTPUT_FORMULAS:
        sizes = (formula(s.in_height, k, st, p), formula(s.in_width, k, st, p))
        if sizes == got:
            return Hint(
                "output size",
                f"{head}: that is {what}; the output size is (H + 2p − k) // s + 1 (and the same with W)",
            )
    return None


def rule_bias_shape(ev: Evidence) -> Hint | None:
    """db has C_out entries in a 2-d or 4-d shape: a keepdims sum, or b kept as a column."""
    c_out = ev.shape.out_depth
    for dims in _shapes(ev, "db"):
        if len(dims) > 1 and math.prod(dims) == c_out and all(d in (1, c_out) for d in dims):
            return Hint(
                "bias shape",
                f"db has shape {dims}, the {c_out} bias entries in an extra axis (a sum with keepdims=True, or b "
                f"used as a column): return it with b's shape ({c_out},), e.g. db.reshape(-1)",
                ("bias",),
            )
    return None


#: The weight layouts people use, tried first when a shape is ambiguous (equal sizes).
_COMMON_ORDERS = (
    ("kh", "kw", "C_in", "C_out"),
    ("C_out", "C_in", "kh", "kw"),
    ("C_in", "C_out", "kh", "kw"),
    ("kh", "kw", "C_out", "C_in"),
)


def _permutation(got: tuple[int, ...], layout: Layout, s: ConvShape) -> tuple[int, ...] | None:
    """Axes ``perm`` with ``got[i] = want[perm[i]]`` (``want``: w's shape in ``layout``), the kernel axes kept
    in order; None when ``got`` is no permutation of w's shape."""
    names = WEIGHT_AXES[layout]
    size = {"kh": s.filter_size, "kw": s.filter_size, "C_in": s.in_depth, "C_out": s.out_depth}
    want = tuple(size[n] for n in names)
    if len(got) != 4 or sorted(got) != sorted(want) or got == want:
        return None
    named = [tuple(names.index(a) for a in order) for order in _COMMON_ORDERS]
    for perm in (*named, *permutations(range(4))):
        kernel = [i for i in perm if names[i] in ("kh", "kw")]
        if kernel == sorted(kernel) and tuple(want[i] for i in perm) == got:
            return perm
    return None


def rule_weight_layout(ev: Evidence) -> Hint | None:
    """dw's shape is w's with the axes permuted: returned in another layout (PyTorch's in an NHWC layer)."""
    layout = ev.result.spec.layout
    names = WEIGHT_AXES[layout]
    for dims in _shapes(ev, "dw"):
        perm = _permutation(dims, layout, ev.shape)
        if perm is None:
            continue
        order = ", ".join(names[i] for i in perm)
        back = tuple(perm.index(i) for i in range(4))
        return Hint(
            "layout",
            f"dw has shape {dims}: w's axes in ({order}) order, where w is ({', '.join(names)}); return dw in w's "
            f"layout (dw.transpose{back})",
            ("weights",),
        )
    return None


def _widened(ev: Evidence) -> dict[str, str]:
    """Returned arrays (``out``, ``dx``, ``dw``, ``db``) whose floating dtype is wider than the check's."""
    itemsize = np.dtype(ev.result.spec.dtype.value).itemsize
    found: dict[str, str] = {}
    for finding in ev.result.contract:
        if finding.tensor is not None and _is_wider_float(finding, itemsize):
            found.setdefault(finding.tensor, str(finding.dtype))
    return found


def _is_wider_float(finding: Finding, itemsize: int) -> bool:
    """A DTYPE finding about a floating dtype wider than ``itemsize`` bytes."""
    if finding.kind is not FindingKind.DTYPE or finding.dtype is None:
        return False
    try:
        dtype = np.dtype(finding.dtype)
    except TypeError:
        return False
    return bool(np.issubdtype(dtype, np.floating) and dtype.itemsize > itemsize)


#: The tensor a hint explains for each returned array.
_EXPLAINS = {"out": "forward", "dx": "input", "dw": "weights", "db": "bias"}


def rule_integer_mask(ev: Evidence) -> Hint | None:
    """dx, dw and db all come back wider than the layer's dtype while the output does not: the promotion is in
    what the three share, ``dZ = dout ⊙ mask`` (an integer mask such as ``(z > 0).astype(int)``)."""
    wide = _widened(ev)
    if ev.activation is Activation.NONE or "out" in wide or set(wide) != {"dx", "dw", "db"}:
        return None
    dtype = wide["dx"]
    return Hint(
        "integer mask",
        f"dx, dw and db are {dtype} but the output is {ev.result.spec.dtype.value}: the promotion happens in the step "
        f"all three gradients share, dZ = dout ⊙ {ev.activation.value}'(Z); an integer mask ((z > 0).astype(int)) "
        f"promotes {ev.result.spec.dtype.value} to {dtype}: multiply by the boolean mask (z > 0), or cast it with "
        ".astype(dout.dtype)",
        ("input", "weights", "bias"),
    )


def rule_dtype_buffers(ev: Evidence) -> Hint | None:
    """Some returned arrays are float64 for a float32 layer: buffers allocated without a dtype."""
    wide = _widened(ev)
    arrays = [t for t in ("out", "dx", "dw", "db") if t in wide and _EXPLAINS[t] not in ev.explained]
    if not arrays:
        return None
    dtype = wide[arrays[0]]
    listed = arrays[0] if len(arrays) == 1 else ", ".join(arrays[:-1]) + " and " + arrays[-1]
    verb = "is" if len(arrays) == 1 else "are"
    return Hint(
        "dtype",
        f"{listed} {verb} {dtype} for {ev.result.spec.dtype.value} inputs: their buffers are allocated without a "
        f"dtype (np.zeros(shape) and np.empty(shape) are {dtype}); allocate with dtype=x.dtype, or np.zeros_like",
    )


def spatial_sizes(ev: Evidence, tensor: str) -> tuple[int, ...] | None:
    """The spatial sizes of the first ``tensor`` (``dx`` or ``out``) with a wrong shape and the layer's number of
    axes, in the user's layout (channels last: axes ``1..dims``; channels first: ``2..dims+1``)."""
    dims = ev.shape.dims
    first = 2 if ev.result.spec.layout is Layout.NCHW else 1
    for got in _shapes(ev, tensor):
        if len(got) == dims + 2:
            return tuple(got[first : first + dims])
    return None


#: Wrong output-size formulas along one axis of any layer: a description and the size they give for an axis of
#: ``n`` positions, kernel ``k``, stride ``s``, padding ``(a, b)`` before and after, dilation ``d``. The right one
#: is ``(n + a + b − d·(k − 1) − 1) // s + 1``.
OUTPUT_FORMULAS_ND: tuple[tuple[str, Callable[[int, int, int, int, int, int], int]], ...] = (
    ("(size + padding − span) // stride without the + 1", lambda n, k, s, a, b, d: (n + a + b - d * (k - 1) - 1) // s),
    ("(size − span) // stride + 1, without the padding", lambda n, k, s, a, b, d: (n - d * (k - 1) - 1) // s + 1),
    ("size + padding − span + 1, without the stride", lambda n, k, s, a, b, d: n + a + b - d * (k - 1)),
    (
        "ceil((size + padding − span) / stride) + 1, rounded up",
        lambda n, k, s, a, b, d: math.ceil((n + a + b - d * (k - 1) - 1) / s) + 1,
    ),
    (
        "(size + padding − span + 1) // stride, the + 1 inside the division",
        lambda n, k, s, a, b, d: (n + a + b - d * (k - 1)) // s,
    ),
    (
        "(size + padding − k) // stride + 1: the dilation left out of the span",
        lambda n, k, s, a, b, d: (n + a + b - k) // s + 1,
    ),
    (
        "(size + padding − d·k) // stride + 1: the span taken as d·k",
        lambda n, k, s, a, b, d: (n + a + b - d * k) // s + 1,
    ),
    (
        "(size + before − span) // stride + 1: only the padding before",
        lambda n, k, s, a, b, d: (n + a - d * (k - 1) - 1) // s + 1,
    ),
    (
        "(size + 2·before − span) // stride + 1: the padding before taken for both sides",
        lambda n, k, s, a, b, d: (n + 2 * a - d * (k - 1) - 1) // s + 1,
    ),
)


def rule_output_size_nd(ev: Evidence) -> Hint | None:
    """Off the textbook geometry: the output's spatial sizes are what one known wrong formula gives on every
    axis (padding summed over both sides, span ``d·(k − 1) + 1`` of the dilated kernel)."""
    s = ev.shape
    got = spatial_sizes(ev, "out") if not s.is_basic else None
    if got is None or got == s.spatial_out:
        return None
    names = s.axes
    axes = tuple(zip(s.spatial_in, s.kernel, s.strides, s.pads, s.dilations, strict=True))
    dilated = f", dilation {per_axis(s.dilations, '×')}" if set(s.dilations) != {1} else ""
    head = (
        f"the output has {per_axis(got, '×')} positions ({' × '.join(names)}) where it should have "
        f"{per_axis(s.spatial_out, '×')}, for an input of {per_axis(s.spatial_in, '×')} with padding "
        f"{', '.join(map(str, s.pads))}, kernel {per_axis(s.kernel, '×')}, stride {per_axis(s.strides, '×')}{dilated}"
    )
    for what, formula in OUTPUT_FORMULAS_ND:
        sizes = tuple(formula(n, k, st, a, b, d) for n, k, st, (a, b), d in axes)
        if sizes == got:
            return Hint(
                "output size",
                f"{head}: that is {what}; along each axis the output size is "
                "(size + padding − span) // stride + 1, with padding = before + after and span = d·(k − 1) + 1 "
                "(the dilated kernel's extent)",
            )
    return None
