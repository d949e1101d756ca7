"""Hypotheses for the hyperparameters of the whole N-d space, at the verified point: the analytic gradient (or
the output) equals, entry by entry, what one common mistake with a dilation, a non-square kernel, per-axis
strides, per-side or ``same`` padding, or groups produces there.

Each candidate is computed by the same formula the planted bug uses (``convcheck.bugs.fold``), from the correct
steps of the built-in layer (``StepwiseLayer``) at the point: ``dZ: (R, C_out)``, ``dM`` ``(R, ∏k·C_in)`` or per
group ``(g, R, ∏k·C_in/g)``, and the per-group ``dW_γ``. The rules run only on layers outside the seed's geometry
(``ConvShape.is_basic`` false): there every candidate equals the correct gradient, and the seed's rules speak.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import numpy as np

from convcheck.bugs.fold import (
    fold_variant,
    grouped_dw_unordered,
    same_pads_swapped,
    split_groups_interleaved,
    summed_over_channels,
    swap_height_width,
)
from convcheck.bugs.stepwise import StepwiseLayer
from convcheck.diagnosis.axes import per_axis
from convcheck.diagnosis.evidence import FORWARD_SLACK, MATCH_SLACK, Evidence, Gradient
from convcheck.geometry import PaddingMode
from convcheck.results import Hint
from convcheck.spec import ConvShape, DType
from convcheck.tolerance import unit_roundoff
from convcheck.windows import fold

#: A prediction matches within the entry's tolerance plus this many units of roundoff of the prediction's largest
#: entry: a wrong layer's entries can be large where the right gradient is 0 (its tolerance tiny), and a float32
#: layer's sums carry float32 rounding of their terms (relative to the tensor's scale, not to an entry that
#: cancels), which a tolerance sized for the right gradient does not cover. 64 units of float32 are 4e-6 of the
#: scale; the mistakes these rules tell apart differ by the scale itself.
ROUNDING_UNITS = 64.0


def matches(t: Gradient, predicted: np.ndarray, dtype: DType) -> bool:
    """``t.equals(predicted)`` with ``ROUNDING_UNITS`` of the dtype's roundoff of ``max |predicted|`` added."""
    predicted = np.asarray(predicted, dtype=np.float64)
    scale = ROUNDING_UNITS * unit_roundoff(dtype) * float(np.max(np.abs(predicted), initial=0.0))
    return t.equals(predicted, allowed=t.allowed + scale / MATCH_SLACK)


class NdPoint:
    """The verified point of a layer of any geometry, with the correct backward's steps there (the built-in
    layer's, ``StepwiseLayer``): ``da = dout`` and ``z = Z`` as ``(R, C_out)``, the correct ``dz``, ``dcols``
    (``dM``, per group ``(g, R, ∏k·C_in/g)``) and per-group ``dw_groups``; the correct dx, dw and db for any dZ.
    The activation hypotheses read it as an ``ActivationPoint``."""

    def __init__(self, ev: Evidence, x: np.ndarray, w: np.ndarray, b: np.ndarray, dout: np.ndarray):
        self.shape: ConvShape = ev.shape
        self.activation = ev.activation
        self.layer = StepwiseLayer.stepwise_for(ev.shape, ev.activation)
        self.cache = self.layer.forward(x, w, b)[1]
        self.da = self.layer.dout_matrix(dout, self.cache)
        self.z = self.cache.pre_activation

    @cached_property
    def dz(self) -> np.ndarray:
        return self.layer.through_activation(self.da, self.cache)

    @cached_property
    def dcols(self) -> np.ndarray:
        return self.layer.cols_grad(self.dz, self.cache)

    @cached_property
    def dw_groups(self) -> np.ndarray | None:
        return self.layer.weights_grad_per_group(self.dz, self.cache) if self.shape.groups > 1 else None

    def fold(self, dcols: np.ndarray | None = None, **knobs: tuple[int, ...]) -> np.ndarray:
        """The fold of ``dcols`` (None: the correct ``dM``), with ``fold_variant``'s knobs turned."""
        s = self.shape
        dcols = self.dcols if dcols is None else dcols
        if not knobs:
            return fold(dcols, s.x_shape, s.kernel, s.window)
        return fold_variant(dcols, s.x_shape, s.kernel, s.window, **knobs)

    def gradients(self, dz: np.ndarray) -> dict[str, np.ndarray]:
        """dx, dw and db for this dZ, by the correct steps."""
        layer, cache = self.layer, self.cache
        return {
            "input": layer.fold(layer.cols_grad(dz, cache), cache),
            "weights": layer.weights_grad(dz, cache),
            "bias": layer.bias_grad(dz, cache),
        }

    def masked_by_input(self, dz: np.ndarray) -> np.ndarray:
        """dx with dM masked by the input's sign (``M > 0``): a ReLU mask on the wrong side."""
        layer, cache = self.layer, self.cache
        return layer.fold(layer.cols_grad(dz, cache) * (cache.cols > 0), cache)


def nd_point(ev: Evidence) -> NdPoint | None:
    """The verified point of a layer outside the seed's geometry (None on it, or when there is no point or the
    forward is not the reference's)."""
    point = ev.gradient_point
    if point is None or ev.shape.is_basic:
        return None
    return NdPoint(ev, point.x, point.w, point.b, point.dout)


#: A dx hypothesis: its label, dx as the mistake computes it, the evidence to print; all lazy.
_Candidate = tuple[str, Callable[[], np.ndarray], Callable[[], str]]


def _window_candidates(p: NdPoint) -> list[_Candidate]:
    s = p.shape
    kernel, strides, dilations = s.kernel, s.strides, s.dilations
    befores, afters = tuple(b for b, _ in s.pads), tuple(a for _, a in s.pads)
    return [
        (
            "dilation",
            lambda: p.fold(taps=(1,) * s.dims),
            lambda: (
                "analytic dx equals col2im adding each window's taps back 1 row apart, though im2col took them "
                f"dilation {per_axis(dilations, 'x')} apart: col2im must place tap j at j·dilation, as im2col "
                "reads it"
            ),
        ),
        (
            "dilated stride",
            lambda: p.fold(starts=tuple(a * b for a, b in zip(strides, dilations, strict=True))),
            lambda: (
                "analytic dx equals col2im placing window o at o·stride·dilation "
                f"({per_axis(strides, 'x')} times {per_axis(dilations, 'x')}): windows start stride apart; the "
                "dilation spaces only the taps inside one"
            ),
        ),
        (
            "kernel axes",
            lambda: p.fold(kernel_read=swap_height_width(kernel)),
            lambda: (
                "analytic dx equals col2im reading each row of dM as a "
                f"{per_axis(swap_height_width(kernel), 'x')} kernel though it is {per_axis(kernel, 'x')}: the "
                "kernel's height and width are swapped (kh, kw unpacked from w.shape in the wrong order)"
            ),
        ),
        (
            "stride axes",
            lambda: p.fold(starts=swap_height_width(strides)),
            lambda: (
                "analytic dx equals col2im placing windows with stride "
                f"{per_axis(swap_height_width(strides), 'x')} instead of {per_axis(strides, 'x')}: the vertical "
                "and horizontal strides are swapped"
            ),
        ),
        (
            "asymmetric padding",
            lambda: p.fold(crop=afters),
            lambda: (
                "analytic dx equals the padded gradient cropped from the padding after "
                f"({per_axis(afters, 'x')}) instead of before ({per_axis(befores, 'x')}): with padding "
                f"{per_axis(s.pads, 'x')} crop dpad[before : before + size] on each axis"
            ),
        ),
    ]


def _group_candidates(p: NdPoint) -> list[_Candidate]:
    s = p.shape
    g = s.groups
    if g == 1:
        return []
    return [
        (
            "group channels",
            lambda: p.fold(split_groups_interleaved(p.dz, g) @ p.cache.weights.transpose(0, 2, 1)),
            lambda: (
                f"analytic dx equals dM computed with dZ split into its {g} groups as reshape(R, C_out/g, g): "
                f"output channel co goes to group co % {g} instead of co // {s.out_depth // g}, mixing channels "
                "across groups; split as reshape(R, g, C_out/g)"
            ),
        ),
        (
            "depthwise",
            lambda: p.fold(summed_over_channels(p.dcols)),
            lambda: (
                f"analytic dx equals the depthwise dM summed over the {s.in_depth} channels and given to every "
                "channel: in a depthwise layer channel c's dx comes from channel c's filter and dZ alone"
            ),
        ),
    ]


def rule_window_dx(ev: Evidence) -> Hint | None:
    """dx equals what col2im computes with the dilation left out of the taps or put into the stride, the kernel's
    or the strides' height and width swapped, the crop taken from the padding after, dZ's groups split in the
    wrong order, or a depthwise dM summed over channels."""
    t = ev.failing("input")
    p = nd_point(ev) if t is not None else None
    if t is None or p is None:
        return None
    dtype = ev.result.spec.dtype
    matched = [
        (label, text)
        for label, predict, text in (*_window_candidates(p), *_group_candidates(p))
        if matches(t, predict(), dtype)
    ]
    if not matched:
        return None
    # Two mistakes can give the identical dx on a small layer (both leave a window on padding only): name both.
    labels = list(dict.fromkeys(label for label, _ in matched))
    note = "" if len(labels) == 1 else f" (on this layer {' and '.join(labels[1:])} give the same dx)"
    return Hint(" / ".join(labels), matched[0][1]() + note, ("input",))


def rule_grouped_dw(ev: Evidence) -> Hint | None:
    """dw equals the per-group ``dW_γ: (g, ∏k·C_in/g, C_out/g)`` reshaped to w's shape without moving the group
    axis next to the output channels."""
    t = ev.failing("weights")
    p = nd_point(ev) if t is not None else None
    if t is None or p is None or p.dw_groups is None:
        return None
    s = p.shape
    if not matches(t, grouped_dw_unordered(p.dw_groups, s.w_shape), ev.result.spec.dtype):
        return None
    g = s.groups
    return Hint(
        "group order",
        f"analytic dw equals the per-group gradient (g, ∏k·C_in/g, C_out/g) = {p.dw_groups.shape} reshaped "
        f"straight to w's shape {s.w_shape}: move the group axis next to the output channels first, "
        f"(∏k·C_in/g, g, C_out/g), so output channel co = γ·{s.out_depth // g} + j gets group γ's block",
        ("weights",),
    )


def rule_same_padding(ev: Evidence) -> Hint | None:
    """The output equals the reference with ``same`` padding's odd row placed before instead of after."""
    f, point, s = ev.forward, ev.point, ev.shape
    if f is None or f.ok or "forward" in ev.explained or f.output is None or point is None:
        return None
    if s.padding_mode is not PaddingMode.SAME or all(before == after for before, after in s.pads):
        return None
    swapped = same_pads_swapped(s.window, s.spatial_in, s.kernel)
    expected, allowed = point.forward(window=swapped)
    out = np.asarray(f.output, dtype=np.float64)
    if out.shape != expected.shape or not np.all(np.abs(out - expected) <= FORWARD_SLACK * allowed):
        return None
    return Hint(
        "same padding",
        f"the output equals the reference with `same` padding {per_axis(swapped.pads, 'x')} instead of "
        f"{per_axis(s.pads, 'x')}: "
        "the odd row of `same` padding goes after (as in TensorFlow and PyTorch), not before",
        ("forward",),
    )
