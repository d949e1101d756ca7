"""Values a config may give that are valid but make a check meaningless: warnings, not errors.

A tolerance so large that a wrong gradient passes is the one case so far. An entry passes when
``|analytic − numeric| ≤ atol + rtol·|numeric| + noise``, so an entry off by a factor of 2 (``analytic = 2g``
for ``numeric = g``) passes whenever ``|g| ≤ atol + rtol·|g|``:

- ``rtol ≥ 1`` lets *every* entry be off by a factor of 2 and pass;
- ``atol`` is measured against the layer's gradient entries, whose size comes from convcheck's random data
  (``data.make_data``: x and dout standard normal, He-initialised weights with variance ``2/(k²·C_in)``). An
  input-gradient entry sums ``C_out`` products ``w·dout·act'`` per filter position covering it, so its mean
  square follows from the shape (``input_gradient_scale``). When ``atol`` exceeds its root, most input-gradient
  entries could be off by a factor of 2 and still pass. (Weight and bias gradients sum over the batch and the
  output positions and are larger; the input gradient is the one a large ``atol`` blinds first.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from convcheck.config.errors import ConfigWarning
from convcheck.config.tree import Doc
from convcheck.config.values import Setting
from convcheck.spec import Activation, CheckSpec

__all__ = ["input_gradient_scale", "tolerance_warnings"]

# E[act'(z)²] at convcheck's random pre-activations: z sums k²·C_in products x·w of variance 2/(k²·C_in), so
# z ~ N(0, 2) away from the padding (tanh and the logistic by numerical integration).
_ACTIVATION_POWER = {
    Activation.NONE: 1.0,
    Activation.RELU: 0.5,
    Activation.LEAKY_RELU: 0.5,
    Activation.TANH: 0.35,
    Activation.SIGMOID: 0.037,
}


def input_gradient_scale(spec: CheckSpec) -> float:
    """The root mean square of an input-gradient entry of ``spec``'s layer with convcheck's random data,
    from the shape alone (module docstring).

    ``E[dx²]`` averaged over the input is ``T/∏in · (C_out/g) · 2/(∏k·C_in/g) · E[act'²]``, where ``T`` counts the
    (output position, filter tap) pairs that land on the input rather than on the padding: a product of one
    count per axis, so this costs ``O(Σ out)``.
    """
    shape = spec.shape
    taps = math.prod(
        map(_taps, shape.spatial_in, shape.spatial_out, shape.kernel, shape.strides, shape.pads, shape.dilations)
    )
    power = _ACTIVATION_POWER[spec.activation]
    per_group = shape.out_depth // shape.groups  # the outputs one input channel feeds
    mean_square = taps / math.prod(shape.spatial_in) * per_group * 2 * power / shape.fan_in
    return math.sqrt(mean_square)


def _taps(size: int, outputs: int, k: int, s: int, pads: tuple[int, int], d: int) -> int:
    """Along one axis: the (output position, filter tap) pairs whose input index ``o·s − before + j·d`` is inside
    ``[0, size)``."""
    total = 0
    for o in range(outputs):  # taps j with before − o·s ≤ j·d < size + before − o·s, within [0, k)
        start = o * s - pads[0]
        first, end = max(0, -(start // d)), min(k, -((start - size) // d))
        total += max(0, end - first)
    return total


def tolerance_warnings(settings: dict[str, Setting], specs: Sequence[CheckSpec], doc: Doc) -> list[ConfigWarning]:
    """Warnings for the ``rtol`` and ``atol`` values of one check (``settings``) that would make its expanded
    checks ``specs`` unable to fail a gradient off by a factor of 2; one per value, at the value."""
    warnings = []
    for key in ("rtol", "atol"):
        setting = settings.get(key)
        if setting is None:
            continue
        for index, (value, node) in enumerate(zip(setting.values, setting.nodes, strict=True)):
            affected = [spec for spec in specs if getattr(spec, key) == value]
            message = _meaningless(key, float(value), affected)  # type: ignore[arg-type]  # a validated number
            if message is not None:
                warnings.append(ConfigWarning(doc.file, node.line, node.column, setting.field_of(index), message))
    return warnings


def _meaningless(key: str, value: float, specs: Sequence[CheckSpec]) -> str | None:
    if not specs:
        return None
    if key == "rtol":
        if value < 1:
            return None
        return (
            f"rtol {value:g} is at least 1: a gradient entry off by a factor of 2 passes "
            "(|2g − g| = |g| ≤ rtol·|g|), so these checks cannot fail a wrong backward; leave rtol out for the "
            "dtype's default"
        )
    scale = min(input_gradient_scale(spec) for spec in specs)
    if value < scale:
        return None
    return (
        f"atol {value:g} is larger than a typical input-gradient entry of this layer with convcheck's random "
        f"data (about {scale:.2g}): most entries could be off by a factor of 2 and still pass; leave atol out "
        "for the dtype's default"
    )
