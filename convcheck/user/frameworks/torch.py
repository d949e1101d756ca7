"""PyTorch layers: a ``torch.autograd.Function``, a function whose graph has a custom backward, an ``nn.Module``.

Calls (``x, w, b`` tensors in the layout the check names, NCHW and ``(C_out, C_in/groups, kh, kw)`` by default)::

    function: a torch.autograd.Function    Name.apply(x, w, b, stride, padding[, dilation=…, groups=…])
    function: a plain function             name(x, w, b, stride, padding[, dilation=…, groups=…])
    class: an nn.Module subclass           Name(C_in, C_out, kernel_size[, stride=…, padding=…, dilation=…,
                                           groups=…, bias=True]) once, then called on x with its ``weight`` and
                                           ``bias`` parameters replaced by w and b (``torch.func.functional_call``)

The arrays become tensors with ``torch.from_numpy`` (the same memory on the CPU; ``.to(device)`` copies to a GPU)
with ``requires_grad``; the gradients are ``torch.autograd.grad(out, (x, w, b), grad_outputs=dout)``, exactly
what ``loss.backward()`` would accumulate (importing this module sets ``torch.set_num_threads(1)``, see below).
Nothing is cast: the output's dtype is the layer's, so a float32 check of a layer that returns float64 is still a
contract finding. torch itself sums a gradient whose shape is
broadcastable to its input's (and raises for any other shape) and casts it to the input's dtype, as in training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import numpy as np
import torch

from convcheck.spec import ConvShape, ImplRef
from convcheck.user.adapter import LoadedImpl
from convcheck.user.errors import ImplementationError
from convcheck.user.frameworks import FrameworkCall, describe_ref, framework_call, simplest
from convcheck.user.frameworks.common import fetch, keywords_for

__all__ = ["load", "resolve_device"]

# convcheck's parallelism is across perturbation groups (one engine thread per core, see convcheck.parallel, which
# holds numpy's BLAS to one thread for the same reason); torch's own intra-op pool on top of it oversubscribes the
# cores and made small checks 5-40× slower in measurements here. Process-wide, as torch's setting is.
torch.set_num_threads(1)

_Runner = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Any]


@dataclass(frozen=True)
class TorchCache:
    """The forward's output tensor and the leaf tensors it was computed from (the autograd graph between)."""

    out: torch.Tensor
    inputs: tuple[torch.Tensor, ...]


def resolve_device(device: str | None) -> torch.device:
    """``device`` (``cpu``, ``cuda``, ``cuda:N``; None is the CPU) as a torch device that exists here.

    Raises:
        ImplementationError: the device is not a torch device, or it is a GPU this machine does not have.
    """
    try:
        chosen = torch.device(device or "cpu")
    except RuntimeError as exc:
        raise ImplementationError(f"device {device!r} is not a torch device: {exc}") from exc
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            build = torch.__version__
            raise ImplementationError(
                f"device {device} needs CUDA, but torch.cuda.is_available() is False here (torch {build}); "
                "run on a machine with an NVIDIA GPU and a CUDA build of torch, or use device: cpu"
            )
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ImplementationError(
                f"device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0"
            )
    return chosen


class TorchLayer:
    """A torch layer as numpy ``forward(x, w, b, stride, padding)`` and ``backward(dout, cache)``."""

    def __init__(self, run: _Runner, device: torch.device) -> None:
        self.run = run
        self.device = device

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device).requires_grad_(True)

    def forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: object, padding: object) -> tuple[Any, Any]:
        """``(out, TorchCache)``; ``out`` a numpy array when the layer returned a tensor, else what it returned
        (the adapter reports it). ``stride`` and ``padding`` were bound when the layer was loaded."""
        inputs = tuple(self._tensor(a) for a in (x, w, b))
        out = self.run(*inputs)
        if not isinstance(out, torch.Tensor):
            return out, None
        return out.detach().cpu().numpy(), TorchCache(out, inputs)

    def backward(self, dout: np.ndarray, cache: TorchCache) -> tuple[np.ndarray, ...]:
        """``(dx, dw, db)`` from torch's autograd for ``grad_outputs = dout`` (in the output's dtype).

        The graph is kept (``retain_graph``) so that a second backward on the same cache works, as the contract
        asks; a gradient torch leaves undefined (an input the output does not depend on) is zero, as
        ``materialize_grads`` defines it.
        """
        if not cache.out.requires_grad:
            raise RuntimeError(
                "the forward's output does not require grad: it left autograd (.detach(), .numpy(), torch.no_grad() "
                "or a new tensor), so training would get no gradients through it"
            )
        grad = torch.from_numpy(dout).to(device=self.device, dtype=cache.out.dtype)
        grads = torch.autograd.grad(
            cache.out, cache.inputs, grad_outputs=grad, retain_graph=True, allow_unused=True, materialize_grads=True
        )
        return tuple(g.detach().cpu().numpy() for g in grads)


def load(
    ref: ImplRef, module: ModuleType, origin: str, roots: tuple[Any, ...], shape: ConvShape, device: str | None
) -> LoadedImpl:
    """The torch layer ``ref`` names in ``module``, bound to ``shape``'s hyperparameters, as a ``LoadedImpl``.

    Raises:
        ImplementationError: the object is missing or of the wrong kind, its signature cannot take a
            hyperparameter the check needs, or the device does not exist here.
    """
    chosen = resolve_device(device)
    call = framework_call(shape)
    if ref.class_name is not None:
        run = _module_runner(fetch(module, ref.class_name, ref, origin), shape, call, chosen, ref)
        name = ref.class_name
    else:
        assert ref.function is not None  # the config allows exactly one of function and class
        run = _function_runner(fetch(module, ref.function, ref, origin), call, ref)
        name = ref.function
    layer = TorchLayer(run, chosen)
    named = replace(ref, forward=name, backward=name)
    return LoadedImpl(layer.forward, layer.backward, named, module, origin, roots)


def _function_runner(obj: object, call: FrameworkCall, ref: ImplRef) -> _Runner:
    if isinstance(obj, type) and issubclass(obj, torch.autograd.Function):
        target: Callable[..., Any] = obj.apply
        signature_of: Callable[..., Any] = obj.forward
    elif isinstance(obj, type) and issubclass(obj, torch.nn.Module):
        raise ImplementationError(
            f"{describe_ref(ref)} is an nn.Module: name it with class: {ref.function} (not function:)"
        )
    elif callable(obj):
        target = signature_of = obj
    else:
        raise ImplementationError(f"{describe_ref(ref)} is a {type(obj).__name__}, not a function")
    keywords = keywords_for(signature_of, call, describe_ref(ref))

    def run(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> Any:
        return target(x, w, b, *call.positional, **keywords)

    return run


def _module_runner(obj: object, shape: ConvShape, call: FrameworkCall, device: torch.device, ref: ImplRef) -> _Runner:
    if not (isinstance(obj, type) and issubclass(obj, torch.nn.Module)):
        raise ImplementationError(f"{describe_ref(ref)} is not a torch.nn.Module subclass (class: names one)")
    options = {"stride": call.stride, "padding": call.padding, **call.keywords, "bias": shape.bias}
    defaults = {"stride": 1, "padding": 0, **call.defaults, "bias": True}
    keywords = keywords_for(obj.__init__, FrameworkCall(1, 0, options, defaults), describe_ref(ref))
    kernel_size = simplest(shape.kernel)
    try:
        instance = obj(shape.in_depth, shape.out_depth, kernel_size, **keywords).to(device)
    except Exception as exc:
        raise ImplementationError(
            f"{describe_ref(ref)}({shape.in_depth}, {shape.out_depth}, {kernel_size}, "
            f"{', '.join(f'{k}={v!r}' for k, v in keywords.items())}) raised {type(exc).__name__}: {exc}"
        ) from exc
    names = dict(instance.named_parameters())
    absent = [name for name in ("weight", "bias")[: 2 if shape.bias else 1] if name not in names]
    if absent:
        raise ImplementationError(
            f"{describe_ref(ref)} has no parameter named {' or '.join(absent)} (its parameters: "
            f"{', '.join(names) or 'none'}); convcheck sets the module's weight and bias"
        )

    def run(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> Any:
        return torch.func.functional_call(instance, {"weight": w, "bias": b}, (x,))

    return run
