"""convcheck: is my convolution layer's backward pass right?

The Python API (the ``convcheck`` command is a thin layer over it)::

    import convcheck

    result = convcheck.check(forward, backward, stride=1, padding=1, filter_size=3, in_depth=3, out_depth=4)
    assert result.passed, convcheck.explain(result)

    spec = convcheck.CheckSpec(name="seed", shape=convcheck.ConvShape(8, 32, 48, 16, 32, 3, 1, 1))
    result = convcheck.check_layer(spec)           # the built-in matrix layer, every gradient entry

Names are resolved lazily so that ``import convcheck`` (and ``convcheck --help``) does not import numpy.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "CheckSpec": "convcheck.spec",
    "ConvShape": "convcheck.spec",
    "ImplRef": "convcheck.spec",
    "Activation": "convcheck.spec",
    "Method": "convcheck.spec",
    "Layout": "convcheck.spec",
    "DType": "convcheck.spec",
    "Signature": "convcheck.spec",
    "CheckResult": "convcheck.results",
    "TensorResult": "convcheck.results",
    "Status": "convcheck.results",
    "CheckData": "convcheck.data",
    "run_check": "convcheck.checker",
    "make_data": "convcheck.data",
    "integer_data": "convcheck.data",
    "check_layer": "convcheck.api",
    "check": "convcheck.api",
    "assert_gradients_ok": "convcheck.api",
    "explain": "convcheck.api",
    "load_configs": "convcheck.config",
    "MatrixConvLayer": "convcheck.layer",
    "ExitCode": "convcheck.exitcodes",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'convcheck' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
