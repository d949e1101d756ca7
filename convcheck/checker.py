"""Run one check: make seeded data, run the layer, compare its forward and gradients with the references."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from convcheck import parallel, reference
from convcheck.compare import judge, judge_forward
from convcheck.contract import exercise
from convcheck.data import CheckData, make_data
from convcheck.diagnosis import diagnose
from convcheck.implementations import UserFault, load_layer
from convcheck.layer import MatrixConvLayer
from convcheck.numeric import Engine, Estimate, NotLocalError, entrywise_passes, grouped_passes
from convcheck.protocol import ConvLayer
from convcheck.results import CheckResult, ForwardResult, Status, TensorResult, Tolerance
from convcheck.spec import Activation, CheckSpec, DType, Method
from convcheck.tolerance import SAFETY, analytic_noise, resolve, rounding_sigma, unit_roundoff

DEFAULT_TIMEOUT = 300.0  # seconds per check, when the config sets none
AUTO_BUDGET = 60.0  # seconds of forward passes ``auto`` may spend on an every-entry check
SAMPLED_ENTRIES = 64  # entries per tensor for ``sampled``
DIRECTIONAL_PROJECTIONS = 4  # random projections per tensor for ``directional``


# Called as hook(check name, forward passes done, passes planned) during a check in this process (a progress
# bar); set with ``report_progress``. Worker processes report only when a whole check is done.
_progress_hook: ContextVar[Callable[[str, int, int], None] | None] = ContextVar("convcheck_progress", default=None)


@contextmanager
def report_progress(hook: Callable[[str, int, int], None]) -> Iterator[None]:
    """Within the block, checks run in this process report their forward passes to ``hook``."""
    token = _progress_hook.set(hook)
    try:
        yield
    finally:
        _progress_hook.reset(token)


def choose_method(spec: CheckSpec, forward_seconds: float) -> tuple[Method, str]:
    """Resolve ``auto``: an every-entry method when its estimated time fits ``AUTO_BUDGET``, else ``sampled``."""
    grouped = grouped_passes(spec.shape)
    entrywise = entrywise_passes(spec.shape)
    method, passes = (Method.FULL, grouped) if grouped <= entrywise else (Method.ENTRYWISE, entrywise)
    estimate = passes * forward_seconds
    if estimate <= AUTO_BUDGET:
        return method, f"auto chose {method.value}: {passes} forward passes, about {estimate:.1f} s"
    return Method.SAMPLED, (
        f"auto chose sampled ({SAMPLED_ENTRIES} entries per tensor): checking every entry would take "
        f"{passes} forward passes, about {estimate:.0f} s (budget {AUTO_BUDGET:.0f} s)"
    )


def planned_passes(spec: CheckSpec) -> tuple[str, int]:
    """The method a spec will use and its forward passes, without running anything (for ``validate``).

    ``auto`` is shown as the every-entry method it prefers; at run time it falls back to ``sampled`` when the
    measured forward time says that would exceed ``AUTO_BUDGET``.
    """
    shape = spec.shape
    method = spec.method
    if method is Method.AUTO:
        method = Method.FULL if grouped_passes(shape) <= entrywise_passes(shape) else Method.ENTRYWISE
        label = f"auto→{method.value}"
    else:
        label = method.value
    passes = {
        Method.FULL: grouped_passes(shape),
        Method.ENTRYWISE: entrywise_passes(shape),
        Method.SAMPLED: 2
        * (
            min(SAMPLED_ENTRIES, math.prod(shape.x_shape))
            + min(SAMPLED_ENTRIES, math.prod(shape.w_shape))
            + min(SAMPLED_ENTRIES, shape.out_depth)
        ),
        Method.DIRECTIONAL: 2 * 3 * DIRECTIONAL_PROJECTIONS,
    }[method]
    return label, passes


MEMORY_FRACTION = 0.5  # default max_memory: this share of the machine's physical memory


def default_max_memory() -> int:
    """Half of this machine's physical memory (or 8 GiB where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * MEMORY_FRACTION)
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX systems
        return 8 * 2**30


def estimated_memory(spec: CheckSpec) -> int:
    """Bytes a check of ``spec`` needs at its peak, by a model of the arrays it holds at once.

    The built-in layer's im2col matrix ``(N·OH·OW, k²·C_in)`` appears in the forward, its cache and the
    magnitude computations (about 4 copies, float64); the engine holds about 16 output-sized float64 arrays
    (f0, f±, dout, noise model, differences) and a few copies of x and w.
    """
    s = spec.shape
    positions = s.batch * s.out_height * s.out_width
    cols = positions * s.filter_size**2 * s.in_depth
    outputs = positions * s.out_depth
    return 8 * (4 * cols + 16 * outputs + 6 * math.prod(s.x_shape) + 6 * math.prod(s.w_shape))


def run_check(spec: CheckSpec, layer: ConvLayer | None = None, data: CheckData | None = None) -> CheckResult:
    """Check one layer: its forward against the reference convolution and every gradient entry against
    finite differences of ``L = Σ out ⊙ dout``.

    Args:
        spec: what to check (geometry, activation, dtype, method, seed, tolerances, implementation).
        layer: a layer object to check instead of the one ``spec.impl`` names.
        data: the point to check at, instead of seeded random data (e.g. integer-valued arrays).
    Returns:
        A ``CheckResult``; problems in the layer (wrong numbers, contract violations, exceptions in user code)
        are a result with status ``fail`` or ``error``, never an exception.
    """
    start = time.perf_counter()
    problems = spec.shape.problems()
    if problems:
        return _error(spec, start, "; ".join(problems))
    needed, allowed = estimated_memory(spec), spec.max_memory if spec.max_memory is not None else default_max_memory()
    if needed > allowed:
        return _error(
            spec,
            start,
            f"this layer's check would need about {needed / 2**30:.1f} GiB of memory, more than max_memory "
            f"({allowed / 2**30:.1f} GiB); make the layer smaller (batch, in_height, in_width), or raise "
            "max_memory in the config (bytes, or a string such as '32GB')",
        )
    try:
        return _run(spec, layer, data, start)
    except Exception as exc:  # noqa: BLE001 - any failure inside a check becomes that check's error row
        return _error(spec, start, describe_exception(exc))


def describe_exception(exc: BaseException) -> str:
    """One paragraph for the user; typed errors from user code carry their own message."""
    text = str(exc)
    if isinstance(exc, UserFault):  # already one paragraph naming the user's file and line
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _error(spec: CheckSpec, start: float, message: str) -> CheckResult:
    return CheckResult(
        name=spec.name, status=Status.ERROR, spec=spec, seconds=time.perf_counter() - start, error=message
    )


def _run(spec: CheckSpec, layer: ConvLayer | None, data: CheckData | None, start: float) -> CheckResult:
    data = make_data(spec) if data is None else data
    layer = load_layer(spec) if layer is None else layer  # the built-in layer when spec.impl is None
    u = unit_roundoff(spec.dtype)
    forward_tol = resolve(spec.dtype, spec.eps, spec.rtol, spec.atol)

    outcome = exercise(layer, data.x, data.w, data.b, data.dout)
    out, grads, contract = outcome.out, outcome.gradients, outcome.problems
    forward_seconds = outcome.forward_seconds

    shape = spec.shape
    forward_result = None
    if out is not None:
        expected = reference.forward(
            data.x.astype(np.float64),
            data.w.astype(np.float64),
            data.b.astype(np.float64),
            shape.stride,
            shape.padding,
            spec.activation,
        )
        sigma = rounding_sigma(data.x, data.w, data.b, expected, shape.stride, shape.padding, u)
        forward_result = judge_forward(out, expected, sigma, forward_tol)
    if grads is None:
        return _finish(spec, start, None, 0, forward_tol, (), forward_result, contract, ())

    method, notes = spec.method, []
    if method is Method.AUTO:
        method, note = choose_method(spec, forward_seconds)
        notes.append(note)
    engine, tol = _engine(layer, data, spec, notes)
    widen = _rounding_kinks(data, spec) if engine.x.dtype != data.x.dtype else None
    bounds = analytic_noise(data.x, data.w, data.b, data.dout, shape.stride, shape.padding, u, spec.activation)
    # Plus the final rounding of each returned entry to the layer's dtype.
    noise = tuple(bound + u * np.abs(np.asarray(g, dtype=np.float64)) for bound, g in zip(bounds, grads, strict=True))
    forward_ok = forward_result is None or forward_result.ok
    estimates, method = _estimate(engine, method, grads, noise, tol, spec, notes, forward_ok)
    if widen is not None:
        for est, extra in zip(estimates, widen, strict=True):
            if est.projections == 0:
                near = (extra.reshape(-1) > 0) & est.measured
                est.lo[near] -= extra.reshape(-1)[near]
                est.hi[near] += extra.reshape(-1)[near]
                est.crossed[near] += 1
    gradients = tuple(judge(est, tol) for est in estimates)
    return _finish(spec, start, method, engine.forward_passes, tol, gradients, forward_result, contract, notes)


def _engine(layer: ConvLayer, data: CheckData, spec: CheckSpec, notes: list) -> tuple[Engine, Tolerance]:
    """The finite-difference engine, in float64 whenever the layer computes in float64 when given it.

    A float32 layer is differenced at the same float32-valued point with float64 arrays (see
    ``convcheck.tolerance``), unless it returns float32 anyway; then float32 differences are all there is.
    """
    forward = lambda x, w, b: layer.forward(x, w, b)[0]  # noqa: E731 - the engine only needs the output
    arrays: tuple[np.ndarray, ...] = (data.x, data.w, data.b)
    numeric_dtype = spec.dtype
    if spec.dtype is not DType.FLOAT64:
        promoted = tuple(a.astype(np.float64) for a in arrays)
        if np.asarray(forward(*promoted)).dtype == np.float64:
            arrays, numeric_dtype = promoted, DType.FLOAT64
            notes.append(f"{spec.dtype.value} layer differenced in float64 at the same point")
        else:
            notes.append(f"the layer returns {spec.dtype.value} for float64 input: differenced in {spec.dtype.value}")
    tol = resolve(numeric_dtype, spec.eps, spec.rtol, spec.atol)
    hook = _progress_hook.get()
    planned = planned_passes(spec)[1] + 2
    progress = None if hook is None else (lambda done: hook(spec.name, done, max(planned, done)))
    engine = Engine(
        forward=forward,
        x=arrays[0],
        w=arrays[1],
        b=arrays[2],
        g=data.dout.astype(np.float64),
        shape=spec.shape,
        activation=spec.activation,
        eps=tol.eps,
        unit_roundoff=unit_roundoff(numeric_dtype),
        workers=parallel.engine_workers(layer, spec.shape),
        progress=progress,
    )
    return engine, tol


def _rounding_kinks(data: CheckData, spec: CheckSpec) -> tuple[np.ndarray, ...] | None:
    """Widening for kinks that only the layer's own rounding straddles (float32 layers differenced in float64).

    Where a pre-activation lies within float32 rounding of ReLU's kink, the float32 layer may take either piece
    while the float64 differences see only one. Each such output can move an entry's derivative by at most
    ``|G|·|partner|`` (its slope on the other piece is 0, or leaky's), so the interval of the entries it feeds
    widens by that much on each side — summed by the linear layer's backward on absolute values — and they are
    counted as kinks.
    Returns ``(dx, dw, db)``-shaped widenings, or None when no output is that close to a kink.
    """
    if spec.activation not in (Activation.RELU, Activation.LEAKY_RELU):
        return None
    shape = spec.shape
    x, w, b = (a.astype(np.float64) for a in (data.x, data.w, data.b))
    z = reference.conv2d(x, w, b, shape.stride, shape.padding)
    sigma = rounding_sigma(data.x, data.w, data.b, z, shape.stride, shape.padding, unit_roundoff(spec.dtype))
    near = np.abs(z) <= SAFETY * sigma
    if not near.any():
        return None
    linear = MatrixConvLayer(shape.stride, shape.padding, Activation.NONE)
    _, cache = linear.forward(np.abs(x), np.abs(w), np.abs(b))
    return linear.backward(np.abs(data.dout.astype(np.float64)) * near, cache)


def _estimate(
    engine: Engine,
    method: Method,
    grads: tuple[np.ndarray, ...],
    noise: tuple[np.ndarray, ...],
    tol: Tolerance,
    spec: CheckSpec,
    notes: list,
    forward_ok: bool = True,
) -> tuple[list[Estimate], Method]:
    rng = np.random.default_rng([spec.seed, 1])
    if method is Method.FULL:
        try:
            if not forward_ok:  # a wrong forward may also mix batch items or channels: test before grouping
                engine.check_separable()
            return [engine.grouped(t, grads[t], noise[t], tol.rtol, tol.atol) for t in range(3)], method
        except NotLocalError as exc:
            fallback = Method.ENTRYWISE if entrywise_passes(spec.shape) <= 20_000 else Method.SAMPLED
            notes.append(f"grouped differences not valid ({exc}); fell back to {fallback.value}")
            method = fallback
    if method is Method.ENTRYWISE:
        return [engine.entrywise(t, grads[t], noise[t], tol.rtol, tol.atol) for t in range(3)], method
    if method is Method.SAMPLED:
        estimates = []
        for t, grad in enumerate(grads):
            chosen = rng.choice(grad.size, size=min(SAMPLED_ENTRIES, grad.size), replace=False)
            estimates.append(engine.entrywise(t, grad, noise[t], tol.rtol, tol.atol, np.sort(chosen)))
        return estimates, method
    if method is Method.DIRECTIONAL:
        return [engine.directional(t, grads[t], noise[t], DIRECTIONAL_PROJECTIONS, rng) for t in range(3)], method
    raise ValueError(f"unknown method {method!r}")  # pragma: no cover


def _finish(
    spec: CheckSpec,
    start: float,
    method: Method | None,
    passes: int,
    tol: Tolerance,
    gradients: tuple[TensorResult, ...],
    forward: ForwardResult | None,
    contract: tuple[str, ...],
    notes: list | tuple,
) -> CheckResult:
    ok = not contract and (forward is None or forward.ok) and len(gradients) == 3 and all(g.passed for g in gradients)
    result = CheckResult(
        name=spec.name,
        status=Status.PASS if ok else Status.FAIL,
        spec=spec,
        seconds=time.perf_counter() - start,
        method=method,
        forward_passes=passes,
        tolerance=tol,
        gradients=gradients,
        forward=forward,
        contract=contract,
        notes=tuple(notes),
    )
    if ok:
        return result
    return dataclasses.replace(result, diagnosis=diagnose(result))
