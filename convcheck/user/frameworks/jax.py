"""JAX layers: a function, typically with a hand-written backward through ``jax.custom_vjp``.

Call (``x, w, b`` arrays channels-last by default: ``x (N, H, W, C_in)``, ``w (kh, kw, C_in/groups, C_out)`` as
``lax.conv_general_dilated`` names ``NHWC``/``HWIO``)::

    function: name     name(x, w, b, stride, padding[, dilation=…, groups=…])

``stride``, ``padding``, ``dilation`` and ``groups`` are plain Python values (ints and tuples: mark them in
``nondiff_argnums`` of a ``custom_vjp``); ``b`` is None for a layer without a bias. The
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

from convcheck.spec import ImplRef
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
    """A JAX function as numpy ``forward(x, w, b, stride, padding, dilation=1, groups=1)`` and
    ``backward(dout, cache)``; ``b`` is None for a layer without a bias (the function gets None)."""

    def __init__(self, fn: Callable[..., Any], device: Any, ref: ImplRef) -> None:
        self.fn = fn  # not jitted here: a jitted layer is checked jitted, an eager one eagerly
        self.device = device
        self.ref = ref
        self.keywords: dict[tuple[object, ...], dict[str, object]] = {}  # per call geometry (one in a check)

    def forward(
        self,
        x: np.ndarray,
        w: np.ndarray,
        b: np.ndarray | None,
        stride: object,
        padding: object,
        dilation: object = 1,
        groups: object = 1,
    ) -> tuple[Any, Any]:
        """``(out, JaxCache)``; ``out`` a numpy array when the layer returned a JAX array, else what it returned."""
        call = framework_call(stride, padding, dilation, groups)
        key = (stride, padding, dilation, groups)
        if key not in self.keywords:  # custom_vjp keeps the function as .fun
            self.keywords[key] = keywords_for(getattr(self.fn, "fun", self.fn), call, describe_ref(self.ref))
        keywords = self.keywords[key]
        inputs = tuple(jax.device_put(a, self.device, may_alias=True) for a in (x, w, b) if a is not None)

        def run(*arrays: Any) -> Any:
            bias = arrays[2] if len(arrays) == 3 else None
            return self.fn(arrays[0], arrays[1], bias, *call.positional, **keywords)

        out, pullback = jax.vjp(run, *inputs)
        if not isinstance(out, jax.Array):
            return out, None
        return np.asarray(out), JaxCache(out, pullback)

    def backward(self, dout: np.ndarray, cache: JaxCache) -> tuple[np.ndarray | None, ...]:
        """``(dx, dw, db)``: the pullback of ``dout`` (in the output's dtype, on its device); db is None for a
        layer without a bias."""
        grad = jax.device_put(dout.astype(cache.out.dtype, copy=False), self.device)
        arrays = [np.asarray(g) for g in cache.pullback(grad)]
        return (arrays[0], arrays[1], arrays[2] if len(arrays) == 3 else None)


def load(ref: ImplRef, module: ModuleType, origin: str, roots: tuple[Any, ...]) -> LoadedImpl:
    """The JAX function ``ref`` names in ``module``, on ``ref.device``, as a ``LoadedImpl`` (its hyperparameters
    come with each call).

    Raises:
        ImplementationError: the function is missing or not callable, or the device does not exist here. A
            signature that cannot take a hyperparameter the check needs raises it at the first call.
    """
    if ref.class_name is not None:
        raise ImplementationError("class: is for torch.nn.Module layers; a JAX layer is a function: use function:")
    assert ref.function is not None
    chosen = resolve_device(ref.device)
    fn = fetch(module, ref.function, ref, origin)
    if not callable(fn):
        raise ImplementationError(f"{describe_ref(ref)} is a {type(fn).__name__}, not a function")
    layer = JaxLayer(fn, chosen, ref)
    named = replace(ref, forward=ref.function, backward=ref.function)
    return LoadedImpl(layer.forward, layer.backward, named, module, origin, roots)
