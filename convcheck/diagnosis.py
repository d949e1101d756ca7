"""Diagnosis hints: read a failed check's error pattern and name the likely bug, with the evidence.

Every rule is a small pure function of a check's evidence that returns a hint or nothing. A hint is one
sentence, ``"<label>: <evidence>: <likely cause>"``; the label comes from a small vocabulary (``LABELS``) so
tests and tools can ask whether a planted bug got the right one. Rules are exact tests, in three kinds:

1. **Transforms** (need only the arrays): the analytic gradient equals the numeric one after a named
   transformation — a constant factor, a shift by a row and column, the kernel flipped, the weight axes
   permuted — entry by entry within ``MATCH_SLACK`` times the tolerance each entry was allowed
   (``TensorResult.allowed``). The output is compared with the reference the same way (transposed, shifted,
   offset per channel, without activation).
2. **Hypotheses** (need the point of the check): the analytic gradient equals, entry by entry, the gradient a
   specific common mistake produces at the point the check was made — no activation mask or one taken from the
   wrong tensor, dout walked in (n, ow, oh) order, dx computed with the kernel flipped, col2im assigning
   instead of accumulating, reading dM rows in another order, placing windows without the stride, dropping the
   last row and column of windows. The point is rebuilt from the spec's seed (``checker.make_data``) and used
   only if the reference output recomputed from it is bit-identical to the one the check stored, so a check
   run at a caller-supplied point gets no hint it cannot back up. Gradient hypotheses are built on the
   reference forward and only tried when the layer's forward matches it.
3. **Places** (fallbacks for what no exact test explains): every entry over tolerance lies in a region the
   geometry defines — where windows overlap, the footprint of the last row and column of windows, of the last
   ``m`` windows in row order, beyond where stride-1 windows would end, a thin frame at the edges — and at
   least ``MIN_EVIDENCE`` positions outside it were checked, have a clearly nonzero gradient, and are right.

Rules run in that order, after the contract and forward rules; between transforms and hypotheses come two
whole-tensor facts (only db is wrong; a gradient is exactly zero everywhere). A hint names the tensors it
explains exactly, and later rules leave those alone, so one cause is not reported twice under different
names; at most one hint per label is kept. A tensor that passed is never blamed: a passing check gets no hint.

Shapes follow ``convcheck.spec`` (internal NHWC): dx ``(N, H, W, C_in)``, dw ``(k, k, C_in, C_out)``,
db ``(C_out,)``, output ``(N, OH, OW, C_out)``; ``R = N·OH·OW`` rows of the im2col matrix ``M`` in
``(n, oh, ow)`` order, each window laid out ``(kh, kw, c_in)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from convcheck import activation as act
from convcheck import reference
from convcheck.layer import im2col, pad
from convcheck.results import CheckResult, FindingKind, ForwardResult, TensorResult
from convcheck.spec import Activation, CheckSpec, ConvShape
from convcheck.tolerance import SAFETY, resolve, rounding_sigma, unit_roundoff

__all__ = ["LABELS", "MATCH_SLACK", "diagnose", "label_of"]

#: The labels a hint starts with (``bugs.HINTS`` is the subset the planted-bug catalogue expects).
LABELS = (
    "activation mask",
    "bias reduction",
    "border",
    "channel order",
    "col2im accumulate",
    "flipped kernel",
    "forward activation",
    "forward bias",
    "layout",
    "never written",
    "padding",
    "repeatability",
    "row order",
    "scaling",
    "shift",
    "sign",
    "stride",
    "transposed",
)

#: An analytic entry "equals" a prediction when within this many times the tolerance it was allowed.
MATCH_SLACK = 2.0
#: Without the point, an output "equals" a transformed reference within this many times the forward's allowed
#: error at its worst entry (the only forward tolerance a result keeps).
FORWARD_SLACK = 16.0
#: Relative precision to which a measured ratio must equal a named factor.
RATIO_PRECISION = 1e-4
#: Informative entries a "constant ratio" needs, and right positions a "wrong only here" claim needs elsewhere.
MIN_EVIDENCE = 2

_SHORT = {"input": "dx", "weights": "dw", "bias": "db", "forward": "output"}


@dataclass(frozen=True)
class _Hint:
    """A label, its evidence, and the tensors (``input``, ``weights``, ``bias``, ``forward``) it accounts for;
    later rules leave those alone."""

    label: str
    text: str
    explains: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.label}: {self.text}"


def label_of(hint: str) -> str:
    """The label a hint string starts with (the text before its first ``": "``)."""
    return hint.split(": ", 1)[0]


# ----------------------------------------------------------------------------------------------------
# Evidence: the gradients as arrays, the geometry, and (when it can be verified) the point of the check
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tensor:
    """One gradient as float64 arrays.

    ``measured``: entries the engine measured (it leaves the others NaN). ``bad``: measured entries over
    tolerance. ``checked``: measured entries whose numeric value is a point estimate to compare with — all of
    them, except those whose differences straddled an activation kink, where the numeric value is only known to
    lie in an interval. ``informative``: checked entries whose numeric value is clearly nonzero.

    The verdict per entry is the checker's when the result carries it (``error``, the distance from the
    analytic value to the kink interval, and the ``kink`` mask); otherwise ``|analytic − numeric|`` stands in,
    which can call a few kink entries bad that the checker passed (no kinks in random float data; many with
    integer-valued data).
    """

    name: str
    analytic: np.ndarray
    numeric: np.ndarray
    allowed: np.ndarray
    measured: np.ndarray
    checked: np.ndarray
    bad: np.ndarray
    informative: np.ndarray
    passed: bool

    @classmethod
    def of(cls, g: TensorResult) -> _Tensor | None:
        if g.analytic is None or g.numeric is None or g.allowed is None or g.projections:
            return None
        analytic = np.asarray(g.analytic, dtype=np.float64)
        numeric = np.asarray(g.numeric, dtype=np.float64)
        allowed = np.asarray(g.allowed, dtype=np.float64)
        judged, kink = _verdict_arrays(g)
        if not analytic.shape == numeric.shape == allowed.shape:
            return None
        measured = np.isfinite(numeric)
        with np.errstate(invalid="ignore"):
            error = np.abs(analytic - numeric) if judged is None or judged.shape != analytic.shape else judged
            bad = measured & ~(error <= allowed)  # a NaN analytic entry is bad
            checked = measured if kink is None or kink.shape != analytic.shape else measured & ~kink
            informative = checked & (np.abs(numeric) > allowed)
        return cls(g.name, analytic, numeric, allowed, measured, checked, bad, informative, g.passed)

    @property
    def short(self) -> str:
        return _SHORT[self.name]

    @property
    def complete(self) -> bool:
        """Every entry was measured (``full``/``entrywise``), so "only here" statements can be made."""
        return bool(self.measured.all())

    @property
    def failed(self) -> bool:
        return not self.passed and bool(self.bad.any())

    def equals(self, predicted: np.ndarray, allowed: np.ndarray | None = None) -> bool:
        """The analytic gradient equals ``predicted`` on every checked entry, within ``MATCH_SLACK·allowed``.

        ``allowed`` defaults to this tensor's per-entry tolerance.
        """
        predicted = np.asarray(predicted, dtype=np.float64)
        if predicted.shape != self.analytic.shape:
            return False
        tol = MATCH_SLACK * (self.allowed if allowed is None else allowed)
        m = self.checked & np.isfinite(predicted)
        return bool(m.any() and np.all(np.abs(self.analytic[m] - predicted[m]) <= tol[m]))


def _verdict_arrays(g: TensorResult) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The checker's per-entry error (distance to the kink interval) and kink mask, when the result has them.

    ``TensorResult`` fields ``error`` and ``kink`` (arrays shaped like the gradient) are read if present, so
    diagnosis uses the checker's own verdict per entry; without them it falls back to ``|analytic − numeric|``.
    """
    error, kink = getattr(g, "error", None), getattr(g, "kink", None)
    return (
        None if error is None else np.asarray(error, dtype=np.float64),
        None if kink is None else np.asarray(kink, dtype=bool),
    )


class _Point:
    """The point a check was made at, float64: ``x (N,H,W,C_in)``, ``w (k,k,C_in,C_out)``, ``b``, ``dout``.

    Derived quantities follow the seed's matrix formulation: ``M`` (``(R, k·k·C_in)``), ``Z = M·W + b`` and
    ``dA = dout`` as ``(R, C_out)``, the correct ``dZ = dA ⊙ act'(Z)`` and ``dM = dZ·Wᵀ``.
    """

    def __init__(self, spec: CheckSpec, x: np.ndarray, w: np.ndarray, b: np.ndarray, dout: np.ndarray):
        self.spec = spec
        self.shape: ConvShape = spec.shape
        self.activation: Activation = spec.activation
        self.x, self.w, self.b, self.dout = x, w, b, dout

    @cached_property
    def cols(self) -> np.ndarray:
        s = self.shape
        return im2col(pad(self.x, s.padding), s.filter_size, s.stride, s.out_height, s.out_width)

    @property
    def weights(self) -> np.ndarray:
        return self.w.reshape(-1, self.shape.out_depth)

    @cached_property
    def z(self) -> np.ndarray:
        return self.cols @ self.weights + self.b

    @cached_property
    def slope(self) -> np.ndarray | None:
        """``act'(Z)``, or None for the identity."""
        return act.derivative(self.activation, self.z, act.apply(self.activation, self.z))

    @cached_property
    def da(self) -> np.ndarray:
        return self.dout.reshape(-1, self.shape.out_depth)

    @cached_property
    def dz(self) -> np.ndarray:
        return self.da if self.slope is None else self.da * self.slope

    @cached_property
    def dcols(self) -> np.ndarray:
        return self.dz @ self.weights.T

    def fold(self, dcols: np.ndarray, *, place_stride: int | None = None, accumulate: bool = True) -> np.ndarray:
        """col2im and the crop, ``(R, k·k·C_in)`` → ``(N, H, W, C_in)``.

        The knobs are the mistakes: ``place_stride`` is the step between neighbouring windows' corners (correct:
        the layer's stride), ``accumulate=False`` assigns (=) in (kh, kw) order instead of adding.
        """
        s = self.shape
        n, h, w, c = s.x_shape
        k, p, oh, ow = s.filter_size, s.padding, s.out_height, s.out_width
        step = s.stride if place_stride is None else place_stride
        d6 = dcols.reshape(n, oh, ow, k, k, c)
        dpad = np.zeros((n, h + 2 * p, w + 2 * p, c))
        for kh in range(k):
            rows = slice(kh, kh + step * (oh - 1) + 1, step)
            for kw in range(k):
                cols = slice(kw, kw + step * (ow - 1) + 1, step)
                if accumulate:
                    dpad[:, rows, cols, :] += d6[:, :, :, kh, kw, :]
                else:
                    dpad[:, rows, cols, :] = d6[:, :, :, kh, kw, :]
        return dpad[:, p : p + h, p : p + w, :]

    def gradients(self, dz: np.ndarray) -> dict[str, np.ndarray]:
        """``dx, dw, db`` for a given ``dZ`` (``(R, C_out)``), computed the correct way."""
        return {
            "input": self.fold(dz @ self.weights.T),
            "weights": (self.cols.T @ dz).reshape(self.shape.w_shape),
            "bias": dz.sum(axis=0),
        }

    def forward(self, w: np.ndarray | None = None, b: np.ndarray | None = None, activation: Activation | None = None):
        """The reference output with some parameters replaced, and the tolerance a correct layer gets for it."""
        s = self.shape
        w = self.w if w is None else np.ascontiguousarray(w)
        b = self.b if b is None else b
        activation = self.activation if activation is None else activation
        out = reference.forward(self.x, w, b, s.window, activation)
        spec = self.spec
        sigma = rounding_sigma(self.x, w, b, out, s.window, unit_roundoff(spec.dtype))
        allowed = resolve(spec.dtype, spec.eps, spec.rtol, spec.atol).atol + SAFETY * sigma
        return out, allowed


def _rebuild_point(result: CheckResult) -> _Point | None:
    """The check's point from its seed, or None when it cannot be verified against the stored reference."""
    f = result.forward
    if f is None or f.reference is None:
        return None
    from convcheck.checker import make_data  # late: the checker imports this module

    spec = result.spec
    s = spec.shape
    try:
        data = make_data(spec)
    except Exception:  # noqa: BLE001 - a spec make_data cannot serve: no point, no hypotheses
        return None
    x, w, b, dout = (np.asarray(a, dtype=np.float64) for a in (data.x, data.w, data.b, data.dout))
    expected = reference.forward(x, w, b, s.window, spec.activation)
    if expected.shape != f.reference.shape or not np.array_equal(expected, f.reference):
        return None  # the check ran at a caller-supplied point
    return _Point(spec, x, w, b, dout)


def _fold_assign_by_window(point: _Point, dcols: np.ndarray) -> np.ndarray:
    """col2im written as the seed's loop over windows but with ``=`` for ``+=``: ``(R, k·k·C_in)`` →
    ``(N, H, W, C_in)``; the window visited last (row-major over (oh, ow)) wins each overlapped entry."""
    s = point.shape
    n, h, w, c = s.x_shape
    k, p, st = s.filter_size, s.padding, s.stride
    d6 = dcols.reshape(n, s.out_height, s.out_width, k, k, c)
    dpad = np.zeros((n, h + 2 * p, w + 2 * p, c))
    for i in range(s.out_height):
        for j in range(s.out_width):
            dpad[:, i * st : i * st + k, j * st : j * st + k, :] = d6[:, i, j]
    return dpad[:, p : p + h, p : p + w, :]


class _Evidence:
    """What the rules read: the result, its gradients as ``_Tensor``s, the verified point (lazily), and the
    tensors earlier rules explained."""

    def __init__(self, result: CheckResult):
        self.result = result
        self.shape: ConvShape = result.spec.shape
        self.activation: Activation = result.spec.activation
        self.explained: set[str] = set()
        self.tensors: dict[str, _Tensor] = {}
        for g in result.gradients:
            t = _Tensor.of(g)
            if t is not None:
                self.tensors[g.name] = t

    @property
    def forward(self) -> ForwardResult | None:
        return self.result.forward

    @property
    def forward_ok(self) -> bool:
        return self.forward is None or self.forward.ok

    def get(self, name: str) -> _Tensor | None:
        return self.tensors.get(name)

    def failed(self) -> list[_Tensor]:
        """The failing gradients no earlier rule has explained."""
        return [t for t in self.tensors.values() if t.failed and t.name not in self.explained]

    def failing(self, name: str, complete: bool = False) -> _Tensor | None:
        """The tensor ``name`` if it failed, is unexplained, and (with ``complete``) had every entry checked."""
        t = self.tensors.get(name)
        if t is None or not t.failed or name in self.explained or (complete and not t.complete):
            return None
        return t

    @cached_property
    def point(self) -> _Point | None:
        return _rebuild_point(self.result)

    @property
    def gradient_point(self) -> _Point | None:
        """The point, for gradient hypotheses: only when the layer's forward is the reference's."""
        return self.point if self.forward_ok else None


Rule = Callable[[_Evidence], "_Hint | None"]


# ----------------------------------------------------------------------------------------------------
# Geometry helpers (one spatial axis at a time; coordinates are input rows/columns)
# ----------------------------------------------------------------------------------------------------


def _coverage(size: int, k: int, s: int, p: int, count: int) -> np.ndarray:
    """How many windows cover each input row ``0..size-1`` (window ``i`` starts at padded row ``i·s``)."""
    cov = np.zeros(size + 2 * p + k + s * count, dtype=int)
    for i in range(count):
        cov[i * s : i * s + k] += 1
    return cov[p : p + size]


def _window_rows(i: int, size: int, k: int, s: int, p: int) -> np.ndarray:
    """Boolean mask of the input rows window ``i`` covers."""
    rows = np.arange(size) + p
    return (rows >= i * s) & (rows < i * s + k)


def _coverage_hw(shape: ConvShape) -> np.ndarray:
    """Windows covering each input position, ``(H, W)``."""
    k, s, p = shape.filter_size, shape.stride, shape.padding
    return np.outer(
        _coverage(shape.in_height, k, s, p, shape.out_height), _coverage(shape.in_width, k, s, p, shape.out_width)
    )


def _last_windows(shape: ConvShape) -> tuple[np.ndarray, np.ndarray]:
    """Input rows and columns the last row and column of windows cover (none along an axis with one window:
    there the "last" windows are all of them)."""
    k, s, p = shape.filter_size, shape.stride, shape.padding
    rows = _window_rows(shape.out_height - 1, shape.in_height, k, s, p) & (shape.out_height > 1)
    cols = _window_rows(shape.out_width - 1, shape.in_width, k, s, p) & (shape.out_width > 1)
    return rows, cols


def _span(mask: np.ndarray) -> str:
    """``"3"``, ``"3–5"`` or ``"0, 2, 4"`` for the True positions of a 1-D mask."""
    idx = [int(i) for i in np.flatnonzero(mask)]
    if not idx:
        return "none"
    if idx == list(range(idx[0], idx[-1] + 1)):
        return str(idx[0]) if len(idx) == 1 else f"{idx[0]}–{idx[-1]}"
    return ", ".join(map(str, idx[:8])) + (", …" if len(idx) > 8 else "")


def _hw(mask: np.ndarray) -> np.ndarray:
    """An ``(N, H, W, C)`` mask projected onto ``(H, W)`` (any over batch and channels)."""
    return np.asarray(mask.any(axis=(0, 3)))


def _right_positions(t: _Tensor, region: np.ndarray) -> int:
    """Positions ``(h, w)`` in ``region`` with a clearly nonzero gradient that are right at every entry."""
    return int(np.sum(region & _hw(t.informative) & ~_hw(t.bad)))


def _names(tensors: Sequence[_Tensor | str]) -> str:
    names = [_SHORT[t] if isinstance(t, str) else t.short for t in tensors]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _plural(tensors: Sequence[object], one: str, many: str) -> str:
    return one if len(tensors) == 1 else many


def _offset(d: int) -> str:
    """``− 1`` for a shift of 1, ``+ 2`` for −2 (index arithmetic as printed in a hint)."""
    return f"− {d}" if d >= 0 else f"+ {-d}"


def _where_rows_cols(rows: np.ndarray, cols: np.ndarray) -> str:
    parts = ([f"rows {_span(rows)}"] if rows.any() else []) + ([f"columns {_span(cols)}"] if cols.any() else [])
    return " and ".join(parts)


# ----------------------------------------------------------------------------------------------------
# 0. Contract problems that have a known cause
# ----------------------------------------------------------------------------------------------------


def rule_crop_shape(ev: _Evidence) -> _Hint | None:
    """dx came back with the wrong spatial size, one a padding crop produces.

    ``dpad[:, p:-p, p:-p]`` is empty at ``p = 0`` (``-0`` is ``0``); an uncropped dx has ``H + 2p`` rows; a
    crop applied to the unpadded gradient ``H − 2p``. The contract reports the shape; this names the crop.
    """
    s = ev.shape
    p = s.padding
    for problem in ev.result.contract:
        dims = problem.shape if problem.kind is FindingKind.SHAPE and problem.tensor == "dx" else None
        if dims is None or len(dims) != 4:
            continue
        rows, cols = dims[1], dims[2]
        if rows == 0 and cols == 0 and p == 0:
            why = "the crop dpad[:, p:-p, p:-p] keeps nothing when p = 0 (0:-0 is an empty slice); crop only if p > 0"
        elif (rows, cols) == (s.in_height + 2 * p, s.in_width + 2 * p) and p > 0:
            why = f"that is the padded size H + 2p: the padding (p = {p}) is never cropped"
        elif (rows, cols) == (s.in_height - 2 * p, s.in_width - 2 * p) and p > 0:
            why = f"that is H − 2p: the padding (p = {p}) is cropped from a gradient that has none"
        else:
            continue
        return _Hint("padding", f"dx has {rows}×{cols} positions for a {s.in_height}×{s.in_width} input: {why}")
    return None


# What a repeated backward can show besides accumulation: another result, a failure, state outside the cache.
_REPEAT_TROUBLE = (FindingKind.REPEAT_DIFFERS, FindingKind.REPEAT_FAILED, FindingKind.STATE_OUTSIDE_CACHE)


def rule_repeatability(ev: _Evidence) -> _Hint | None:
    """A second backward on the same cache (or after another forward) differs from the first.

    Gradient checking calls forward and backward many times; an implementation that accumulates into a buffer
    that persists across calls, or keeps state outside its cache, is right once and wrong afterwards.
    """
    for problem in ev.result.contract:
        if problem.kind is FindingKind.REPEAT_ACCUMULATES:
            return _Hint(
                "repeatability",
                "a second backward call returned twice the first gradient: it is accumulated (+=) into a buffer "
                "nothing zeroes; allocate the gradient fresh in every call",
            )
        if problem.kind in _REPEAT_TROUBLE:
            return _Hint(
                "repeatability",
                "backward returns other gradients when called again: it modifies its cache or keeps state "
                "outside it (see the contract problem)",
            )
    return None


# ----------------------------------------------------------------------------------------------------
# 1. Forward: the output against the reference
# ----------------------------------------------------------------------------------------------------


def _forward_arrays(ev: _Evidence) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(output, reference, scalar tolerance) of a failed, unexplained forward with matching shapes."""
    f = ev.forward
    if f is None or f.ok or "forward" in ev.explained or f.output is None or f.reference is None:
        return None
    if f.output.shape != f.reference.shape:
        return None
    return np.asarray(f.output, dtype=np.float64), f.reference, FORWARD_SLACK * f.allowed


def rule_forward_hypotheses(ev: _Evidence) -> _Hint | None:
    """The output equals the reference computed with the kernel flipped, the weights in another layout, no
    bias, or no activation: exact, at the verified point."""
    arrays = _forward_arrays(ev)
    point = ev.point
    if arrays is None or point is None:
        return None
    out = arrays[0]
    s = ev.shape
    k, c_in, c_out = s.filter_size, s.in_depth, s.out_depth
    w = point.w
    candidates: list[tuple[str, str, dict[str, Any]]] = [
        (
            "flipped kernel",
            "the kernel rotated 180° (a true convolution where a cross-correlation is wanted)",
            {"w": w[::-1, ::-1]},
        ),
        (
            "row order",
            "the weights read in (c_in, kh, kw) order",
            {"w": w.reshape(c_in, k, k, c_out).transpose(1, 2, 0, 3)},
        ),
        ("channel order", "C_in and C_out swapped in the weights", {"w": w.swapaxes(2, 3).reshape(w.shape)}),
        ("forward bias", "no bias: the forward does not add + b", {"b": np.zeros_like(point.b)}),
        (
            "forward activation",
            "no activation: the forward returns the pre-activation",
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
            return _Hint(label, f"the output equals the reference computed with {what}", explains)
    return None


def _pre_activation(a: np.ndarray, activation: Activation) -> np.ndarray:
    """``Z`` from ``act(Z)`` for the piecewise-linear activations, NaN where it is lost (ReLU's zeros)."""
    if activation is Activation.RELU:
        return np.where(a > 0, a, np.nan)
    if activation is Activation.LEAKY_RELU:
        return np.where(a > 0, a, a / act.LEAKY_SLOPE)
    return a


def rule_forward_bias(ev: _Evidence) -> _Hint | None:
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
    return _Hint(
        "forward bias",
        f"the output's pre-activation is the reference's minus a constant per output channel ({shown}): the "
        "forward does not add the bias (+ b), or adds another one",
        ("forward",),
    )


def rule_forward_activation(ev: _Evidence) -> _Hint | None:
    """The reference equals the activation applied to the output: the forward skips the activation."""
    arrays = _forward_arrays(ev)
    if arrays is None or ev.activation is Activation.NONE:
        return None
    out, ref, tol = arrays
    if not np.all(np.abs(act.apply(ev.activation, out.copy()) - ref) <= tol):
        return None
    return _Hint(
        "forward activation",
        f"the reference equals {ev.activation.value}(output) at every entry: the forward returns the "
        "pre-activation without applying the activation",
        ("forward",),
    )


def rule_forward_rearranged(ev: _Evidence) -> _Hint | None:
    """The output is the reference transposed (OH ↔ OW, or walked in (n, ow, oh) order) or shifted by one."""
    arrays = _forward_arrays(ev)
    if arrays is None:
        return None
    out, ref, tol = arrays
    _, oh, ow, _ = out.shape
    if oh == ow > 1 and np.all(np.abs(out - ref.swapaxes(1, 2)) <= tol):
        return _Hint("transposed", "the output is the reference with OH and OW swapped", ("forward",))
    if oh > 1 and ow > 1 and np.all(np.abs(out - ref.transpose(0, 2, 1, 3).reshape(ref.shape)) <= tol):
        return _Hint("transposed", "the output is the reference walked in (n, ow, oh) order", ("forward",))
    for dh, dw in ((1, 1), (-1, -1), (1, 0), (0, 1), (-1, 0), (0, -1)):
        if abs(dh) >= oh - 1 or abs(dw) >= ow - 1:
            continue  # at least two rows and columns must overlap
        a = out[:, max(dh, 0) : oh + min(dh, 0), max(dw, 0) : ow + min(dw, 0)]
        r = ref[:, max(-dh, 0) : oh + min(-dh, 0), max(-dw, 0) : ow + min(-dw, 0)]
        if np.all(np.abs(a - r) <= tol):
            return _Hint(
                "shift",
                f"the output at (oh, ow) is the reference at (oh {_offset(dh)}, ow {_offset(dw)}): the windows "
                f"are offset by ({dh}, {dw}); check the padding and where each window starts",
                ("forward",),
            )
    return None


# ----------------------------------------------------------------------------------------------------
# 2. Gradient transforms: the analytic gradient is the numeric one rescaled, shifted or rearranged
# ----------------------------------------------------------------------------------------------------


def _ratio(t: _Tensor) -> float | None:
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


def rule_constant_ratio(ev: _Evidence) -> _Hint | None:
    """``analytic = r × numeric`` at every entry of a tensor: a scaling bug; the factor says which.

    A constant factor over a whole tensor means the pattern of the gradient is right and only its scale is
    not: a mean where the loss sums (1/N, 1/(N·OH·OW)), a sign, a factor 2. Only the bias off by such a factor
    means the bias reduction averages; dx and dw off by 1/N mean a mean-vs-sum confusion over the batch.
    """
    groups: dict[float, list[_Tensor]] = {}
    for t in ev.failed():
        r = _ratio(t)
        if r is not None:
            key = next((k for k in groups if abs(k - r) <= RATIO_PRECISION * abs(k)), r)
            groups.setdefault(key, []).append(t)
    if not groups:
        return None
    r, tensors = max(groups.items(), key=lambda kv: len(kv[1]))
    named = _factor_name(r, ev.shape)
    where = f"analytic = {_show_ratio(r)} × numeric at every entry of {_names(tensors)}"
    why = f" — {named}" if named else ": the gradient's pattern is right, its scale is not"
    explains = tuple(t.name for t in tensors)
    if explains == ("bias",):
        return _Hint("bias reduction", f"{where}{why}; db must sum dZ over all N·OH·OW positions", explains)
    return _Hint("sign" if abs(r + 1) < RATIO_PRECISION else "scaling", where + why, explains)


def _shift_matches(t: _Tensor, dh: int, dw: int) -> bool:
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


def rule_dx_shifted(ev: _Evidence) -> _Hint | None:
    """dx equals the numeric dx shifted by a row and/or column: the padding crop starts off by that much.

    Cropping ``dpad[:, p−1 : p−1+H]`` instead of ``dpad[:, p : p+H]`` gives ``dx[h] = true dx[h − 1]``
    exactly, so the shift is an identity between the two arrays, not a resemblance.
    """
    t = ev.failing("input", complete=True)
    if t is None:
        return None
    for dh, dw in ((1, 1), (-1, -1), (1, 0), (0, 1), (-1, 0), (0, -1), (2, 2), (-2, -2)):
        if _shift_matches(t, dh, dw):
            return _Hint(
                "padding",
                f"analytic dx at (h, w) = numeric dx at (h {_offset(dh)}, w {_offset(dw)}), every entry: dx is "
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
            lambda a: a.reshape(c_in, k, k, c_out).transpose(1, 2, 0, 3),
        ),
        (
            "row order",
            "with its k·k·C_in rows written in (c_in, kh, kw) order, though im2col lays a window out as (kh, kw, c_in)",
            lambda a: a.transpose(2, 0, 1, 3).reshape(shape),
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
            lambda a: a.transpose(3, 2, 0, 1).reshape(shape),
        ),
    ]


def rule_dw_rearranged(ev: _Evidence) -> _Hint | None:
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
    return _Hint(labels, f"analytic dw equals the numeric dw {whats}", ("weights",))


# ----------------------------------------------------------------------------------------------------
# 3. Hypotheses at the verified point
# ----------------------------------------------------------------------------------------------------


def _activation_candidates(point: _Point) -> list[tuple[str, dict[str, np.ndarray]]]:
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
                {"input": point.fold((da @ point.weights.T) * (point.cols > 0))},
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


def rule_activation_mask(ev: _Evidence) -> _Hint | None:
    """The failing gradients equal those of a wrong activation derivative (missing, inverted, wrong tensor).

    ``dZ = dA ⊙ act'(Z)`` is where errors follow the output's sign: a missing ReLU mask lets the gradient
    through where the output is 0, an inverted one only there, a mask from dout's sign or from the input
    zeroes other entries. Each candidate is the exact gradient of that mistake at this point; every failing
    tensor must equal one of them.
    """
    point = ev.gradient_point
    failed = ev.failed()
    if point is None or not failed:
        return None
    candidates = _activation_candidates(point)
    explained: dict[str, list[_Tensor]] = {}
    for t in failed:
        what = next((what for what, preds in candidates if t.name in preds and t.equals(preds[t.name])), None)
        if what is None:
            return None
        explained.setdefault(what, []).append(t)
    clauses = [
        f"analytic {_names(ts)} {_plural(ts, 'equals the gradient', 'equal the gradients')} computed {what}"
        for what, ts in explained.items()
    ]
    right = [t for t in ev.tensors.values() if not t.failed]
    tail = f"; {_names(right)} {_plural(right, 'is', 'are')} right" if right else ""
    return _Hint("activation mask", "; ".join(clauses) + tail, tuple(t.name for t in failed))


def rule_dout_order(ev: _Evidence) -> _Hint | None:
    """The gradients equal those for dout walked in (n, ow, oh) order: dout transposed into matrix form."""
    point = ev.gradient_point
    failed = ev.failed()
    if point is None or not failed or ev.shape.out_height == 1 or ev.shape.out_width == 1:
        return None
    da = point.dout.transpose(0, 2, 1, 3).reshape(point.da.shape)
    preds = point.gradients(da if point.slope is None else da * point.slope)
    if not all(t.equals(preds[t.name]) for t in failed):
        return None
    return _Hint(
        "transposed",
        f"analytic {_names(failed)} {_plural(failed, 'equals the gradient', 'equal the gradients')} for dout read "
        "in (n, ow, oh) order: dout's spatial axes are transposed when it is reshaped to (N·OH·OW, C_out), so its "
        "rows no longer match M's windows",
        tuple(t.name for t in failed),
    )


def _overlap_evidence(t: _Tensor, shape: ConvShape) -> str:
    cov = _coverage_hw(shape)
    bad = _hw(t.bad)
    several, single = cov > 1, cov == 1
    text = f"wrong at {int((bad & several).sum())} of the {int(several.sum())} positions several windows cover"
    if single.any():
        text += f", right at the {int(single.sum())} positions one window covers"
    return text


def _stride_evidence(t: _Tensor, shape: ConvShape) -> list[str]:
    """What a window placement without the stride leaves in dx: exact zeros past where stride-1 windows end,
    nonzero values where no window reaches."""
    k, p = shape.filter_size, shape.padding
    a, n = t.analytic, t.numeric
    found = []
    for axis, size, count, word in (
        (1, shape.in_height, shape.out_height, "row"),
        (2, shape.in_width, shape.out_width, "column"),
    ):
        end = count - 1 + k - p  # first input row past windows placed every 1 row
        if count > 1 and 0 < end < size:
            beyond = np.take(a, np.arange(end, size), axis=axis)
            just_before = np.take(a, [end - 1], axis=axis)
            if not np.any(beyond) and np.any(just_before) and np.any(np.take(n, np.arange(end, size), axis=axis)):
                found.append(f"exactly 0 from {word} {end} on")
    cov = _coverage_hw(shape)
    unreached = cov == 0
    if unreached.any() and np.any(_hw(a != 0) & unreached):
        found.append(f"nonzero at {int(np.sum(_hw(a != 0) & unreached))} positions no window reaches")
    return found


def _dx_candidates(point: _Point, t: _Tensor) -> list[tuple[str, Callable[[], np.ndarray], Callable[[], str]]]:
    """dx as common col2im / dM mistakes compute it (lazily), with a label and the evidence to print."""
    s = point.shape
    k, c = s.filter_size, s.in_depth
    dcols = point.dcols
    flipped = point.w[::-1, ::-1].reshape(-1, s.out_depth)
    rows, cols = _last_windows(s)
    n_idx = np.arange(s.batch * s.out_height * s.out_width).reshape(s.batch, s.out_height, s.out_width)

    def without_last() -> np.ndarray:
        keep = np.ones(n_idx.shape, dtype=bool)
        if s.out_height > 1:
            keep[:, -1, :] = False
        if s.out_width > 1:
            keep[:, :, -1] = False
        return point.fold(dcols * keep.reshape(-1, 1))

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
                f"windows overlap ({_overlap_evidence(t, s)}): accumulate (+=)"
            ),
        ),
        (
            "col2im accumulate",
            lambda: _fold_assign_by_window(point, dcols),
            lambda: (
                f"analytic dx equals col2im assigning (=) window after window, as the seed's loop does with += "
                f"turned into =, so the last window wins where windows overlap ({_overlap_evidence(t, s)}): "
                "accumulate (+=)"
            ),
        ),
        (
            "row order",
            lambda: point.fold(dcols.reshape(-1, c, k, k).transpose(0, 2, 3, 1).reshape(dcols.shape)),
            lambda: (
                "analytic dx equals col2im reading each row of dM as (c_in, kh, kw), though im2col wrote (kh, kw, c_in)"
            ),
        ),
        (
            "row order",
            lambda: point.fold(dcols.reshape(-1, k, k, c).transpose(0, 3, 1, 2).reshape(dcols.shape)),
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
                + "".join(f"; it is {e}" for e in _stride_evidence(t, s))
                + f": the stride (s = {s.stride}) is missing from col2im's window placement"
            ),
        ),
        (
            "border",
            without_last,
            lambda: (
                f"analytic dx equals col2im without the last row and column of windows (wrong only where they "
                f"reach: {_where_rows_cols(rows, cols)}): the window loop stops one short, (H + 2p − k) // s "
                "iterations without the + 1"
            ),
        ),
    ]


def rule_dx_hypotheses(ev: _Evidence) -> _Hint | None:
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
            return _Hint(label, text(), ("input",))
    return None


# ----------------------------------------------------------------------------------------------------
# 4. Whole-tensor facts: only the bias wrong, never written
# ----------------------------------------------------------------------------------------------------


def rule_only_bias(ev: _Evidence) -> _Hint | None:
    """Only db is wrong while dx and dw are right: dZ is right, so the reduction ``db = Σ dZ`` is not.

    With the point known, a partial sum db equals exactly (one sample only) is named, and explains db. A db
    that is exactly zero is left to ``rule_all_zero`` unless such a partial sum explains it.
    """
    db = ev.failing("bias")
    dx, dw = ev.get("input"), ev.get("weights")
    if db is None or dx is None or dw is None or dx.failed or dw.failed or not ev.forward_ok:
        return None
    s = ev.shape
    point = ev.point
    if point is not None and s.batch > 1:
        per_sample = point.dz.reshape(s.batch, -1, s.out_depth).sum(axis=1)
        for n in range(s.batch):
            if db.equals(per_sample[n]):
                return _Hint(
                    "bias reduction",
                    f"dx and dw are right (so dZ is), and db equals the sum over sample {n} alone: db must sum dZ "
                    f"over all N·OH·OW = {s.batch * s.out_height * s.out_width} output positions",
                    ("bias",),
                )
    if not np.any(db.analytic[db.checked]):
        return None
    return _Hint(
        "bias reduction",
        f"dx and dw are right (so dZ is) but db is not: db must be the sum of dZ over all N·OH·OW = "
        f"{s.batch * s.out_height * s.out_width} output positions (every position adds the bias)",
    )


def rule_all_zero(ev: _Evidence) -> _Hint | None:
    """An analytic gradient is exactly zero everywhere while the numeric one is not: it is never written."""
    zero = [t for t in ev.failed() if not np.any(t.analytic[t.checked])]
    if not zero:
        return None
    s = ev.shape
    label, note = "never written", ""
    if [t.name for t in zero] == ["input"] and 1 in (s.out_height, s.out_width):
        # With one window along an axis, "the last row of windows" is all of them: a loop that stops one short
        # never runs, and zeroes dx exactly like a gradient that is never written.
        label = "never written / border"
        note = f" (with OH = {s.out_height}, OW = {s.out_width}, a window loop missing its + 1 never runs at all)"
    return _Hint(
        label,
        f"analytic {_names(zero)} {_plural(zero, 'is', 'are')} exactly 0 at every entry, numeric not: the "
        f"gradient is never computed or never written into the returned array{note}",
        tuple(t.name for t in zero),
    )


# ----------------------------------------------------------------------------------------------------
# 5. Places (fallbacks): every wrong entry lies in a region the geometry defines, and it is right elsewhere
# ----------------------------------------------------------------------------------------------------


def rule_dx_overlap(ev: _Evidence) -> _Hint | None:
    """dx is wrong only where windows overlap and right where one window covers an entry: col2im assigns.

    col2im must add (``+=``) every window's contribution; assigning (``=``) keeps the last window's, which is
    only wrong where more than one window covers an entry.
    """
    t = ev.failing("input", complete=True)
    s = ev.shape
    if t is None or s.stride >= s.filter_size:
        return None
    cov = _coverage_hw(s)
    bad = _hw(t.bad)
    several = cov > 1
    if np.any(bad & ~several) or bad.sum() < 0.5 * several.sum() or _right_positions(t, cov == 1) < MIN_EVIDENCE:
        return None
    return _Hint(
        "col2im accumulate",
        f"dx is {_overlap_evidence(t, s)}: col2im assigns (=) where it must accumulate (+=)",
        ("input",),
    )


def rule_dx_tail(ev: _Evidence) -> _Hint | None:
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
            covered = _window_rows(i, size, k, st, p)
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
    return _Hint(
        "never written",
        f"dx is wrong only where the last {m} of the {total} windows (rows of M in (n, oh, ow) order) "
        f"reach{zero_note}: the gradient of those rows of dM (or dZ) is never written (a loop over blocks that "
        "drops the last, partial block?)",
        ("input",),
    )


def rule_dx_last_windows(ev: _Evidence) -> _Hint | None:
    """dx is wrong only where the last row or column of windows reaches, in every sample: the loop stops short.

    Looping over ``(H + 2p − k) // s`` window positions instead of ``… + 1`` drops the last row and column of
    windows; the error then lies in their footprint on the bottom and right border of every sample.
    """
    t = ev.failing("input", complete=True)
    if t is None:
        return None
    rows, cols = _last_windows(ev.shape)
    footprint = rows[:, None] | cols[None, :]
    bad = _hw(t.bad)
    every_sample = t.bad.any(axis=(1, 2, 3)).all()
    if np.any(bad & ~footprint) or not every_sample or _right_positions(t, ~footprint) < MIN_EVIDENCE:
        return None
    return _Hint(
        "border",
        f"dx is wrong only on its bottom/right border ({_where_rows_cols(rows, cols)}), which the last row and "
        "column of windows cover, in every sample: the window loop misses its last iteration "
        "((H + 2p − k) // s iterations without the + 1?)",
        ("input",),
    )


def rule_dx_stride(ev: _Evidence) -> _Hint | None:
    """dx is zero past where windows placed every 1 row would end, or nonzero where no window reaches.

    col2im that places window ``i`` at row ``i`` instead of ``i·s`` fills padded rows ``< OH − 1 + k`` only;
    rows past that get exactly 0 though windows reach them. When ``s > k`` rows between windows get no gradient
    at all, and a nonzero analytic value there means a window was put in the wrong place.
    """
    t = ev.failing("input", complete=True)
    s = ev.shape
    if t is None or s.stride == 1:
        return None
    evidence = _stride_evidence(t, s)
    if not evidence:
        return None
    return _Hint(
        "stride",
        f"analytic dx is {' and '.join(evidence)} (stride {s.stride}, k = {s.filter_size}): col2im places the "
        "windows at the wrong rows; window i must start at padded row i·s",
        ("input",),
    )


def rule_dx_frame(ev: _Evidence) -> _Hint | None:
    """dx is wrong only in a thin frame at its edges (within ``max(p, 1)`` rows/columns): padding handling."""
    t = ev.failing("input", complete=True)
    s = ev.shape
    if t is None:
        return None
    width = max(s.padding, 1)
    rr, cc = np.arange(s.in_height), np.arange(s.in_width)
    frame = ((rr < width) | (rr >= s.in_height - width))[:, None] | ((cc < width) | (cc >= s.in_width - width))[None]
    if np.any(_hw(t.bad) & ~frame) or _right_positions(t, ~frame) < MIN_EVIDENCE:
        return None
    return _Hint(
        "border",
        f"dx is wrong only within {width} row(s) and column(s) of its edges and right inside: look at the padding "
        "(the crop's offset, how x is padded) and at the windows that reach the border",
        ("input",),
    )


# ----------------------------------------------------------------------------------------------------
# The rules, in order: contract, forward, transforms, only-bias, all-zero, hypotheses, places
# ----------------------------------------------------------------------------------------------------

RULES: tuple[Rule, ...] = (
    rule_crop_shape,
    rule_repeatability,
    rule_forward_hypotheses,
    rule_forward_bias,
    rule_forward_activation,
    rule_forward_rearranged,
    rule_constant_ratio,
    rule_dx_shifted,
    rule_dw_rearranged,
    rule_only_bias,
    rule_all_zero,
    rule_activation_mask,
    rule_dout_order,
    rule_dx_hypotheses,
    rule_dx_overlap,
    rule_dx_tail,
    rule_dx_last_windows,
    rule_dx_stride,
    rule_dx_frame,
)


def diagnose(result: CheckResult) -> tuple[str, ...]:
    """Short hints, each naming a likely cause with its evidence; empty for a passing check.

    Args:
        result: a finished check (any status); its gradient and forward arrays and contract problems are read.
    Returns:
        Hints ``"<label>: <evidence>: <cause>"``, most specific first, at most one per label. A rule that raises
        on an unusual result is skipped: ``run_check`` calls this, and a hint is never worth losing the verdict.
    """
    ev = _Evidence(result)
    hints: list[str] = []
    seen: set[str] = set()
    for rule in RULES:
        try:
            hint = rule(ev)
        except Exception:  # noqa: BLE001 - a rule that cannot read an odd result must not turn a verdict into an error
            continue
        if hint is None:
            continue
        ev.explained.update(hint.explains)
        if hint.label not in seen:
            seen.add(hint.label)
            hints.append(str(hint))
    return tuple(hints)
