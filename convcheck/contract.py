"""The layer contract: what a forward and a backward must never do, whatever their numbers.

Gradient checking compares numbers; these checks catch the faults that make those numbers meaningless or that
bite only in training: a wrong output or gradient shape or dtype, NaN/Inf, arguments modified in place, and
caches that do not survive being used. ``exercise`` runs

1. ``forward(x, w, b)`` once;
2. ``backward(dout, cache)`` twice on the same cache: the second call must return the first's gradients (a
   backward that overwrites its cache in place, or accumulates into gradient buffers that persist across
   calls, returns something else the second time);
3. ``forward`` on different inputs, then ``backward`` on the *first* cache again: the gradients must not
   change (an implementation that keeps its state in a global or a reused buffer, not in the cache it
   returns, only remembers the last forward; the finite-difference engine calls forward hundreds of times).

Every call gets copies, and the copies are compared with the originals afterwards. Problems are reported as
values (``ContractOutcome.problems``), one sentence each, so a check can list them all next to its gradients.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from convcheck.implementations import (
    ContractError,
    UserCodeError,
    UserLayer,
    layer_dims,
    named_dims,
    shape_problem,
)
from convcheck.protocol import ConvLayer
from convcheck.spec import Layout

__all__ = ["ContractOutcome", "exercise"]

_REPEAT_ULPS = 16  # a repeated backward may differ by this many ulps of the gradient's scale (summation order)


@dataclass(frozen=True)
class ContractOutcome:
    """What ``exercise`` found.

    ``problems``: contract violations, one sentence each (empty when the layer keeps the contract).
    ``out``: the first forward's output ``(N, OH, OW, C_out)``, a copy; None when forward returned no usable
    array. ``gradients``: the first backward's ``(dx, dw, db)`` shaped like ``(x, w, b)``, copies; None when
    backward returned nothing usable. Any problem should fail the check, also when the arrays are usable.
    ``forward_seconds``: how long the first forward call took (for cost estimates).
    """

    problems: tuple[str, ...]
    out: np.ndarray | None
    gradients: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    forward_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def usable(self) -> bool:
        """True when the output and the gradients exist with the right shapes (they may still hold NaN)."""
        return self.out is not None and self.gradients is not None


def exercise(layer: ConvLayer, x: np.ndarray, w: np.ndarray, b: np.ndarray, dout: np.ndarray) -> ContractOutcome:
    """Run ``layer`` through the contract checks (see the module docstring).

    The arguments are never modified; ``layer`` only ever sees copies.

    Args:
        layer: any ``ConvLayer`` (NHWC); a ``UserLayer`` is additionally audited in the user's own layout.
        x: (N, H, W, C_in)
        w: (k, k, C_in, C_out)
        b: (C_out,)
        dout: (N, OH, OW, C_out), the upstream gradient; its shape is the output shape the layer must produce.

    Returns:
        The problems found, the first forward's output and the first backward's gradients.

    Raises:
        UserCodeError: the user's first forward or first backward raised (later calls that raise are problems:
            they mean the cache did not survive its first use).
    """
    arrays = _Arrays(x, w, b, dout)
    problems: list[str] = []
    to_user: Callable[[str, tuple[int, ...]], tuple[int, ...]] = (
        layer.user_index if isinstance(layer, UserLayer) else (lambda tensor, index: index)
    )
    layout_note = f" (index in the {layer.layout.value} layout)" if isinstance(layer, UserLayer) else ""
    timing: list[float] = []
    with _audit(layer) as audit_log:
        out, grads = _run(layer, arrays, problems, to_user, layout_note, timing)
    # The audit sees every call; report each (call, argument) modification once, as first seen.
    seen = set()
    for message in audit_log:
        key = message.partition(" in place")[0]
        if key not in seen:
            seen.add(key)
            problems.append(message)
    return ContractOutcome(tuple(dict.fromkeys(problems)), out, grads, timing[0] if timing else 0.0)


@dataclass
class _Arrays:
    """Pristine copies of the caller's arrays, and the working copies handed to the layer."""

    x: np.ndarray
    w: np.ndarray
    b: np.ndarray
    dout: np.ndarray

    def __post_init__(self) -> None:
        self.x, self.w, self.b, self.dout = (np.array(a, copy=True) for a in (self.x, self.w, self.b, self.dout))


_Grads = tuple[np.ndarray, np.ndarray, np.ndarray]


def _run(
    layer: ConvLayer,
    arrays: _Arrays,
    problems: list[str],
    to_user: Callable[[str, tuple[int, ...]], tuple[int, ...]],
    layout_note: str,
    timing: list[float],
) -> tuple[np.ndarray | None, _Grads | None]:
    x, w, b, dout = arrays.x.copy(), arrays.w.copy(), arrays.b.copy(), arrays.dout.copy()
    # what was handed to the layer, and a baseline to compare it with (re-baselined after each report)
    handed = {"x": (x, x.copy()), "w": (w, w.copy()), "b": (b, b.copy())}

    # 1. forward
    start = time.perf_counter()
    try:
        out, cache = layer.forward(x, w, b)
    except ContractError as exc:
        problems.append(str(exc))
        return None, None
    finally:
        timing.append(time.perf_counter() - start)
    if not _array_ok(problems, "forward's out", "out", out, arrays.dout.shape, arrays, layer):
        return None, None
    out_copy = out.copy()
    _dtype(problems, "forward's out", out, "x", arrays.x, output=True)
    _finite(problems, "forward's out", "out", out, to_user, layout_note)
    _modified(problems, "forward", handed, to_user, layout_note)

    # 2. backward, twice on the same cache
    try:
        first = layer.backward(dout, cache)
    except ContractError as exc:
        problems.append(str(exc))
        return out_copy, None
    if not _gradients_ok(problems, first, arrays, layer):
        return out_copy, None
    grads: _Grads = (first[0].copy(), first[1].copy(), first[2].copy())
    for name, tensor, grad in zip(("dx", "dw", "db"), ("x", "w", "b"), grads, strict=True):
        _dtype(problems, name, grad, tensor, getattr(arrays, tensor), output=False)
        _finite(problems, name, tensor, grad, to_user, layout_note)
    _modified(problems, "backward", {**handed, "dout": (dout, arrays.dout.copy())}, to_user, layout_note)

    def backward_again() -> Any:
        return layer.backward(arrays.dout.copy(), cache)

    second = _again(problems, "a second backward call on the same cache", backward_again)
    if second is None:
        return out_copy, grads
    repeat = _compare(second, grads)
    if repeat:
        problems.append(f"a second backward call on the same cache returned {repeat}")
        return out_copy, grads

    # 3. another forward, then backward on the first cache again
    other = np.asarray(0.5 - arrays.x, dtype=arrays.x.dtype)

    def interleaved() -> Any:
        layer.forward(other, arrays.w.copy(), arrays.b.copy())
        return layer.backward(arrays.dout.copy(), cache)

    third = _again(problems, "backward on a cache after another forward call", interleaved)
    if third is not None:
        changed = _compare(third, grads)
        if changed:
            problems.append(
                f"backward on the first forward's cache returned different gradients after another forward "
                f"call ({changed.split(': ', 1)[0]}): the implementation keeps state outside the cache it "
                "returns (a global, an attribute, or a buffer reused across forward calls), so a cache is "
                "only valid until the next forward"
            )
    if not np.array_equal(out, out_copy, equal_nan=True):
        problems.append(
            "forward reuses its output array: the array returned by one call was overwritten by the next "
            "call; return a fresh array"
        )
    return out_copy, grads


@contextmanager
def _audit(layer: ConvLayer) -> Iterator[list[str]]:
    if isinstance(layer, UserLayer):
        with layer.auditing() as log:
            yield log
    else:
        yield []


def _again(problems: list[str], what: str, call: Callable[[], Any]) -> _Grads | None:
    """Run a repeated call; its failures are contract problems, not errors (the first call worked)."""
    try:
        returned = call()
    except (UserCodeError, ContractError) as exc:
        problems.append(f"{what} failed, although the first call worked: {exc}")
        return None
    if not isinstance(returned, tuple | list) or len(returned) != 3:
        problems.append(f"{what} did not return (dx, dw, db)")
        return None
    return (returned[0], returned[1], returned[2])


def _compare(again: _Grads, first: _Grads) -> str:
    """How ``again`` differs from ``first`` (empty when they agree to a few ulps)."""
    for name, new, old in zip(("dx", "dw", "db"), again, first, strict=True):
        if not isinstance(new, np.ndarray) or new.shape != old.shape:
            return f"a different {name}: {_kind(new)} instead of an array of shape {old.shape}"
        if not (np.issubdtype(new.dtype, np.number) and np.issubdtype(old.dtype, np.number)):
            continue  # a non-numeric dtype is reported as a dtype problem; the values cannot be compared
        if np.array_equal(new, old, equal_nan=True):
            continue
        scale = float(np.nanmax(np.abs(old))) if old.size else 0.0
        diff = np.abs(np.asarray(new, dtype=np.float64) - old)
        worst = float(np.nanmax(diff)) if diff.size else 0.0
        eps = float(np.finfo(old.dtype).eps) if np.issubdtype(old.dtype, np.floating) else 0.0
        if worst <= _REPEAT_ULPS * eps * scale and not np.isnan(diff).any():
            continue
        if scale > 0 and np.allclose(new, 2 * old, rtol=1e-6, atol=1e-6 * scale):
            why = "exactly twice the first: gradients accumulate across calls (+= into a buffer that persists)"
        elif scale > 0 and not np.any(new):
            why = "all zeros: the first call consumed or zeroed the cache"
        else:
            why = "the first call modified something in the cache in place"
        return f"a different {name}: max difference {worst:.3g} (largest entry {scale:.3g}); {why}"
    return ""


def _kind(value: object) -> str:
    return f"an array of shape {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__


def _array_ok(
    problems: list[str],
    name: str,
    tensor: str,
    value: object,
    expected: tuple[int, ...],
    arrays: _Arrays,
    layer: ConvLayer,
) -> bool:
    """Type and shape of an array a generic (non-adapter) layer returned, in NHWC."""
    if not isinstance(value, np.ndarray):
        problems.append(f"{name} must be a numpy array of shape {expected}; the layer returned {_kind(value)}")
        return False
    if value.shape == tuple(expected):
        return True
    problem = shape_problem(name, tensor, value.shape, Layout.NHWC, _dims(arrays, layer))
    problems.append(problem or f"{name} has shape {value.shape}; the contract wants {tuple(expected)}")
    return False


def _dims(arrays: _Arrays, layer: ConvLayer) -> dict[str, int]:
    """Named sizes for shape messages; stride and padding only when the layer exposes them as ints."""
    stride, padding = getattr(layer, "stride", None), getattr(layer, "padding", None)
    if isinstance(stride, int) and isinstance(padding, int):
        dims = layer_dims(arrays.x.shape, arrays.w.shape, stride, padding)
        if (dims["OH"], dims["OW"]) == arrays.dout.shape[1:3]:
            return dims
    oh, ow = arrays.dout.shape[1:3]
    return named_dims(arrays.x.shape, arrays.w.shape, oh, ow)


def _gradients_ok(problems: list[str], returned: object, arrays: _Arrays, layer: ConvLayer) -> bool:
    if not isinstance(returned, tuple | list) or len(returned) != 3:
        problems.append(f"backward must return (dx, dw, db); it returned {_kind(returned)}")
        return False
    ok = True
    for name, tensor, value, source in zip(
        ("dx", "dw", "db"), ("x", "w", "b"), returned, (arrays.x, arrays.w, arrays.b), strict=True
    ):
        ok &= _array_ok(problems, name, tensor, value, source.shape, arrays, layer)
    return ok


def _dtype(
    problems: list[str], name: str, value: np.ndarray, source_name: str, source: np.ndarray, *, output: bool
) -> None:
    got, want = value.dtype, source.dtype
    if got == want:
        return
    role = "forward's output" if output else "its gradient"
    if np.issubdtype(got, np.floating) and np.issubdtype(want, np.floating) and got.itemsize < want.itemsize:
        problems.append(
            f"{name} is {got} although {source_name} is {want}: {role} is computed in lower precision "
            f"(a precision bug: about {np.finfo(got).precision} significant digits instead of "
            f"{np.finfo(want).precision})"
        )
    else:
        problems.append(f"{name} has dtype {got}, but {source_name} is {want}; it must match")


def _finite(
    problems: list[str],
    name: str,
    tensor: str,
    value: np.ndarray,
    to_user: Callable[[str, tuple[int, ...]], tuple[int, ...]],
    layout_note: str,
) -> None:
    if not np.issubdtype(value.dtype, np.inexact):
        return
    finite = np.isfinite(value)
    if finite.all():
        return
    nan = int(np.isnan(value).sum())
    inf = int(value.size - finite.sum()) - nan
    first = to_user(tensor, tuple(int(i) for i in np.argwhere(~finite)[0]))
    parts = [f"{nan} NaN" if nan else "", f"{inf} ±Inf" if inf else ""]
    problems.append(
        f"{name} contains {' and '.join(p for p in parts if p)} "
        f"(of {value.size} entries; first at {list(first)}{layout_note})"
    )


def _modified(
    problems: list[str],
    role: str,
    handed: dict[str, tuple[np.ndarray, np.ndarray]],
    to_user: Callable[[str, tuple[int, ...]], tuple[int, ...]],
    layout_note: str,
) -> None:
    """Compare the arrays handed to the layer with their pristine copies; report, then re-baseline."""
    tensors = {"x": "x", "w": "w", "b": "b", "dout": "out"}
    for name, (given, pristine) in handed.items():
        if given.shape == pristine.shape and np.array_equal(given, pristine, equal_nan=True):
            continue
        changed = np.argwhere(~((given == pristine) | (np.isnan(given) & np.isnan(pristine))))
        first = to_user(tensors[name], tuple(int(i) for i in changed[0]))
        problems.append(
            f"{role} modified its argument {name} in place ({len(changed)} of {given.size} entries changed, "
            f"first at {list(first)}{layout_note}): the caller's array must stay as it was"
        )
        pristine[...] = given
