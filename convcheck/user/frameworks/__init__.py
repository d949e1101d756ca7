"""Layers written in a deep-learning framework: a ``torch.autograd.Function``, an ``nn.Module``, a JAX function.

A framework layer becomes an ordinary ``LoadedImpl`` (numpy ``forward``/``backward`` in the user's layout), so the
``UserLayer`` adapter, the contract, the finite differences and the verdicts treat it exactly like a numpy layer:

* ``forward(x, w, b, stride, padding, dilation=1, groups=1)`` converts the arrays to the framework's
  (``torch.from_numpy`` or ``jax.device_put(…, may_alias=True)``: no copy on the CPU; a copy to a GPU), in the
  check's dtype, on the reference's device, and runs the user's layer with autograd recording, the
  hyperparameters passed as torch and JAX name them (``framework_call``);
* ``backward(dout, cache)`` asks the framework's own backward for the gradients of ``Σ out ⊙ dout``
  (``torch.autograd.grad(out, (x, w, b), grad_outputs=dout)``, ``jax.vjp``'s pullback), which is what training
  uses, and hands them back as numpy arrays (their dtype and shape as the framework returned them).

The framework modules (``convcheck.user.frameworks.torch``, ``.jax``) are imported only in the process that runs
the layer (``convcheck.isolation``: the check's own child, forked from a parent that never imports a framework);
this module imports neither, so the core install never needs either package and checks of numpy layers never
pay for importing one.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

from convcheck.spec import Framework, ImplRef

__all__ = [
    "FRAMEWORK_PACKAGES",
    "FrameworkCall",
    "describe_ref",
    "framework_call",
    "install_hint",
    "load_framework",
    "missing",
]

#: The packages each framework needs (import names), and the extra that installs them.
FRAMEWORK_PACKAGES: dict[Framework, tuple[str, ...]] = {Framework.TORCH: ("torch",), Framework.JAX: ("jax", "jaxlib")}


def install_hint(framework: Framework) -> str:
    """The command that installs a framework for convcheck: ``pip install 'convcheck[torch]'``."""
    return f"pip install 'convcheck[{framework.value}]'"


def missing(framework: Framework) -> tuple[str, ...]:
    """The framework's packages this Python cannot import (found without importing them: cheap)."""
    return tuple(name for name in FRAMEWORK_PACKAGES[framework] if importlib.util.find_spec(name) is None)


@dataclass(frozen=True)
class FrameworkCall:
    """How one call's hyperparameters reach a framework layer, named as torch and JAX name them.

    ``positional`` follow ``(x, w, b)`` in every call: ``(stride, padding)``, each in its simplest form (an int
    when equal on every axis and side, else a tuple per axis, and padding that differs before and after as a
    tuple of ``(before, after)`` pairs: ``convcheck.user.arguments.call_values``, as a numpy layer gets them).
    ``keywords`` (``dilation``, ``groups``) go to a function (or a module's constructor) whose signature accepts
    them; one with a value other than its ``defaults`` entry is needed, and a layer that cannot take it is an
    error, never silently ignored.
    """

    stride: object
    padding: object
    keywords: dict[str, object]
    defaults: dict[str, object]

    @property
    def positional(self) -> tuple[object, object]:
        return (self.stride, self.padding)


def framework_call(stride: object, padding: object, dilation: object = 1, groups: object = 1) -> FrameworkCall:
    """The one place a call's geometry becomes framework arguments (``stride``, ``padding``, ``dilation``,
    ``groups``); the values are those the adapter's forward received, already in their simplest form."""
    return FrameworkCall(
        stride=stride,
        padding=padding,
        keywords={"dilation": dilation, "groups": groups},
        defaults={"dilation": 1, "groups": 1},
    )


def load_framework(framework: Framework) -> ModuleType:
    """The adapter module of ``framework`` (imports the framework itself: seconds for torch or JAX)."""
    return importlib.import_module(f"convcheck.user.frameworks.{framework.value}")


def describe_ref(ref: ImplRef) -> str:
    """``layers.py:ConvFn`` — the object a framework ref names, for messages."""
    return f"{ref.module}:{ref.function or ref.class_name}"
