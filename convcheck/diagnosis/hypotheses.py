"""Hypotheses at the verified point: the analytic gradient equals, entry by entry, the gradient a specific
common mistake produces there (a wrong activation derivative, dout walked in another order, col2im and dM
mistakes). Gradient hypotheses are only tried when the layer's forward matches the reference."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

import numpy as np

from convcheck import activation as act
from convcheck.bugs.col2im import col2im_assign_by_window
from convcheck.bugs.fold import crop_off_by_one, flipped_weights, fold_assigning, last_windows_dropped
from convcheck.bugs.row_order import dm_read_channels_first, dm_read_channels_last
from convcheck.diagnosis.evidence import Evidence, Gradient, Point
from convcheck.diagnosis.geometry import last_windows, overlap_evidence, stride_evidence
from convcheck.diagnosis.window import NdPoint, matches, nd_point
from convcheck.diagnosis.wording import names, plural, where_rows_cols
from convcheck.results import Hint
from convcheck.spec import Activation

#: A candidate changes dx when some entry moves by more than this fraction of the correct dx's largest entry
#: (exact rewirings move entries by the scale itself; roundoff moves them by 1e-16 of it).
CHANGE = 1e-9


class ActivationPoint(Protocol):
    """What the activation hypotheses read of a point: the seed's ``Point``, or ``window.NdPoint`` for any other
    geometry. ``da``, ``z``: ``(R, C_out)``; ``gradients(dz)``: dx, dw and db for that dZ, computed correctly."""

    activation: Activation

    @property
    def da(self) -> np.ndarray: ...

    @property
    def z(self) -> np.ndarray: ...

    def gradients(self, dz: np.ndarray) -> dict[str, np.ndarray]: ...

    def masked_by_input(self, dz: np.ndarray) -> np.ndarray: ...


def _activation_candidates(point: ActivationPoint) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Gradients that common activation-derivative mistakes produce, with what each mistake is."""
    a = point.activation
    da, z = point.da, point.z
    if a is Activation.NONE:
        return []
    off = float(np.mean(z <= 0))
    name = {Activation.RELU: "ReLU mask", Activation.LEAKY_RELU: "leaky-ReLU slope"}.get(a, f"{a.value} derivative")
    out = [(f"with no {name} (dZ = dout; {off:.0%} of the outputs are on the flat side)", point.gradients(da))]
    if a is Activation.RELU:
        out += [
            ("with the mask taken from dout's sign (dout > 0) instead of the output's", point.gradients(da * (da > 0))),
            (
                f"with the mask inverted: kept where the output is 0 ({off:.0%}), zeroed where it is positive",
                point.gradients(da * (z <= 0)),
            ),
            (
                "masked by the input's sign (x > 0: the mask applied on the wrong side of the layer), dZ unmasked",
                {"input": point.masked_by_input(da)},
            ),
        ]
    if a is Activation.LEAKY_RELU:
        out.append(
            (
                f"with slope 0 instead of {act.LEAKY_SLOPE} where the pre-activation is negative (a ReLU mask)",
                point.gradients(da * (z > 0)),
            )
        )
    if a in (Activation.SIGMOID, Activation.TANH):
        wrong = z * (1 - z) if a is Activation.SIGMOID else 1 - z * z
        out.append(
            (
                "with the derivative evaluated at the pre-activation Z instead of at the output",
                point.gradients(da * wrong),
            )
        )
    return out


def rule_activation_mask(ev: Evidence) -> Hint | None:
    """The failing gradients equal those of a wrong activation derivative (missing, inverted, wrong tensor).

    ``dZ = dA ⊙ act'(Z)`` is where errors follow the output's sign: a missing ReLU mask lets the gradient
    through where the output is 0, an inverted one only there, a mask from dout's sign or from the input
    zeroes other entries. Each candidate is the exact gradient of that mistake at this point; every failing
    tensor must equal one of them. Any geometry: the seed's point, or ``NdPoint`` for the rest of the space.
    """
    point: ActivationPoint | None = ev.gradient_point if ev.shape.is_basic else nd_point(ev)
    failed = ev.failed()
    if point is None or not failed:
        return None
    candidates = _activation_candidates(point)
    explained: dict[str, list[Gradient]] = {}
    for t in failed:
        what = next((what for what, preds in candidates if t.name in preds and t.equals(preds[t.name])), None)
        if what is None:
            return None
        explained.setdefault(what, []).append(t)
    clauses = [
        f"analytic {names(ts)} {plural(ts, 'equals the gradient', 'equal the gradients')} computed {what}"
        for what, ts in explained.items()
    ]
    right = [t for t in ev.tensors.values() if not t.failed]
    tail = f"; {names(right)} {plural(right, 'is', 'are')} right" if right else ""
    return Hint("activation mask", "; ".join(clauses) + tail, tuple(t.name for t in failed))


def rule_dout_order(ev: Evidence) -> Hint | None:
    """The gradients equal those for dout walked in (n, ow, oh) order: dout transposed into matrix form.

    Any 2-D layer: the seed's point on its geometry, ``NdPoint`` on the others (a rectangular kernel, per-axis
    strides, dilation, groups, no bias), where the match allows the dtype's roundoff as the ``window`` rules do.
    """
    failed = ev.failed()
    s = ev.shape
    if not failed or s.dims != 2 or s.out_height == 1 or s.out_width == 1:
        return None
    preds = _dout_transposed(ev)
    if preds is None:
        return None
    dtype = ev.result.spec.dtype
    same = (lambda t: t.equals(preds[t.name])) if s.is_basic else (lambda t: matches(t, preds[t.name], dtype))
    if not all(same(t) for t in failed):
        return None
    return Hint(
        "transposed",
        f"analytic {names(failed)} {plural(failed, 'equals the gradient', 'equal the gradients')} for dout read "
        "in (n, ow, oh) order: dout's spatial axes are transposed when it is reshaped to (N·OH·OW, C_out), so its "
        "rows no longer match M's windows",
        tuple(t.name for t in failed),
    )


def _dout_transposed(ev: Evidence) -> dict[str, np.ndarray] | None:
    """dx, dw and db at the verified point with dout read in (n, ow, oh) order (None without a point)."""
    if ev.shape.is_basic:
        point = ev.gradient_point
        if point is None:
            return None
        da = point.dout.transpose(0, 2, 1, 3).reshape(point.da.shape)
        return point.gradients(da if point.slope is None else da * point.slope)
    p = nd_point(ev)
    if p is None:
        return None
    da = p.da.reshape(ev.shape.out_shape).transpose(0, 2, 1, 3).reshape(p.da.shape)
    return p.gradients(p.layer.through_activation(da, p.cache))


#: A dx hypothesis: its label, dx as the mistake computes it (lazily), and the evidence to print (lazily).
_Candidate = tuple[str, Callable[[], np.ndarray], Callable[[], str]]


def _dx_candidates(point: Point, t: Gradient) -> list[_Candidate]:
    """dx as common col2im / dM mistakes compute it, in the order they are tried."""
    return [*_kernel_and_accumulation(point, t), *_row_order_and_placement(point, t)]


def _kernel_and_accumulation(point: Point, t: Gradient) -> list[_Candidate]:
    """dM with the kernel flipped; col2im assigning (=) per kernel offset, or per window as a textbook loop."""
    s = point.shape
    dcols = point.dcols
    flipped = point.w[::-1, ::-1].reshape(-1, s.out_depth)
    return [
        (
            "flipped kernel",
            lambda: point.fold(point.dz @ flipped.T),
            lambda: (
                "analytic dx equals the backward with the kernel rotated 180° (dM = dZ·W_flippedᵀ): a true "
                "convolution where the forward cross-correlates"
            ),
        ),
        (
            "col2im accumulate",
            lambda: point.fold(dcols, accumulate=False),
            lambda: (
                f"analytic dx equals col2im assigning (=) each window's gradient, so the last window wins where "
                f"windows overlap ({overlap_evidence(t, s)}): accumulate (+=)"
            ),
        ),
        (
            "col2im accumulate",
            lambda: col2im_assign_by_window(dcols, s.x_shape, s.filter_size, s.stride, s.padding),
            lambda: (
                f"analytic dx equals col2im assigning (=) window after window, as a textbook loop over windows does "
                f"with += turned into =, so the last window wins where windows overlap ({overlap_evidence(t, s)}): "
                "accumulate (+=)"
            ),
        ),
    ]


def _row_order_and_placement(point: Point, t: Gradient) -> list[_Candidate]:
    """dM rows read in another order; windows placed without the stride; the last row and column dropped."""
    s = point.shape
    k, c = s.filter_size, s.in_depth
    dcols = point.dcols
    rows, cols = last_windows(s)

    def without_last() -> np.ndarray:
        keep = np.ones((s.batch, s.out_height, s.out_width), dtype=bool)
        if s.out_height > 1:
            keep[:, -1, :] = False
        if s.out_width > 1:
            keep[:, :, -1] = False
        return point.fold(dcols * keep.reshape(-1, 1))

    return [
        (
            "row order",
            lambda: point.fold(dm_read_channels_first(dcols, (k, k), c)),
            lambda: (
                "analytic dx equals col2im reading each row of dM as (c_in, kh, kw), though im2col wrote (kh, kw, c_in)"
            ),
        ),
        (
            "row order",
            lambda: point.fold(dm_read_channels_last(dcols, (k, k), c)),
            lambda: (
                "analytic dx equals col2im reading each row of dM as (kh, kw, c_in), though it was written as "
                "(c_in, kh, kw)"
            ),
        ),
        (
            "stride",
            lambda: point.fold(dcols, place_stride=1),
            lambda: (
                "analytic dx equals col2im placing window i at row i instead of i·s"
                + "".join(f"; it is {e}" for e in stride_evidence(t, s))
                + f": the stride (s = {s.stride}) is missing from col2im's window placement"
            ),
        ),
        (
            "border",
            without_last,
            lambda: (
                f"analytic dx equals col2im without the last row and column of windows (wrong only where they "
                f"reach: {where_rows_cols(rows, cols)}): the window loop stops one short, (H + 2p − k) // s "
                "iterations without the + 1"
            ),
        ),
    ]


def _nd_dx_candidates(p: NdPoint) -> list[_Candidate]:
    """The textbook layer's dx mistakes on any geometry, in the order they are tried."""
    return [*_nd_kernel_and_accumulation(p), *_nd_placement(p)]


def _nd_kernel_and_accumulation(p: NdPoint) -> list[_Candidate]:
    """dM with the kernel rotated 180° along every axis; a fold assigning (=) kernel offset after kernel offset;
    dM's rows read in the other channel order (per group with groups)."""
    s = p.shape
    flipped = replace(p.cache, weights=flipped_weights(p.cache.weights, s.w_shape, s.groups))
    per_group = s.in_depth // s.groups
    return [
        (
            "flipped kernel",
            lambda: p.fold(p.layer.cols_grad(p.dz, flipped)),
            lambda: (
                "analytic dx equals the backward with the kernel reversed along every spatial axis (dM = "
                "dZ·W_flippedᵀ): a true convolution where the forward cross-correlates"
            ),
        ),
        (
            "col2im accumulate",
            lambda: fold_assigning(p.dcols, s.x_shape, s.kernel, s.window),
            lambda: (
                "analytic dx equals col2im assigning (=) each kernel offset's gradient, so the last one wins where "
                "windows overlap: accumulate (+=)"
            ),
        ),
        (
            "row order",
            lambda: p.fold(dm_read_channels_first(p.dcols, s.kernel, per_group)),
            lambda: (
                "analytic dx equals col2im reading each row of dM as (c_in, *kernel), though im2col wrote "
                "(*kernel, c_in)"
            ),
        ),
        (
            "row order",
            lambda: p.fold(dm_read_channels_last(p.dcols, s.kernel, per_group)),
            lambda: (
                "analytic dx equals col2im reading each row of dM as (*kernel, c_in), though it was written as "
                "(c_in, *kernel)"
            ),
        ),
    ]


def _nd_placement(p: NdPoint) -> list[_Candidate]:
    """Windows placed 1 row apart; the crop one row early; the last window along each axis dropped."""
    s = p.shape
    outs = s.spatial_out
    several = [axis for axis, o in enumerate(outs) if o > 1]
    return [
        (
            "stride",
            lambda: p.fold(starts=(1,) * s.dims),
            lambda: (
                f"analytic dx equals col2im placing window o at row o instead of o·stride: the stride "
                f"({'x'.join(map(str, s.strides))}) is missing from col2im's window placement"
            ),
        ),
        (
            "padding",
            lambda: p.fold(crop=crop_off_by_one(s.window, s.spatial_in, s.kernel)),
            lambda: (
                "analytic dx equals the padded gradient cropped from one row before the padding before "
                f"({', '.join(str(b) for b, _ in s.pads)} per axis): crop dpad[before : before + size], not "
                "dpad[before − 1 : …]"
            ),
        ),
        (
            "border",
            lambda: p.fold(last_windows_dropped(p.dcols, s.batch, outs, several)),
            lambda: (
                "analytic dx equals col2im without the last window along each axis: the window loop stops one "
                "short, (S + before + after − span) // s iterations without the + 1"
            ),
        ),
    ]


def _rule_nd_dx(ev: Evidence, t: Gradient) -> Hint | None:
    """``rule_dx_hypotheses`` outside the seed's geometry: each candidate is tried only where it changes dx (its
    dx differs from the correct one), and matched as the ``window`` rules match (float32 roundoff of the
    prediction's scale allowed)."""
    p = nd_point(ev)
    if p is None:
        return None
    right = p.fold()
    scale = float(np.max(np.abs(right), initial=0.0))
    matched: list[tuple[str, Callable[[], str]]] = []
    for label, predict, text in _nd_dx_candidates(p):
        predicted = predict()
        changes = np.max(np.abs(predicted - right), initial=0.0) > CHANGE * scale
        if changes and matches(t, predicted, ev.result.spec.dtype):
            matched.append((label, text))
    if not matched:
        return None
    # Two mistakes can give the identical dx on a small layer (a dropped last window and an assigning col2im both
    # keep one window's gradient where two overlap): name both.
    labels = list(dict.fromkeys(label for label, _ in matched))
    note = "" if len(labels) == 1 else f" (on this layer {' and '.join(labels[1:])} give the same dx)"
    return Hint(" / ".join(labels), matched[0][1]() + note, ("input",))


def rule_dx_hypotheses(ev: Evidence) -> Hint | None:
    """dx equals what a flipped kernel, an assigning col2im, a permuted dM row order, a placement without the
    stride or a loop missing its last window produce at this point (each tried only where it changes dx).

    Outside the seed's geometry (per-axis kernels and strides, dilation, groups, no bias, 1-D and 3-D) the
    flipped kernel and the assigning col2im are tried, at the ``NdPoint``."""
    t = ev.failing("input")
    if t is not None and not ev.shape.is_basic:
        return _rule_nd_dx(ev, t)
    point = ev.gradient_point
    if t is None or point is None:
        return None
    s = ev.shape
    applicable = {
        "flipped kernel": s.filter_size > 1,
        "col2im accumulate": s.stride < s.filter_size,
        "row order": s.filter_size > 1 and s.in_depth > 1,
        "stride": s.stride > 1,
        "border": s.out_height > 1 or s.out_width > 1,
    }
    for label, predict, text in _dx_candidates(point, t):
        if applicable[label] and t.equals(predict()):
            return Hint(label, text(), ("input",))
    return None
