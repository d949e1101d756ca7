"""Forward rules: the layer's output against the reference, exactly at the verified point (hypotheses) or up
to a transformation of the reference (no bias, no activation, transposed, shifted)."""

from __future__ import annotations

from typing import Any

import numpy as np

from convcheck import activation as act
from convcheck.bugs.row_order import dw_read_channels_first
from convcheck.diagnosis.axes import shifts
from convcheck.diagnosis.evidence import FORWARD_SLACK, MIN_EVIDENCE, Evidence
from convcheck.diagnosis.wording import offset
from convcheck.results import Hint
from convcheck.spec import Activation


def _forward_arrays(ev: Evidence) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(output, reference, scalar tolerance) of a failed, unexplained forward with matching shapes."""
    f = ev.forward
    if f is None or f.ok or "forward" in ev.explained or f.output is None or f.reference is None:
        return None
    if f.output.shape != f.reference.shape:
        return None
    return np.asarray(f.output, dtype=np.float64), f.reference, FORWARD_SLACK * f.allowed


def _weight_candidates(w: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
    """The weights as three common forward mistakes read them, for ``w: (*k, C_in/g, C_out)`` of any number of
    spatial axes: the kernel flipped on every axis, each filter read in ``(c_in, *k)`` order, C_in and C_out
    swapped (``w.swapaxes`` reshaped back to w's shape)."""
    dims = w.ndim - 2
    taps = f"(c_in, {', '.join(_TAPS[dims])})"
    rotated = {1: "reversed", 2: "rotated 180°"}.get(dims, "reversed on every axis")
    return [
        (
            "flipped kernel",
            f"the kernel {rotated} (a true convolution where a cross-correlation is wanted)",
            w[(slice(None, None, -1),) * dims],
        ),
        ("row order", f"the weights read in {taps} order", dw_read_channels_first(w, w.shape)),
        ("channel order", "C_in and C_out swapped in the weights", w.swapaxes(-2, -1).reshape(w.shape)),
    ]


#: The kernel's tap names per number of spatial axes, as hints print them.
_TAPS = {1: ("kw",), 2: ("kh", "kw"), 3: ("kf", "kh", "kw")}


def rule_forward_hypotheses(ev: Evidence) -> Hint | None:
    """The output equals the reference computed with the kernel flipped, the weights in another layout, no
    bias, or no activation (or another one): exact, at the verified point. Any geometry: the weights'
    candidates read every spatial axis, and the bias candidate needs a layer with a bias."""
    arrays = _forward_arrays(ev)
    point = ev.point
    if arrays is None or point is None:
        return None
    out = arrays[0]
    w = point.w
    candidates: list[tuple[str, str, dict[str, Any]]] = [
        *((label, what, {"w": changed}) for label, what, changed in _weight_candidates(w)),
        *(
            [("forward bias", "no bias: the forward does not add + b", {"b": np.zeros_like(point.b)})]
            if ev.shape.bias
            else []
        ),
        (
            "forward activation",
            "no activation: the forward returns the pre-activation (a plain convolution, such as CS231n's "
            "conv_forward_naive, needs `activation: none` in the config)",
            {"activation": Activation.NONE},
        ),
        *(
            (
                "forward activation",
                f"activation {other.value}, not the config's {ev.activation.value}: the layer applies "
                f"{other.value} (set `activation: {other.value}` in the config if that is intended)",
                {"activation": other},
            )
            for other in Activation
            if other is not Activation.NONE
        ),
    ]
    for label, what, change in candidates:
        if ("w" in change and np.array_equal(change["w"], w)) or change.get("activation") is ev.activation:
            continue  # the same function on this shape
        expected, allowed = point.forward(**change)
        if np.all(np.abs(out - expected) <= FORWARD_SLACK * allowed):
            explains: tuple[str, ...] = ("forward",)
            db = ev.get("bias")
            if label == "forward bias" and db is not None and db.failed and not np.any(db.numeric[db.checked]):
                what += " (numeric db is 0: the output does not depend on b)"
                explains = ("forward", "bias")
            return Hint(label, f"the output equals the reference computed with {what}", explains)
    return None


def _pre_activation(a: np.ndarray, activation: Activation) -> np.ndarray:
    """``Z`` from ``act(Z)`` for the piecewise-linear activations, NaN where it is lost (ReLU's zeros)."""
    if activation is Activation.RELU:
        return np.where(a > 0, a, np.nan)
    if activation is Activation.LEAKY_RELU:
        return np.where(a > 0, a, a / act.LEAKY_SLOPE)
    return a


def rule_forward_bias(ev: Evidence) -> Hint | None:
    """The output's pre-activation is the reference's minus a constant per output channel: bias not added.

    Where ReLU kept both, ``Z_ref − Z_out`` is computed per entry; the same value across each channel (within
    the forward tolerance, at least two entries per channel) and nonzero means ``+ b`` is missing or wrong.
    """
    arrays = _forward_arrays(ev)
    if arrays is None or not ev.activation.piecewise_linear:
        return None
    out, ref, tol = arrays
    if ev.activation is Activation.LEAKY_RELU:
        tol = tol / act.LEAKY_SLOPE
    diff = _pre_activation(ref, ev.activation) - _pre_activation(out, ev.activation)
    offsets = []
    for c in range(out.shape[-1]):
        d = diff[..., c][np.isfinite(diff[..., c])]
        if d.size < MIN_EVIDENCE or np.ptp(d) > 2 * tol:
            return None
        offsets.append(float(np.median(d)))
    if max(abs(o) for o in offsets) <= tol:
        return None
    shown = ", ".join(f"{o:.3g}" for o in offsets[:6]) + (", …" if len(offsets) > 6 else "")
    cause = (
        "the forward does not add the bias (+ b), or adds another one"
        if ev.shape.bias
        else "the forward adds a bias, but the config says the layer has none (`bias: false`)"
    )
    return Hint(
        "forward bias",
        f"the output's pre-activation is the reference's minus a constant per output channel ({shown}): {cause}",
        ("forward",),
    )


def rule_forward_activation(ev: Evidence) -> Hint | None:
    """The reference equals the activation applied to the output: the forward skips the activation."""
    arrays = _forward_arrays(ev)
    if arrays is None or ev.activation is Activation.NONE:
        return None
    out, ref, tol = arrays
    if not np.all(np.abs(act.apply(ev.activation, out.copy()) - ref) <= tol):
        return None
    return Hint(
        "forward activation",
        f"the reference equals {ev.activation.value}(output) at every entry: the forward returns the "
        "pre-activation without applying the activation",
        ("forward",),
    )


def rule_forward_rearranged(ev: Evidence) -> Hint | None:
    """The output is the reference transposed (2-D: OH ↔ OW, or walked in (n, ow, oh) order) or shifted by one
    position along one spatial axis or along all of them (any number of axes)."""
    arrays = _forward_arrays(ev)
    if arrays is None:
        return None
    out, ref, tol = arrays
    sizes = out.shape[1:-1]
    if len(sizes) == 2:
        oh, ow = sizes
        if oh == ow > 1 and np.all(np.abs(out - ref.swapaxes(1, 2)) <= tol):
            return Hint("transposed", "the output is the reference with OH and OW swapped", ("forward",))
        if oh > 1 and ow > 1 and np.all(np.abs(out - ref.transpose(0, 2, 1, 3).reshape(ref.shape)) <= tol):
            return Hint("transposed", "the output is the reference walked in (n, ow, oh) order", ("forward",))
    for shift in _shifts(len(sizes)):
        if any(d and abs(d) >= size - 1 for d, size in zip(shift, sizes, strict=True)):
            continue  # at least two positions must overlap along every shifted axis
        mine = (slice(None), *(slice(max(d, 0), size + min(d, 0)) for d, size in zip(shift, sizes, strict=True)))
        theirs = (slice(None), *(slice(max(-d, 0), size + min(-d, 0)) for d, size in zip(shift, sizes, strict=True)))
        if np.all(np.abs(out[mine] - ref[theirs]) <= tol):
            names = _OUT_AXES[len(sizes)]
            moved = [f"{name} {offset(d)}" if d else name for name, d in zip(names, shift, strict=True)]
            return Hint(
                "shift",
                f"the output at {_index(names)} is the reference at {_index(moved)}: the windows are offset by "
                f"{_index([str(d) for d in shift])}; check the padding and where each window starts",
                ("forward",),
            )
    return None


#: The output's spatial index names per number of axes, as hints print them.
_OUT_AXES = {1: ("ow",), 2: ("oh", "ow"), 3: ("of", "oh", "ow")}


def _index(parts: list[str] | tuple[str, ...]) -> str:
    """``(oh − 1, ow)`` for several axes, ``ow − 1`` for one."""
    return parts[0] if len(parts) == 1 else f"({', '.join(parts)})"


def _shifts(dims: int) -> list[tuple[int, ...]]:
    """The offsets a shifted output is tried at: one position only, as a window that starts one row early or late
    gives, along all axes together (+1 then −1), then along each axis alone."""
    return shifts(dims)
