"""JAX layers: a function, typically with a hand-written backward through ``jax.custom_vjp``.

Call (``x, w, b`` arrays channels-last by default: ``x (N, H, W, C_in)``, ``w (kh, kw, C_in/groups, C_out)`` as
``lax.conv_general_dilated`` names ``NHWC``/``HWIO``)::

    function: name     name(x, w, b, stride, padding[, dilation=…, groups=…])

``stride`` and ``padding`` are plain Python values (mark them in ``nondiff_argnums`` of a ``custom_vjp``). The
gradients are the pullback of ``jax.vjp`` applied to ``dout``, exactly what ``jax.grad`` of a loss uses. Importing
this module turns on ``jax_enable_x64`` (before the user's module is imported), or float64 checks would silently
run in float32. The arrays go to the device with ``jax.device_put(…, may_alias=True)``: no copy on the CPU
when the buffer is aligned (JAX arrays are immutable, so the layer cannot modify them in place).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import jax
import numpy as np

from convcheck.spec import ConvShape, ImplRef
from convcheck.user.adapter import LoadedImpl
from convcheck.user.errors import ImplementationError
from convcheck.user.frameworks import describe_ref, framework_call
from convcheck.user.frameworks.common import fetch, keywords_for

jax.config.update("jax_enable_x64", True)

__all__ = ["load", "resolve_device"]


@dataclass(frozen=True)
class JaxCache:
    """The forward's output and the pullback ``jax.vjp`` returned with it."""

    out: Any
    pullback: Callable[[Any], tuple[Any, ...]]


def resolve_device(device: str | None) -> Any:
    """``device`` (None: JAX's default; ``cpu``, ``gpu``, ``cuda``, ``tpu``, optionally ``:N``) as a JAX device.

    Raises:
        ImplementationError: JAX has no such backend here, or not that many devices on it.
    """
    if device is None:
        return jax.devices()[0]
    platform, _, index = device.partition(":")
    try:
        devices = jax.devices(platform)
    except RuntimeError as exc:
        raise ImplementationError(
            f"device {device}: JAX has no {platform!r} backend here (its default is {jax.default_backend()}); "
            f"install a jaxlib for it, or use device: cpu ({str(exc).splitlines()[0]})"
        ) from exc
    number = int(index) if index else 0
    if number >= len(devices):
        raise ImplementationError(f"device {device}: JAX sees {len(devices)} {platform} device(s), numbered from 0")
    return devices[number]


class JaxLayer:
    """A JAX function as numpy ``forward(x, w, b, stride, padding)`` and ``backward(dout, cache)``."""

    def __init__(self, run: Callable[..., Any], device: Any) -> None:
        self.run = run  # not jitted here: a jitted layer is checked jitted, an eager one eagerly
        self.device = device

    def forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: object, padding: object) -> tuple[Any, Any]:
        """``(out, JaxCache)``; ``out`` a numpy array when the layer returned a JAX array, else what it returned."""
        inputs = tuple(jax.device_put(a, self.device, may_alias=True) for a in (x, w, b))
        out, pullback = jax.vjp(self.run, *inputs)
        if not isinstance(out, jax.Array):
            return out, None
        return np.asarray(out), JaxCache(out, pullback)

    def backward(self, dout: np.ndarray, cache: JaxCache) -> tuple[np.ndarray, ...]:
        """``(dx, dw, db)``: the pullback of ``dout`` (in the output's dtype, on its device)."""
        grad = jax.device_put(dout.astype(cache.out.dtype, copy=False), self.device)
        return tuple(np.asarray(g) for g in cache.pullback(grad))


def load(
    ref: ImplRef, module: ModuleType, origin: str, roots: tuple[Any, ...], shape: ConvShape, device: str | None
) -> LoadedImpl:
    """The JAX function ``ref`` names in ``module``, bound to ``shape``'s hyperparameters, as a ``LoadedImpl``.

    Raises:
        ImplementationError: the function is missing or not callable, its signature cannot take a hyperparameter
            the check needs, or the device does not exist here.
    """
    if ref.class_name is not None:
        raise ImplementationError("class: is for torch.nn.Module layers; a JAX layer is a function: use function:")
    assert ref.function is not None
    chosen = resolve_device(device)
    fn = fetch(module, ref.function, ref, origin)
    if not callable(fn):
        raise ImplementationError(f"{describe_ref(ref)} is a {type(fn).__name__}, not a function")
    call = framework_call(shape)
    keywords = keywords_for(getattr(fn, "fun", fn), call, describe_ref(ref))  # custom_vjp keeps the function as .fun

    def run(x: Any, w: Any, b: Any) -> Any:
        return fn(x, w, b, *call.positional, **keywords)

    layer = JaxLayer(run, chosen)
    named = replace(ref, forward=ref.function, backward=ref.function)
    return LoadedImpl(layer.forward, layer.backward, named, module, origin, roots)
