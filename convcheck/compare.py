"""Judge analytic gradients against finite-difference estimates: errors, worst entries, verdict."""

from __future__ import annotations

import numpy as np

from convcheck.numeric import Estimate
from convcheck.results import Entry, ForwardResult, TensorResult, Tolerance
from convcheck.tolerance import SAFETY

WORST_COUNT = 5
# Relative errors divide by max(|analytic|, |numeric|, floor); the floor (a small fraction of the tensor's
# typical entry) keeps entries that are zero up to rounding from reporting huge relative errors.
RELATIVE_FLOOR = 1e-3


def judge(est: Estimate, tol: Tolerance) -> TensorResult:
    """Compare one tensor's analytic gradient with its estimate.

    An entry passes when its analytic value lies within ``allowed`` of the interval ``[lo, hi]`` the numeric
    derivative must lie in (a point, ``lo = hi = central``, unless a kink was straddled), where
    ``allowed = atol + rtol·|numeric| + SAFETY·noise + truncation`` (see ``convcheck.tolerance``).
    """
    measured = est.measured
    analytic = est.analytic
    central = est.central
    allowed = np.full(central.shape, np.nan)
    allowed[measured] = est.allowed(measured, tol.rtol, tol.atol)
    # Distance from the analytic value to the interval (0 inside it).
    below = est.lo - analytic
    above = analytic - est.hi
    abs_error = np.where(measured, np.maximum(np.maximum(below, above), 0.0), np.nan)
    nonfinite = measured & ~np.isfinite(analytic)
    abs_error[nonfinite] = np.inf
    typical = float(np.sqrt(np.mean(central[measured] ** 2))) if measured.any() else 0.0
    floor = max(RELATIVE_FLOOR * typical, np.finfo(np.float64).tiny)
    with np.errstate(invalid="ignore"):
        scale = np.maximum(np.maximum(np.abs(analytic), np.abs(central)), floor)
        rel_error = abs_error / scale
        over = measured & ~(abs_error <= allowed)
        badness = np.where(measured, abs_error / allowed, -np.inf)
    badness[nonfinite] = np.inf
    kinks = int(np.count_nonzero(measured & (est.crossed > 0)))
    order = np.argsort(-badness, kind="stable")[: min(WORST_COUNT, int(measured.sum()))]
    worst = tuple(
        Entry(
            index=tuple(int(i) for i in np.unravel_index(int(flat), est.shape)),
            analytic=float(analytic[flat]),
            numeric=float(central[flat]),
            abs_error=float(abs_error[flat]),
            rel_error=float(rel_error[flat]),
            allowed=float(allowed[flat]),
            at_kink=bool(est.crossed[flat] > 0),
        )
        for flat in order
    )
    checked = int(measured.sum())
    return TensorResult(
        name=est.name,
        shape=tuple(est.shape),
        checked=checked if est.projections == 0 else 0,
        total=int(est.measured.size) if est.projections == 0 else 0,
        kinks=kinks,
        over_tolerance=int(over.sum()),
        max_abs_error=float(np.max(abs_error[measured])) if checked else 0.0,
        max_rel_error=float(np.max(rel_error[measured])) if checked else 0.0,
        worst=worst,
        projections=est.projections,
        analytic=analytic.reshape(est.shape),
        numeric=central.reshape(est.shape),
        allowed=allowed.reshape(est.shape),
        error=abs_error.reshape(est.shape),
        kink=(est.crossed > 0).reshape(est.shape),
    )


def judge_forward(out: np.ndarray, expected: np.ndarray, sigma: np.ndarray, tol: Tolerance) -> ForwardResult:
    """The implementation's ``out`` against the reference, each element allowed ``atol + SAFETY·σ``.

    ``σ`` is the rounding model of ``convcheck.tolerance`` (``u·(√n·A + |out|)`` per element), so two correct
    implementations summing in different orders agree, and a wrong window, kernel or activation does not.
    """
    got = np.asarray(out, dtype=np.float64)
    error = np.abs(got - expected)
    allowed = tol.atol + SAFETY * sigma
    error = np.where(np.isfinite(error), error, np.inf)
    badness = error / allowed
    flat = int(np.argmax(badness))
    index = tuple(int(i) for i in np.unravel_index(flat, got.shape))
    return ForwardResult(
        max_abs_error=float(error.max()),
        allowed=float(allowed.reshape(-1)[flat]),
        ok=bool(np.all(error <= allowed)),
        worst_index=index,
        got=float(got[index]),
        expected=float(expected[index]),
        output=got,
        reference=expected,
    )
