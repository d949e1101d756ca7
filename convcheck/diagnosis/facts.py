"""Whole-tensor facts: only db is wrong while dx and dw are right; a gradient is exactly zero everywhere."""

from __future__ import annotations

import math

import numpy as np

from convcheck.diagnosis.evidence import Evidence
from convcheck.diagnosis.window import nd_point
from convcheck.diagnosis.wording import names, plural
from convcheck.results import Hint


def rule_only_bias(ev: Evidence) -> Hint | None:
    """Only db is wrong while dx and dw are right: dZ is right, so the reduction ``db = Σ dZ`` is not.

    With the point known, a partial sum db equals exactly (one sample only) is named, and explains db. A db
    that is exactly zero is left to ``rule_all_zero`` unless such a partial sum explains it. Any geometry with a
    bias (``∏O`` output positions per sample; ``OH·OW`` in 2-D).
    """
    db = ev.failing("bias")
    dx, dw = ev.get("input"), ev.get("weights")
    if db is None or dx is None or dw is None or dx.failed or dw.failed or not ev.forward_ok:
        return None
    s = ev.shape
    positions = s.batch * math.prod(s.spatial_out)
    point = ev.point if s.is_basic else nd_point(ev)
    if point is not None and s.batch > 1:
        per_sample = point.dz.reshape(s.batch, -1, s.out_depth).sum(axis=1)
        for n in range(s.batch):
            if db.equals(per_sample[n]):
                return Hint(
                    "bias reduction",
                    f"dx and dw are right (so dZ is), and db equals the sum over sample {n} alone: db must sum dZ "
                    f"over all N·∏O = {positions} output positions",
                    ("bias",),
                )
    if not np.any(db.analytic[db.checked]):
        return None
    return Hint(
        "bias reduction",
        f"dx and dw are right (so dZ is) but db is not: db must be the sum of dZ over all N·∏O = {positions} output "
        "positions (every position adds the bias)",
    )


def rule_all_zero(ev: Evidence) -> Hint | None:
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
    return Hint(
        label,
        f"analytic {names(zero)} {plural(zero, 'is', 'are')} exactly 0 at every entry, numeric not: the "
        f"gradient is never computed or never written into the returned array{note}",
        tuple(t.name for t in zero),
    )
