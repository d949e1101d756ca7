"""Projections (``directional``) that crossed an activation kink, measured again with shorter steps.

Why, and when shortening stops: ``shortened``. The entry-wise methods re-measure crossed entries once with a step
``RETRY_SHRINK`` times smaller (``Engine``); a projection, which steps every entry of a tensor at once, may take
several such steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from convcheck.numeric.groups import Group
from convcheck.numeric.reduce import Measurement
from convcheck.tolerance import SAFETY

RETRY_SHRINK = 16.0  # step reduction when re-measuring entries that straddled a kink
#: Most times a crossed projection's step is shortened (by ``RETRY_SHRINK`` each: down to ε/65536); the rounding
#: noise grows by as much each time, so ``shortened`` usually stops earlier.
PROJECTION_RETRIES = 4


@dataclass(frozen=True)
class Projection:
    """One direction's measurement and the step ``eps`` it was taken with (shorter than the engine's when the
    engine's crossed a kink: ``shortened``)."""

    measurement: Measurement
    eps: float


def shortened(
    measure: Callable[[Group, float], Measurement], group: Group, first: Measurement, eps: float
) -> Projection:
    """A projection along ``group`` measured at ``eps`` (``first``), re-measured by ``measure(group, step)`` at
    steps ``RETRY_SHRINK`` times shorter each while an output crosses a kink: the measurement with the narrowest
    band it is judged by.

    Why. A projection steps every entry of the tensor at once, so on a ReLU layer some pre-activation almost
    always crosses 0 (every weights projection of the layer of configs/textbook.yaml, at seeds 0-2), and the
    projection is then judged against the interval its crossed outputs' one-sided differences span, there
    10⁴–10⁵ times its rounding noise: a weights gradient 1% off passed inside it at seed 2. The pre-activations
    are linear along one tensor's direction, so an output that crosses within a step ``ε/16`` crosses within
    ``ε`` too: a shorter step crosses at fewer outputs (about 16× fewer) and none once it is shorter than the
    nearest kink's distance, and its central difference is then a plain derivative, judged with no interval.

    The band an analytic value may fall in is ``[lo, hi]`` widened by ``SAFETY·noise`` on each side; the noise
    grows like ``1/step``. Shortening stops when no output crosses, when the shorter step's band (noise alone)
    would be no narrower than the current one (rounding dominates), when a shorter step did not narrow the band
    (a kink at the point itself, as integer data puts many: its one-sided differences do not depend on the step,
    and no step leaves it), or after ``PROJECTION_RETRIES`` shorter steps. Two passes per shorter step, and none
    for a projection that crossed nothing (its measurement is ``first``, unchanged).
    """
    current = Projection(first, eps)
    for _ in range(PROJECTION_RETRIES):
        noise = float(current.measurement.noise[0])
        if current.measurement.crossed[0] == 0 or 2.0 * SAFETY * noise * RETRY_SHRINK >= _band(current.measurement):
            break
        step = current.eps / RETRY_SHRINK
        shorter = Projection(measure(group, step), step)
        if _band(shorter.measurement) >= _band(current.measurement):
            break
        current = shorter
    return current


def _band(m: Measurement) -> float:
    """The width of the band a projection's analytic value may fall in, by its numeric side alone."""
    return float(m.hi[0] - m.lo[0]) + 2.0 * SAFETY * float(m.noise[0])
