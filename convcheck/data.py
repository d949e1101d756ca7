"""The seeded point a check is made at: x, w, b and the dout handed to backward, drawn from ``spec.seed``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from convcheck.spec import CheckSpec
from convcheck.tolerance import numpy_dtype


@dataclass(frozen=True)
class CheckData:
    """The point a check is made at. Arrays in the layer's dtype, shapes as in ``convcheck.spec``.

    x: (N, *S, C_in), w: (*kernel, C_in/g, C_out), b: (C_out,) or (0,) without a bias, dout: (N, *O, C_out) — the
    ``G`` of ``L = Σ out ⊙ G``, handed to backward. For a 2-D layer: (N, H, W, C_in), (kh, kw, C_in/g, C_out),
    (C_out,), (N, OH, OW, C_out).
    """

    x: np.ndarray
    w: np.ndarray
    b: np.ndarray
    dout: np.ndarray


def make_data(spec: CheckSpec) -> CheckData:
    """Seeded random data: x ~ N(0, 1), w ~ N(0, 2/fan_in) (He; ``fan_in = ∏k·C_in/g``), b ~ N(0, 0.1²),
    dout ~ N(0, 1)."""
    rng = np.random.default_rng(spec.seed)
    s = spec.shape
    dtype = numpy_dtype(spec.dtype)
    fan_in = s.fan_in
    x = rng.standard_normal(s.x_shape)
    w = rng.standard_normal(s.w_shape) * math.sqrt(2.0 / fan_in)
    b = rng.standard_normal(s.b_shape) * 0.1
    dout = rng.standard_normal(s.out_shape)
    # copy=False: the draws are fresh float64 arrays, kept as they are when the layer's dtype is float64
    return CheckData(*(a.astype(dtype, copy=False) for a in (x, w, b, dout)))


def integer_data(spec: CheckSpec) -> CheckData:
    """The hardest point for kinks: integer-valued x in [−3, 3] and w in [−2, 2] with zero bias, so many
    pre-activations are exactly 0 (every one a ReLU kink); dout as in ``make_data``. Seeded by ``spec.seed``."""
    rng = np.random.default_rng(spec.seed)
    dtype = numpy_dtype(spec.dtype)
    s = spec.shape
    return CheckData(
        rng.integers(-3, 4, size=s.x_shape).astype(dtype),
        rng.integers(-2, 3, size=s.w_shape).astype(dtype),
        np.zeros(s.b_shape, dtype=dtype),
        make_data(spec).dout,
    )
