"""Step sizes and tolerances, derived from the dtype and a simple rounding model.

Notation: ``u`` is the unit roundoff of the dtype (``finfo.eps / 2``: 1.1e-16 for float64, 6.0e-8 for float32).

Step ``eps``. A central difference of a smooth function has truncation error ``ε²·f'''/6`` and rounding error
``u·|f|/ε``; the sum is smallest near ``ε ≈ u^(1/3)`` (4.8e-6 in float64). A piecewise-linear layer (ReLU) has no
truncation error, but a step that carries a pre-activation across the kink spoils that output's difference, with
probability growing like ``ε``; kinks are detected and handled (``convcheck.numeric``), and a step 4× below the
smooth optimum keeps them rare at a rounding cost that does not matter. The default is the power of two just below
``u^(1/3)/4`` (2⁻²⁰ ≈ 9.5e-7 in float64, 2⁻¹⁰ ≈ 9.8e-4 in float32), so that ``θ ± ε`` is exact for every
``|θ| < ε·2^p`` (p = mantissa bits) and the step actually taken equals the nominal one.

float32 layers. Finite differences taken in float32 drown in rounding (``u/ε ≈ 6e-5`` per output, summed over
thousands of outputs). When a float32 layer also runs in float64 (same code, float64 arrays), convcheck takes the
differences in float64 at the same float32-valued point and judges the float32 analytic gradient against them with
the float32 rounding bound of the backward's own sums (below). A layer that returns float32 whatever it is given is
differenced in float32, with float32's step and noise model.

Rounding model. A computed pre-activation ``z = Σ x·w + b`` with ``n = ∏k·C_in/groups + 1`` terms (``k²·C_in + 1``
for the seed's layer) carries a rounding error of order ``σ = u·(√n·A + |out| + max A)`` (the last term, the largest
magnitude any window can reach, for layers whose rounding is global, such as an FFT convolution) where
``A = Σ |x|·|w| + |b|`` (the sum of the magnitudes, not ``|z|``, which cancellation can make arbitrarily small;
``reference.magnitude`` computes it). The central difference of one output then has noise ``√2·σ / (2ε)`` and a
gradient entry that sums many outputs with weights ``G`` has noise ``√(Σ G²·2σ²) / (2ε)``. The analytic gradient's
own rounding is bounded the same way: an entry summing ``n`` products whose magnitudes add up to ``M`` is off by about
``u·√n·M`` (``analytic_noise``). An entry is allowed

    atol + rtol·|numeric| + SAFETY·(numeric noise + analytic noise) [+ the truncation bound, smooth activations]

The model is generous (a dot product of random terms is typically 10-30× more accurate) and SAFETY adds a further
factor, so a correct layer never trips it, while a real bug moves entries by O(|gradient|). ``rtol = √u`` is a
margin for anything else; ``atol = u`` only stops exact comparisons.
"""

from __future__ import annotations

import math

import numpy as np

from convcheck import reference
from convcheck.geometry import Window
from convcheck.results import Tolerance
from convcheck.spec import Activation, DType

SAFETY = 8.0  # multiples of the estimated rounding noise an entry may deviate by

# sup |f'''| of each smooth activation (tanh''' peaks at z = 0 with -2; the logistic's at z = 0 with -1/8).
THIRD_DERIVATIVE_BOUND = {Activation.TANH: 2.0, Activation.SIGMOID: 0.125}
# sup |f''|: tanh'' peaks at 4/(3√3) ≈ 0.770 where tanh z = 1/√3; the logistic's at √3/18 ≈ 0.0962.
SECOND_DERIVATIVE_BOUND = {Activation.TANH: 4 / (3 * math.sqrt(3)), Activation.SIGMOID: math.sqrt(3) / 18}


def numpy_dtype(dtype: DType) -> np.dtype:
    return np.dtype(dtype.value)


def unit_roundoff(dtype: DType) -> float:
    return float(np.finfo(numpy_dtype(dtype)).eps) / 2


def default_eps(dtype: DType) -> float:
    """The step for central differences: the power of two just below ``u^(1/3)/4`` (module docstring)."""
    return 2.0 ** math.floor(math.log2(unit_roundoff(dtype) ** (1 / 3) / 4))


def resolve(
    dtype: DType,
    eps: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
) -> Tolerance:
    """Fill in the defaults for whichever of eps/rtol/atol the user left as ``None``.

    ``dtype`` is the type the finite differences are taken in (float64 for promoted float32 layers).
    """
    u = unit_roundoff(dtype)
    return Tolerance(
        eps=default_eps(dtype) if eps is None else float(eps),
        rtol=math.sqrt(u) if rtol is None else float(rtol),
        atol=u if atol is None else float(atol),
    )


def rounding_sigma(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    out: np.ndarray,
    window: Window,
    u: float,
    magnitude: np.ndarray | None = None,
) -> np.ndarray:
    """Per output element, the rounding noise ``σ = u·(√n·A + |out| + max A)`` of one evaluation (module docstring).

    Args:
        x: (N, *S, C_in), w: (*kernel, C_in/g, C_out), b: (C_out,) or (0,), out: (N, *O, C_out).
        window: the layer's geometry (``ConvShape.window``).
        magnitude: ``A = reference.magnitude`` of these x, w and b in float64, when already known (a check needs
            it for its forward verdict and its engine alike).
    """
    if magnitude is None:
        magnitude = reference.magnitude(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), window)
    terms = math.prod(w.shape[:-1]) + 1  # the products of one window and the bias
    # The floor covers layers whose rounding is global rather than per window (an FFT convolution spreads every
    # output's rounding over all of them, so an output of an all-padding window is off by ~u times the largest
    # magnitude any window could reach: max|x| times the largest Σ|w| of one filter, plus max|b|).
    abs_w = np.abs(w.astype(np.float64))
    one_filter = abs_w.sum(axis=tuple(range(w.ndim - 1)))
    floor = float(np.max(np.abs(x), initial=0.0) * np.max(one_filter, initial=0.0) + np.max(np.abs(b), initial=0.0))
    return u * (math.sqrt(terms) * magnitude + np.abs(np.asarray(out, dtype=np.float64)) + floor)


def analytic_noise(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    dout: np.ndarray,
    window: Window,
    u: float,
    activation: Activation = Activation.NONE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rounding bound of each analytic gradient entry (module docstring), as ``(dx, dw, db)``.

    Two parts: ``u·√n·M`` for the backward's own sums; and, for a curved activation, the error that the
    computed pre-activation's rounding ``σ_z = u·√n·A`` passes into ``act'(z)`` — at most ``sup|act''|·σ_z`` per
    output, carried to each entry by the same sums (it dominates when large terms cancel to a moderate ``z``).

    Args:
        x: (N, *S, C_in), w: (*kernel, C_in/g, C_out), b: (C_out,) or (0,), dout: (N, *O, C_out).
        window: the layer's geometry (``ConvShape.window``).
        activation: the layer's activation (its curvature sets the second part).
    Every activation convcheck knows has ``|act'| ≤ 1``, so ``|dout|`` bounds what reaches the products. One input
    entry reaches, along each axis, at most ``min(k, (k − 1)·d // s + 1)`` windows (``ceil(k/s)`` without dilation),
    each in the ``C_out/g`` output channels of its group.
    """
    from convcheck.layer import MatrixConvLayer  # the linear layer's backward computes exactly these sums

    linear = MatrixConvLayer(activation=Activation.NONE, window=window)
    absolute = [np.abs(np.asarray(a, dtype=np.float64)) for a in (x, w, b, dout)]
    magnitude, cache = linear.forward(absolute[0], absolute[1], absolute[2])
    mag_dx, mag_dw, mag_db = linear.backward(absolute[3], cache)
    kernel, c_out = w.shape[:-2], w.shape[-1]
    positions = math.prod(dout.shape[:-1])
    windows = (min(k, (k - 1) * d // s + 1) for k, s, d in zip(kernel, window.strides, window.dilations, strict=True))
    per_input = math.prod(windows) * (c_out // window.groups)  # (window, channel) pairs that reach one input entry
    bounds = [
        u * math.sqrt(per_input) * mag_dx,
        u * math.sqrt(positions) * mag_dw,
        u * math.sqrt(positions) * mag_db,
    ]
    curvature = SECOND_DERIVATIVE_BOUND.get(activation)
    if curvature is not None:
        sigma_z = u * math.sqrt(math.prod(w.shape[:-1]) + 1) * magnitude
        bounds = [
            bound + extra
            for bound, extra in zip(bounds, linear.backward(absolute[3] * curvature * sigma_z, cache), strict=True)
        ]
    return bounds[0], bounds[1], bounds[2]
