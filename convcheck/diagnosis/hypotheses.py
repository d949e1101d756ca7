"""Hypotheses at the verified point: the analytic gradient equals, entry by entry, the gradient a specific
common mistake produces there (a wrong activation derivative, dout walked in another order, col2im and dM
mistakes). Gradient hypotheses are only tried when the layer's forward matches the reference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from convcheck import activation as act
from convcheck.bugs.col2im import col2im_assign_by_window
from convcheck.bugs.row_order import dm_read_channels_first, dm_read_channels_last
from convcheck.diagnosis.evidence import Evidence, Gradient, Point
from convcheck.diagnosis.geometry import last_windows, overlap_evidence, stride_evidence
from convcheck.diagnosis.window import nd_point
from convcheck.diagnosis.wording import names, plural, where_rows_cols
from convcheck.results import Hint
from convcheck.spec import Activation


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
    """The gradients equal those for dout walked in (n, ow, oh) order: dout transposed into matrix form."""
    point = ev.gradient_point
    failed = ev.failed()
    if point is None or not failed or ev.shape.out_height == 1 or ev.shape.out_width == 1:
        return None
    da = point.dout.transpose(0, 2, 1, 3).reshape(point.da.shape)
    preds = point.gradients(da if point.slope is None else da * point.slope)
    if not all(t.equals(preds[t.name]) for t in failed):
        return None
    return Hint(
        "transposed",
        f"analytic {names(failed)} {plural(failed, 'equals the gradient', 'equal the gradients')} for dout read "
        "in (n, ow, oh) order: dout's spatial axes are transposed when it is reshaped to (N·OH·OW, C_out), so its "
        "rows no longer match M's windows",
        tuple(t.name for t in failed),
    )


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
            lambda: point.fold(dm_read_channels_first(dcols, k, c)),
            lambda: (
                "analytic dx equals col2im reading each row of dM as (c_in, kh, kw), though im2col wrote (kh, kw, c_in)"
            ),
        ),
        (
            "row order",
            lambda: point.fold(dm_read_channels_last(dcols, k, c)),
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


def rule_dx_hypotheses(ev: Evidence) -> Hint | None:
    """dx equals what a flipped kernel, an assigning col2im, a permuted dM row order, a placement without the
    stride or a loop missing its last window produce at this point (each tried only where it changes dx)."""
    t = ev.failing("input")
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
