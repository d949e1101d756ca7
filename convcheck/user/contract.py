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
values (``ContractOutcome.problems``, one ``Finding`` each), so a check can list them all next to its gradients
and diagnosis can read their kinds.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from convcheck.bits import same_bits
from convcheck.geometry import Window
from convcheck.protocol import ConvLayer
from convcheck.results import Finding, FindingKind
from convcheck.spec import Layout
from convcheck.user.adapter import UserLayer, modification
from convcheck.user.errors import ContractError, UserCodeError
from convcheck.user.shapes import expected_shape, layer_dims, named_dims, shape_problem

__all__ = ["ContractOutcome", "exercise"]

_REPEAT_ULPS = 16  # a repeated backward may differ by this many ulps of the gradient's scale (summation order)

# Each returned array: what messages call it, the contract tensor whose shape (and index order) it has, and the
# argument whose dtype it must have.
_RETURNED = {
    "out": ("forward's out", "out", "x"),
    "dx": ("dx", "x", "x"),
    "dw": ("dw", "w", "w"),
    "db": ("db", "b", "b"),
}
_GRADIENTS = ("dx", "dw", "db")

_Grads = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ContractOutcome:
    """What ``exercise`` found.

    ``problems``: contract violations, one ``Finding`` each (empty when the layer keeps the contract).
    ``out``: the first forward's output ``(N, OH, OW, C_out)``, a copy; None when forward returned no usable
    array. ``gradients``: the first backward's ``(dx, dw, db)`` shaped like ``(x, w, b)``, copies; None when
    backward returned nothing usable. Any problem should fail the check, also when the arrays are usable.
    ``forward_seconds``: how long the first forward call took (for cost estimates).
    """

    problems: tuple[Finding, ...]
    out: np.ndarray | None
    gradients: _Grads | None
    forward_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def usable(self) -> bool:
        """True when the output and the gradients exist with the right shapes (they may still hold NaN)."""
        return self.out is not None and self.gradients is not None


def exercise(
    layer: ConvLayer,
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    dout: np.ndarray,
    first_output: Callable[[np.ndarray], None] | None = None,
) -> ContractOutcome:
    """Run ``layer`` through the contract checks (see the module docstring).

    The arguments are never modified; ``layer`` only ever sees copies.

    Args:
        layer: any ``ConvLayer`` (NHWC); a ``UserLayer`` is additionally audited in the user's own layout.
        x: (N, H, W, C_in)
        w: (k, k, C_in, C_out)
        b: (C_out,)
        dout: (N, OH, OW, C_out), the upstream gradient; its shape is the output shape the layer must produce.
        first_output: called with the first forward's output (a copy: the array returned as ``out``) as soon as
            it is known to be usable, before the later calls: for work that can start on it meanwhile (on another
            thread).

    Returns:
        The problems found, the first forward's output and the first backward's gradients.

    Raises:
        UserCodeError: the user's first forward or first backward raised (later calls that raise are problems:
            they mean the cache did not survive its first use).
    """
    recorder = _OutputRecorder.of(layer)
    run = _Exercise(recorder.layer if recorder is not None else layer, _Arrays(x, w, b, dout), recorder, first_output)
    with _audit(run.layer) as audited:
        out, grads = run.all()
    run.problems.extend(audited.values())
    return ContractOutcome(tuple(dict.fromkeys(run.problems)), out, grads, run.forward_seconds)


class _OutputRecorder:
    """A user's forward, wrapped to keep each array it returned *before* the adapter copies it.

    ``UserLayer`` hands the engine a copy of every output, so a forward that writes each result into one
    buffer it keeps (a global, an attribute) looks fine from outside; this is how ``exercise`` sees the buffer.
    """

    def __init__(self, forward: Callable[..., Any]) -> None:
        self.forward = forward
        self.outputs: list[np.ndarray] = []
        functools.update_wrapper(self, forward)  # the adapter may inspect the signature (keyword arguments)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        returned = self.forward(*args, **kwargs)
        if isinstance(returned, tuple | list) and len(returned) == 2 and isinstance(returned[0], np.ndarray):
            self.outputs.append(returned[0])
        return returned

    @classmethod
    def of(cls, layer: ConvLayer) -> _Recording | None:
        """A copy of the user layer ``layer`` whose forward records its outputs; None for other layers."""
        if type(layer) is not UserLayer:  # a layer in another process watches its outputs there (output_reused)
            return None
        recorder = cls(layer.impl.forward)
        impl = dataclasses.replace(layer.impl, forward=recorder)
        copy = layer.with_impl(impl)
        return _Recording(copy, recorder)


@dataclass(frozen=True)
class _Recording:
    layer: UserLayer
    recorder: _OutputRecorder


@contextmanager
def _audit(layer: ConvLayer) -> Iterator[dict[tuple[str, str], Finding]]:
    if isinstance(layer, UserLayer):
        with layer.auditing() as audited:
            yield audited
    else:
        yield {}


@dataclass
class _Arrays:
    """Pristine copies of the caller's arrays, and the working copies handed to the layer."""

    x: np.ndarray
    w: np.ndarray
    b: np.ndarray
    dout: np.ndarray

    def __post_init__(self) -> None:
        self.x, self.w, self.b, self.dout = (np.array(a, copy=True) for a in (self.x, self.w, self.b, self.dout))


@dataclass(frozen=True)
class _Difference:
    """How a repeated backward's gradient differs from the first call's: ``str()`` is ``a different dx: …``."""

    tensor: str  # dx, dw or db
    detail: str
    kind: FindingKind  # REPEAT_ACCUMULATES, REPEAT_DIFFERS, or REPEAT_FAILED for an unusable value

    def __str__(self) -> str:
        return f"a different {self.tensor}: {self.detail}"


class _Exercise:
    """One run of the contract checks on one layer; ``problems`` collects the findings in the order found."""

    def __init__(
        self,
        layer: ConvLayer,
        arrays: _Arrays,
        recording: _Recording | None = None,
        first_output: Callable[[np.ndarray], None] | None = None,
    ) -> None:
        self.layer = layer
        self.arrays = arrays
        self.first_output = first_output
        self.recorder = recording.recorder if recording is not None else None
        self.problems: list[Finding] = []
        self.forward_seconds = 0.0
        # Indices in findings are in the user's layout when the layer is a user's.
        self.to_user: Callable[[str, tuple[int, ...]], tuple[int, ...]] = (
            layer.user_index if isinstance(layer, UserLayer) else (lambda tensor, index: index)
        )
        self.layout_note = f" (index in the {layer.layout.value} layout)" if isinstance(layer, UserLayer) else ""

    def add(
        self,
        kind: FindingKind,
        text: str,
        *,
        tensor: str | None = None,
        shape: tuple[int, ...] | None = None,
        dtype: str | None = None,
    ) -> None:
        self.problems.append(Finding(kind, text, tensor=tensor, shape=shape, dtype=dtype))

    def all(self) -> tuple[np.ndarray | None, _Grads | None]:
        """Steps 1–3 of the module docstring; the first forward's output and first backward's gradients."""
        arrays = self.arrays
        x, w, b, dout = arrays.x.copy(), arrays.w.copy(), arrays.b.copy(), arrays.dout.copy()
        # what was handed to the layer, and a baseline to compare it with (re-baselined after each report)
        handed = {"x": (x, x.copy()), "w": (w, w.copy()), "b": (b, b.copy())}
        first = self.forward(x, w, b, handed)
        if first is None:
            return None, None
        out, cache = first
        out_copy = out.copy()
        if self.first_output is not None:
            self.first_output(out_copy)
        grads = self.backward(dout, cache, {**handed, "dout": (dout, arrays.dout.copy())})
        if grads is None or not self.repeat(cache, grads):
            return out_copy, grads
        # what the user's forward returned the first time (UserLayer copies it), as it is before the next call
        raw = self.recorder.outputs[0] if self.recorder is not None and self.recorder.outputs else out
        before = raw.copy() if raw is not out else out_copy
        self.interleave(cache, grads)
        reused = not (same_bits(raw, before) or np.array_equal(raw, before, equal_nan=True))
        if reused or getattr(self.layer, "output_reused", False) is True:
            self.add(
                FindingKind.OUTPUT_REUSED,
                "forward reuses its output array: the array returned by one call was overwritten by the next "
                "call; return a fresh array",
                tensor="out",
            )
        return out_copy, grads

    # -- 1. forward ------------------------------------------------------------------------------------------

    def forward(
        self, x: np.ndarray, w: np.ndarray, b: np.ndarray, handed: dict[str, tuple[np.ndarray, np.ndarray]]
    ) -> tuple[np.ndarray, Any] | None:
        """The first forward call: ``(out, cache)``, or None when ``out`` is unusable (a problem says why).

        ``x: (N, H, W, C_in)``, ``w: (k, k, C_in, C_out)``, ``b: (C_out,)`` are the working copies; ``handed``
        maps each name to (working copy, pristine copy) for the modification check; ``out: (N, OH, OW, C_out)``.
        """
        start = time.perf_counter()
        try:
            out, cache = self.layer.forward(x, w, b)
        except ContractError as exc:
            self.problems.append(exc.finding)
            return None
        finally:
            self.forward_seconds = time.perf_counter() - start
        if not self.array_ok("out", out, self.arrays.dout.shape):
            return None
        self.dtype("out", out)
        self.finite("out", out)
        self.modified("forward", handed)
        return out, cache

    # -- 2. backward, twice on the same cache ----------------------------------------------------------------

    def backward(self, dout: np.ndarray, cache: Any, handed: dict[str, tuple[np.ndarray, np.ndarray]]) -> _Grads | None:
        """The first backward call: copies of ``(dx, dw, db)``, or None when they are unusable.

        ``dout: (N, OH, OW, C_out)``, a working copy; ``handed`` as for ``forward``, with ``dout`` added (the
        forward's arguments stay in it: a backward may modify what its cache keeps).
        """
        try:
            returned = self.layer.backward(dout, cache)
        except ContractError as exc:
            self.problems.append(exc.finding)
            return None
        if not self.gradients_ok(returned):
            return None
        grads: _Grads = (returned[0].copy(), returned[1].copy(), returned[2].copy())
        for key, grad in zip(_GRADIENTS, grads, strict=True):
            self.dtype(key, grad)
            self.finite(key, grad)
        self.modified("backward", handed)
        return grads

    def repeat(self, cache: Any, grads: _Grads) -> bool:
        """A second backward on the same cache; True when it returned the first call's gradients ``grads``
        (``dx: (N, H, W, C_in)``, ``dw: (k, k, C_in, C_out)``, ``db: (C_out,)``)."""
        arrays = self.arrays

        def backward_again() -> Any:
            return self.layer.backward(arrays.dout.copy(), cache)

        second = self.again("a second backward call on the same cache", backward_again)
        if second is None:
            return False
        difference = _compare(second, grads)
        if difference is None:
            return True
        self.add(
            difference.kind,
            f"a second backward call on the same cache returned {difference}",
            tensor=difference.tensor,
        )
        return False

    # -- 3. another forward, then backward on the first cache again ------------------------------------------

    def interleave(self, cache: Any, grads: _Grads) -> None:
        """Forward on other inputs, then backward on the first cache: it must still return ``grads``."""
        arrays = self.arrays
        other = np.asarray(0.5 - arrays.x, dtype=arrays.x.dtype)

        def interleaved() -> Any:
            self.layer.forward(other, arrays.w.copy(), arrays.b.copy())
            return self.layer.backward(arrays.dout.copy(), cache)

        third = self.again("backward on a cache after another forward call", interleaved)
        difference = None if third is None else _compare(third, grads)
        if difference is not None:
            self.add(
                FindingKind.STATE_OUTSIDE_CACHE,
                f"backward on the first forward's cache returned different gradients after another forward "
                f"call (a different {difference.tensor}): the implementation keeps state outside the cache it "
                "returns (a global, an attribute, or a buffer reused across forward calls), so a cache is "
                "only valid until the next forward",
                tensor=difference.tensor,
            )

    def again(self, what: str, call: Callable[[], Any]) -> _Grads | None:
        """Run a repeated call; its failures are contract problems, not errors (the first call worked)."""
        try:
            returned = call()
        except (UserCodeError, ContractError) as exc:
            self.add(FindingKind.REPEAT_FAILED, f"{what} failed, although the first call worked: {exc}")
            return None
        if not isinstance(returned, tuple | list) or len(returned) != 3:
            self.add(FindingKind.REPEAT_FAILED, f"{what} did not return (dx, dw, db)")
            return None
        return (returned[0], returned[1], returned[2])

    # -- what a call returned, and what it did to its arguments ----------------------------------------------

    def array_ok(self, key: str, value: object, expected: tuple[int, ...]) -> bool:
        """Type and shape of an array a generic (non-adapter) layer returned, in NHWC."""
        name, tensor, _ = _RETURNED[key]
        if not isinstance(value, np.ndarray):
            self.add(
                FindingKind.NOT_AN_ARRAY,
                f"{name} must be a numpy array of shape {expected}; the layer returned {_kind(value)}",
                tensor=key,
            )
            return False
        if value.shape == tuple(expected):
            return True
        problem = shape_problem(name, tensor, value.shape, Layout.NHWC, self.dims())
        text = problem or f"{name} has shape {value.shape}; the contract wants {tuple(expected)}"
        self.add(FindingKind.SHAPE, text, tensor=key, shape=tuple(value.shape))
        return False

    def dims(self) -> dict[str, int]:
        """Named sizes for shape messages; stride and padding only when the layer exposes its window."""
        arrays = self.arrays
        window = getattr(self.layer, "window", None)
        stride, padding = getattr(self.layer, "stride", None), getattr(self.layer, "padding", None)
        if not isinstance(window, Window) and isinstance(stride, int) and isinstance(padding, int):
            window = Window.of(arrays.x.ndim - 2, stride, padding)
        if isinstance(window, Window):
            dims = layer_dims(arrays.x.shape, arrays.w.shape, window)
            if expected_shape("out", Layout.NHWC, dims) == arrays.dout.shape:
                return dims
        return named_dims(arrays.x.shape, arrays.w.shape, arrays.dout.shape[1:-1])

    def gradients_ok(self, returned: object) -> bool:
        if not isinstance(returned, tuple | list) or len(returned) != 3:
            self.add(FindingKind.NOT_AN_ARRAY, f"backward must return (dx, dw, db); it returned {_kind(returned)}")
            return False
        ok = True
        for key, value in zip(_GRADIENTS, returned, strict=True):
            source = getattr(self.arrays, _RETURNED[key][2])
            ok &= self.array_ok(key, value, source.shape)
        return ok

    def dtype(self, key: str, value: np.ndarray) -> None:
        """``value`` (returned as ``key``) must have the dtype of the argument it comes from."""
        name, _, source_name = _RETURNED[key]
        got, want = value.dtype, getattr(self.arrays, source_name).dtype
        if got == want:
            return
        role = "forward's output" if key == "out" else "its gradient"
        if np.issubdtype(got, np.floating) and np.issubdtype(want, np.floating) and got.itemsize < want.itemsize:
            text = (
                f"{name} is {got} although {source_name} is {want}: {role} is computed in lower precision "
                f"(a precision bug: about {np.finfo(got).precision} significant digits instead of "
                f"{np.finfo(want).precision})"
            )
            self.add(FindingKind.LOWER_PRECISION, text, tensor=key, dtype=str(got))
        else:
            text = f"{name} has dtype {got}, but {source_name} is {want}; it must match"
            self.add(FindingKind.DTYPE, text, tensor=key, dtype=str(got))

    def finite(self, key: str, value: np.ndarray) -> None:
        """NaN and ±Inf in ``value`` (returned as ``key``), with the first one's index in the user's layout."""
        if not np.issubdtype(value.dtype, np.inexact):
            return
        finite = np.isfinite(value)
        if finite.all():
            return
        nan = int(np.isnan(value).sum())
        inf = int(value.size - finite.sum()) - nan
        name, tensor, _ = _RETURNED[key]
        first = self.to_user(tensor, tuple(int(i) for i in np.argwhere(~finite)[0]))
        parts = [f"{nan} NaN" if nan else "", f"{inf} ±Inf" if inf else ""]
        text = (
            f"{name} contains {' and '.join(p for p in parts if p)} "
            f"(of {value.size} entries; first at {list(first)}{self.layout_note})"
        )
        self.add(FindingKind.NOT_FINITE, text, tensor=key)

    def modified(self, role: str, handed: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Compare the arrays handed to the layer with their pristine copies; report, then re-baseline."""
        tensors = {"x": "x", "w": "w", "b": "b", "dout": "out"}
        for name, (given, pristine) in handed.items():
            change = modification(given, pristine)
            if change is None:
                continue
            first = self.to_user(tensors[name], change.first)
            text = (
                f"{role} modified its argument {name} in place ({change.count} of {given.size} entries changed, "
                f"first at {list(first)}{self.layout_note}): the caller's array must stay as it was"
            )
            self.add(FindingKind.MODIFIED_ARGUMENT, text, tensor=name)
            pristine[...] = given


def _compare(again: _Grads, first: _Grads) -> _Difference | None:
    """How ``again`` differs from ``first`` (None when they agree to a few ulps).

    ``first`` is ``(dx, dw, db)`` shaped like ``(x, w, b)``; ``again`` is what a repeated call returned, any
    shape or type. Equal up to ``_REPEAT_ULPS`` ulps of the largest entry counts as equal: a backward may sum in
    another order the second time.
    """
    for name, new, old in zip(_GRADIENTS, again, first, strict=True):
        if not isinstance(new, np.ndarray) or new.shape != old.shape:
            detail = f"{_kind(new)} instead of an array of shape {old.shape}"
            return _Difference(name, detail, FindingKind.REPEAT_FAILED)
        if not (np.issubdtype(new.dtype, np.number) and np.issubdtype(old.dtype, np.number)):
            continue  # a non-numeric dtype is reported as a dtype problem; the values cannot be compared
        if same_bits(new, old) or np.array_equal(new, old, equal_nan=True):
            continue
        scale = float(np.nanmax(np.abs(old))) if old.size else 0.0
        diff = np.abs(np.asarray(new, dtype=np.float64) - old)
        worst = float(np.nanmax(diff)) if diff.size else 0.0
        eps = float(np.finfo(old.dtype).eps) if np.issubdtype(old.dtype, np.floating) else 0.0
        if worst <= _REPEAT_ULPS * eps * scale and not np.isnan(diff).any():
            continue
        kind = FindingKind.REPEAT_DIFFERS
        if scale > 0 and np.allclose(new, 2 * old, rtol=1e-6, atol=1e-6 * scale):
            kind = FindingKind.REPEAT_ACCUMULATES
            why = "exactly twice the first: gradients accumulate across calls (+= into a buffer that persists)"
        elif scale > 0 and not np.any(new):
            why = "all zeros: the first call consumed or zeroed the cache"
        else:
            why = "the first call modified something in the cache in place"
        return _Difference(name, f"max difference {worst:.3g} (largest entry {scale:.3g}); {why}", kind)
    return None


def _kind(value: object) -> str:
    return f"an array of shape {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
