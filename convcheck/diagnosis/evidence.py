"""What the rules read: a failed check's gradients as arrays, the point it was made at, and what is explained.

Shapes follow ``convcheck.spec`` (internal NHWC): dx ``(N, H, W, C_in)``, dw ``(k, k, C_in, C_out)``,
db ``(C_out,)``, output ``(N, OH, OW, C_out)``; ``R = N·OH·OW`` rows of the im2col matrix ``M`` in
``(n, oh, ow)`` order, each window laid out ``(kh, kw, c_in)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from convcheck import activation as act
from convcheck import reference
from convcheck.bugs.col2im import col2im_variant
from convcheck.data import make_data
from convcheck.geometry import Window
from convcheck.results import CheckResult, ForwardResult, Hint, TensorResult
from convcheck.spec import Activation, CheckSpec, ConvShape
from convcheck.tolerance import SAFETY, resolve, rounding_sigma, unit_roundoff
from convcheck.windows import im2col, pad

#: The labels a hint starts with (``bugs.HINTS`` is the subset the planted-bug catalogue expects).
LABELS = (
    "accumulate",
    "activation mask",
    "asymmetric padding",
    "batch loop",
    "bias reduction",
    "bias shape",
    "border",
    "channel loop",
    "channel order",
    "col2im accumulate",
    "depthwise",
    "dilated stride",
    "dilation",
    "dtype",
    "flipped kernel",
    "forward activation",
    "forward bias",
    "group channels",
    "group order",
    "input size",
    "integer mask",
    "kernel axes",
    "layout",
    "never written",
    "no bias",
    "output size",
    "padding",
    "repeatability",
    "reshape order",
    "row order",
    "same padding",
    "scaling",
    "shift",
    "sign",
    "stride",
    "stride axes",
    "transposed",
    "unsupported geometry",
    "window index",
    "window offset",
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

#: How a hint names each tensor.
SHORT = {"input": "dx", "weights": "dw", "bias": "db", "forward": "output"}


@dataclass(frozen=True)
class Gradient:
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
    def of(cls, g: TensorResult) -> Gradient | None:
        """``g``'s arrays, or None when it has none to compare entry by entry (directional, or no arrays)."""
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
        return SHORT[self.name]

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


class Point:
    """The point a check was made at, float64: ``x (N,H,W,C_in)``, ``w (k,k,C_in,C_out)``, ``b``, ``dout``.

    Derived quantities follow the textbook matrix formulation: ``M`` (``(R, k·k·C_in)``), ``Z = M·W + b`` and
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
        """col2im and the crop, ``(R, k·k·C_in)`` → ``(N, H, W, C_in)``, with the knobs of ``col2im_variant``
        (the mistakes: windows placed ``place_stride`` apart, ``=`` instead of ``+=``)."""
        s = self.shape
        return col2im_variant(
            dcols, s.x_shape, s.filter_size, s.stride, s.padding, place_stride=place_stride, accumulate=accumulate
        )

    def masked_by_input(self, dz: np.ndarray) -> np.ndarray:
        """dx with ``dM = dZ·Wᵀ`` masked by the input's sign (``M > 0``): a ReLU mask on the wrong side."""
        return self.fold((dz @ self.weights.T) * (self.cols > 0))

    def gradients(self, dz: np.ndarray) -> dict[str, np.ndarray]:
        """``dx, dw, db`` for a given ``dZ`` (``(R, C_out)``), computed the correct way."""
        return {
            "input": self.fold(dz @ self.weights.T),
            "weights": (self.cols.T @ dz).reshape(self.shape.w_shape),
            "bias": dz.sum(axis=0),
        }

    def forward(
        self,
        w: np.ndarray | None = None,
        b: np.ndarray | None = None,
        activation: Activation | None = None,
        window: Window | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The reference output with some parameters (or the window) replaced, and the tolerance a correct layer
        gets for it."""
        s = self.shape
        w = self.w if w is None else np.ascontiguousarray(w)
        b = self.b if b is None else b
        activation = self.activation if activation is None else activation
        window = s.window if window is None else window
        out = reference.forward(self.x, w, b, window, activation)
        spec = self.spec
        sigma = rounding_sigma(self.x, w, b, out, window, unit_roundoff(spec.dtype))
        allowed = resolve(spec.dtype, spec.eps, spec.rtol, spec.atol).atol + SAFETY * sigma
        return out, allowed


def _rebuild_point(result: CheckResult) -> Point | None:
    """The check's point from its seed, or None when it cannot be verified against the stored reference."""
    f = result.forward
    if f is None or f.reference is None:
        return None
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
    return Point(spec, x, w, b, dout)


class Evidence:
    """What the rules read: the result, its gradients as ``Gradient``s, the verified point (lazily), and the
    tensors earlier rules explained."""

    def __init__(self, result: CheckResult):
        self.result = result
        self.shape: ConvShape = result.spec.shape
        self.activation: Activation = result.spec.activation
        self.explained: set[str] = set()
        self.tensors: dict[str, Gradient] = {}
        for g in result.gradients:
            t = Gradient.of(g)
            if t is not None:
                self.tensors[g.name] = t

    @property
    def forward(self) -> ForwardResult | None:
        return self.result.forward

    @property
    def forward_ok(self) -> bool:
        return self.forward is None or self.forward.ok

    def get(self, name: str) -> Gradient | None:
        return self.tensors.get(name)

    def failed(self) -> list[Gradient]:
        """The failing gradients no earlier rule has explained."""
        return [t for t in self.tensors.values() if t.failed and t.name not in self.explained]

    def failing(self, name: str, complete: bool = False) -> Gradient | None:
        """The tensor ``name`` if it failed, is unexplained, and (with ``complete``) had every entry checked."""
        t = self.tensors.get(name)
        if t is None or not t.failed or name in self.explained or (complete and not t.complete):
            return None
        return t

    @cached_property
    def point(self) -> Point | None:
        return _rebuild_point(self.result)

    @property
    def gradient_point(self) -> Point | None:
        """The point, for gradient hypotheses: only when the layer's forward is the reference's."""
        return self.point if self.forward_ok else None


#: A rule reads the evidence and returns a hint, or None when its pattern is not there.
Rule = Callable[[Evidence], Hint | None]


def basic_only(rule: Rule) -> Rule:
    """``rule`` on the seed's geometry only (``ConvShape.is_basic``: 2-D, square kernel, one stride and padding,
    no dilation, one group, a bias); None elsewhere. For rules whose formulas, regions and words assume it."""

    @functools.wraps(rule)
    def guarded(ev: Evidence) -> Hint | None:
        return rule(ev) if ev.shape.is_basic else None

    return guarded
