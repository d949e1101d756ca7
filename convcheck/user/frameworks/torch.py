"""PyTorch layers: a ``torch.autograd.Function``, a function whose graph has a custom backward, an ``nn.Module``.

Calls (``x, w, b`` tensors in the layout the check names, NCHW and ``(C_out, C_in/groups, kh, kw)`` by default)::

    function: a torch.autograd.Function    Name.apply(x, w, b, stride, padding[, dilation=…, groups=…])
    function: a plain function             name(x, w, b, stride, padding[, dilation=…, groups=…])
    class: an nn.Module subclass           Name(C_in, C_out, kernel_size[, stride=…, padding=…, dilation=…,
                                           groups=…, bias=…]) once (kernel_size a tuple, one entry per axis),
                                           then called on x with its ``weight`` and ``bias`` parameters replaced
                                           by w and b (``torch.func.functional_call``)

A layer without a bias (``bias: false``) gets ``b = None`` (a module: ``bias=False``) and its db is None.

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
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np
import torch

from convcheck.spec import ImplRef
from convcheck.user.adapter import LoadedImpl
from convcheck.user.errors import ImplementationError
from convcheck.user.frameworks import FrameworkCall, describe_ref, framework_call
from convcheck.user.frameworks.common import fetch, keywords_for

__all__ = ["load", "resolve_device"]

# One intra-op thread, process-wide (torch's setting is): this process answers one call at a time, and torch's
# OpenMP pool, which keeps spinning between the many small calls of a check, made checks 5-40× slower in
# measurements here (and more CPU-hungry beside other checks, ``--jobs``).
torch.set_num_threads(1)

_Runner = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], Any]
_Shapes = tuple[tuple[int, ...], tuple[int, ...], bool]  # x's, w's, and whether there is a bias


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
    """A torch layer as numpy ``forward(x, w, b, stride, padding, dilation=1, groups=1)`` and
    ``backward(dout, cache)``; ``b`` is None for a layer without a bias (the user's layer gets None)."""

    def __init__(self, runner: Callable[[FrameworkCall, _Shapes], _Runner], device: torch.device) -> None:
        self.runner = runner
        self.device = device
        self.runs: dict[tuple[object, ...], _Runner] = {}  # per call geometry (one in a check)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device).requires_grad_(True)

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
        """``(out, TorchCache)``; ``out`` a numpy array when the layer returned a tensor, else what it returned
        (the adapter reports it)."""
        shapes = (x.shape, w.shape, b is not None)
        key = (stride, padding, dilation, groups, *shapes)
        if key not in self.runs:
            self.runs[key] = self.runner(framework_call(stride, padding, dilation, groups), shapes)
        inputs = tuple(self._tensor(a) for a in (x, w, b) if a is not None)
        out = self.runs[key](inputs[0], inputs[1], inputs[2] if b is not None else None)
        if not isinstance(out, torch.Tensor):
            return out, None
        return out.detach().cpu().numpy(), TorchCache(out, inputs)

    def backward(self, dout: np.ndarray, cache: TorchCache) -> tuple[np.ndarray | None, ...]:
        """``(dx, dw, db)`` from torch's autograd for ``grad_outputs = dout`` (in the output's dtype); db is None
        for a layer without a bias.

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
        arrays = [g.detach().cpu().numpy() for g in grads]
        return (arrays[0], arrays[1], arrays[2] if len(arrays) == 3 else None)


def load(ref: ImplRef, module: ModuleType, origin: str, roots: tuple[Any, ...]) -> LoadedImpl:
    """The torch layer ``ref`` names in ``module``, on ``ref.device``, as a ``LoadedImpl``.

    Its hyperparameters come with each call; an ``nn.Module`` is constructed at the first call (from the
    arrays' shapes: torch's NCHW and ``(C_out, C_in/groups, *k)``).

    Raises:
        ImplementationError: the object is missing or of the wrong kind, or the device does not exist here. A
            signature that cannot take a hyperparameter the check needs raises it at the first call.
    """
    chosen = resolve_device(ref.device)
    if ref.class_name is not None:
        obj = fetch(module, ref.class_name, ref, origin)
        if not (isinstance(obj, type) and issubclass(obj, torch.nn.Module)):
            raise ImplementationError(f"{describe_ref(ref)} is not a torch.nn.Module subclass (class: names one)")
        layer = TorchLayer(partial(_module_runner, obj, chosen, ref), chosen)
        name = ref.class_name
    else:
        assert ref.function is not None  # the config allows exactly one of function and class
        layer = TorchLayer(_function_runner(fetch(module, ref.function, ref, origin), ref), chosen)
        name = ref.function
    named = replace(ref, forward=name, backward=name)
    return LoadedImpl(layer.forward, layer.backward, named, module, origin, roots)


def _function_runner(obj: object, ref: ImplRef) -> Callable[[FrameworkCall, _Shapes], _Runner]:
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

    def runner(call: FrameworkCall, shapes: _Shapes) -> _Runner:
        keywords = keywords_for(signature_of, call, describe_ref(ref))

        def run(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> Any:
            return target(x, w, b, *call.positional, **keywords)

        return run

    return runner


def _module_runner(
    cls: type[torch.nn.Module], device: torch.device, ref: ImplRef, call: FrameworkCall, shapes: _Shapes
) -> _Runner:
    """The module constructed like ``torch.nn.Conv2d`` for a call's geometry (``kernel_size`` a tuple: it tells
    the module how many axes it has), called on x with its ``weight`` and ``bias`` replaced by w and b
    (``torch.func.functional_call``)."""
    x_shape, w_shape, bias = shapes
    options = {"stride": call.stride, "padding": call.padding, **call.keywords, "bias": bias}
    defaults = {"stride": 1, "padding": 0, **call.defaults, "bias": True}
    keywords = keywords_for(cls.__init__, FrameworkCall(1, 0, options, defaults), describe_ref(ref))
    arguments = (x_shape[1], w_shape[0], tuple(w_shape[2:]))
    try:
        instance = cls(*arguments, **keywords).to(device)
    except Exception as exc:
        shown = ", ".join([*map(repr, arguments), *(f"{k}={v!r}" for k, v in keywords.items())])
        raise ImplementationError(f"{describe_ref(ref)}({shown}) raised {type(exc).__name__}: {exc}") from exc
    names = dict(instance.named_parameters())
    absent = [name for name in ("weight", "bias")[: 2 if bias else 1] if name not in names]
    if absent:
        raise ImplementationError(
            f"{describe_ref(ref)} has no parameter named {' or '.join(absent)} (its parameters: "
            f"{', '.join(names) or 'none'}); convcheck sets the module's weight and bias"
        )

    def run(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> Any:
        parameters = {"weight": w, "bias": b} if b is not None else {"weight": w}
        return torch.func.functional_call(instance, parameters, (x,))

    return run
