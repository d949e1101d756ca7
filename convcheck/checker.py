"""Run one check: make data, run the layer, compare its gradients with finite differences. (Being written.)"""

from __future__ import annotations

from convcheck.protocol import ConvLayer
from convcheck.results import CheckResult
from convcheck.spec import CheckSpec

DEFAULT_TIMEOUT = 300.0  # seconds per check, when the config sets none


def run_check(spec: CheckSpec, layer: ConvLayer | None = None) -> CheckResult:
    """Check one layer. ``layer`` overrides ``spec.impl`` (None: load ``spec.impl``, or the built-in layer).

    Never raises for problems in the user's code or in the layer's numbers: those are a result with status
    ``fail`` or ``error``.
    """
    raise NotImplementedError
