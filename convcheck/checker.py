"""Run one check: make seeded data, run the layer, compare its forward and gradients with the references."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

from convcheck import parallel, reference
from convcheck.compare import judge, judge_forward
from convcheck.data import CheckData, make_data
from convcheck.layer import MatrixConvLayer, output_function, stacked_bytes, stacked_groups
from convcheck.methods import (
    DirectionalBeside,
    ProjectionBound,
    choose_method,
    final_bounds,
    forward_seconds,
    measure,
    method_rng,
    planned_passes,
    projection_bounds,
    projection_spreads,
)
from convcheck.numeric import Engine, Estimate
from convcheck.numeric.engine import ManyFn
from convcheck.points import PointSample
from convcheck.protocol import ConvLayer
from convcheck.results import (
    CheckResult,
    Finding,
    ForwardResult,
    Note,
    NoteKind,
    Severity,
    Status,
    TensorResult,
    Tolerance,
    error_result,
)
from convcheck.spec import Activation, CheckSpec, ConvShape, DType, Method
from convcheck.tolerance import SAFETY, analytic_noise, resolve, rounding_sigma, unit_roundoff
from convcheck.user.adapter import UserLayer
from convcheck.user.contract import exercise
from convcheck.user.errors import UserCodeError, describe_exception
from convcheck.user.loader import load_layer

DEFAULT_TIMEOUT = 300.0  # seconds per check, when the config sets none


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


MEMORY_FRACTION = 0.5  # default max_memory: this share of the machine's physical memory


def default_max_memory() -> int:
    """Half of this machine's physical memory (or 8 GiB where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * MEMORY_FRACTION)
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX systems
        return 8 * 2**30


def estimated_memory(spec: CheckSpec) -> int:
    """Bytes a check of ``spec`` needs at its peak, by a model of the arrays it holds at once.

    The built-in layer's im2col matrix ``(N·∏O, ∏k·C_in)`` appears in the forward, its cache and the
    magnitude computations (about 4 copies, float64); the engine holds about 16 output-sized float64 arrays
    (f0, f±, dout, noise model, differences) and a few copies of x and w; a small built-in layer's perturbed
    points are stacked, several to a call (``layer.stacked_bytes``); a large one's are measured on every core
    (``parallel.engine_workers``), each further thread holding about 3 im2col matrices and 4 outputs of its own
    (its workspace, the caches of its calls).
    """
    s = spec.shape
    positions = math.prod(s.out_shape[:-1])
    cols = positions * math.prod(s.kernel) * s.in_depth
    outputs = positions * s.out_depth
    builtin = spec.impl is None
    stacked = stacked_bytes(s) if builtin else 0
    threads = parallel.engine_workers(MatrixConvLayer.for_shape(s), s) if builtin else 1
    if spec.method is Method.DIRECTIONAL:
        threads = min(threads, 2)  # its steps run side by side, on two threads at most
    held = 4 * cols + 16 * outputs + 6 * math.prod(s.x_shape) + 6 * math.prod(s.w_shape)
    return 8 * (held + (threads - 1) * (3 * cols + 4 * outputs)) + stacked


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
        return error_result(spec, time.perf_counter() - start, "; ".join(problems))
    needed, allowed = estimated_memory(spec), spec.max_memory if spec.max_memory is not None else default_max_memory()
    if needed > allowed:
        return error_result(
            spec,
            time.perf_counter() - start,
            f"this layer's check would need about {needed / 2**30:.1f} GiB of memory, more than max_memory "
            f"({allowed / 2**30:.1f} GiB); make the layer smaller (batch, in_height, in_width), or raise "
            "max_memory in the config (bytes, or a string such as '32GB')",
        )
    try:
        return _run(spec, layer, data, start)
    except UserCodeError as exc:
        if spec.expected_error is not None and spec.expected_error.matches(exc.exc_lineage, str(exc.exc_message)):
            return refused(spec, time.perf_counter() - start, exc)
        return error_result(spec, time.perf_counter() - start, describe_exception(exc))
    except Exception as exc:  # noqa: BLE001 - any failure inside a check becomes that check's error row
        return error_result(spec, time.perf_counter() - start, describe_exception(exc))


def _run(spec: CheckSpec, layer: ConvLayer | None, data: CheckData | None, start: float) -> CheckResult:
    data = make_data(spec) if data is None else data
    layer = load_layer(spec) if layer is None else layer  # the built-in layer when spec.impl is None
    # The quick tier of convcheck's own layer makes few calls, each too small to keep BLAS's threads busy: on two
    # cores or more its steps run side by side on two threads instead, and its products run on the same number of
    # BLAS threads either way, so that its results do not depend on which (``parallel.Beside``). A small layer's
    # products run on one BLAS thread (``parallel.BLAS_ONE_THREAD_MACS``).
    blas = parallel.check_blas_threads(layer, spec.shape, spec.method is Method.DIRECTIONAL)
    with parallel.limited_blas(blas) if blas is not None else contextlib.nullcontext():
        return _checked(spec, layer, data, start)


def _checked(spec: CheckSpec, layer: ConvLayer, data: CheckData, start: float) -> CheckResult:
    """``run_check`` of ``layer`` at the point ``data``, its shape already known to be possible."""
    points = _watch_points(layer, spec)
    forward_tol = resolve(spec.dtype, spec.eps, spec.rtol, spec.atol)
    if spec.method is Method.DIRECTIONAL and parallel.side_by_side_pays(layer, spec.shape):
        done = _quick_side_by_side(spec, layer, data, forward_tol)
    else:
        done = _measured(spec, layer, data, forward_tol)
    if done.gradients is None:
        return _finish(spec, start, None, 0, forward_tol, (), done.forward, done.contract, [])
    measured = done.gradients
    estimates, notes = measured.estimates, list(measured.notes)
    widen = _rounding_kinks(data, spec) if measured.engine.x.dtype != data.x.dtype else None
    if widen is not None:
        estimates = [est.widened(extra) for est, extra in zip(estimates, widen, strict=True)]
    gradients = tuple(judge(est, measured.tol) for est in estimates)
    forward_result, audited = audit_points(spec, points, done.forward, forward_tol)
    notes.extend(audited)
    if not (forward_result is None or forward_result.ok):
        notes.append(own_forward_note(gradients))
    passes = measured.engine.forward_passes
    return _finish(spec, start, measured.method, passes, measured.tol, gradients, forward_result, done.contract, notes)


@dataclass(frozen=True)
class _Estimates:
    """A check's gradients as measured, before they are judged: the engine that measured them, the method used,
    the tolerances, one estimate per tensor and the notes on how."""

    engine: Engine
    method: Method
    tol: Tolerance
    estimates: list[Estimate]
    notes: tuple[Note, ...] = ()


@dataclass(frozen=True)
class _Measured:
    """What a check has found before it judges: the contract's findings, the forward verdict (None when the layer
    gave no output) and the gradients' estimates (None when the layer gave no gradients)."""

    contract: tuple[Finding, ...]
    forward: ForwardResult | None
    gradients: _Estimates | None = None


def _measured(spec: CheckSpec, layer: ConvLayer, data: CheckData, forward_tol: Tolerance) -> _Measured:
    """The layer contract, the forward verdict and the measurements by ``spec``'s method, one after another."""
    outcome = exercise(layer, data.x, data.w, data.b, data.dout)
    out, grads = outcome.out, outcome.gradients
    window = spec.shape.window
    # Σ|x|·|w| + |b| once: the rounding model of the forward verdict and of the engine both use it.
    x64, w64, b64 = (a.astype(np.float64, copy=False) for a in (data.x, data.w, data.b))  # read, never written
    scale = reference.magnitude(x64, w64, b64, window) if out is not None or grads is not None else None
    verdict = None if out is None else forward_verdict(spec, data.x, data.w, data.b, out, forward_tol, scale)
    if grads is None:
        return _Measured(outcome.problems, verdict)
    assert scale is not None
    method, notes = spec.method, []
    if method is Method.AUTO:
        # Copies: a layer may modify its arguments (the contract reports that; the point must stay as it is).
        seconds = forward_seconds(
            lambda: layer.forward(data.x.copy(), data.w.copy(), data.b.copy()), elsewhere=_child_clock(layer)
        )
        method, note = choose_method(spec, seconds)
        notes.append(note)
    engine, tol, precision = _engine(layer, data, spec, out, scale)
    notes += [] if precision is None else [precision]
    noise = _rounding_bounds(data, spec, grads, scale, method)
    forward_ok = verdict is None or verdict.ok
    estimates, method, fallback = measure(engine, method, grads, noise, tol, spec, forward_ok)
    return _Measured(outcome.problems, verdict, _Estimates(engine, method, tol, estimates, (*notes, *fallback)))


def _quick_side_by_side(spec: CheckSpec, layer: ConvLayer, data: CheckData, forward_tol: Tolerance) -> _Measured:
    """``_measured`` for the quick tier of convcheck's own layer on two threads: beside the layer contract's calls,
    the magnitude and the reference convolution, the engine's setup (from the contract's first output, as soon as
    there is one), the directions and the weights' and bias's passes and their bounds
    (``methods.DirectionalBeside``); after the contract, the input's passes and the forward verdict. The same steps
    and results as ``_measured``'s, bit for bit (BLAS held to the same threads in both, wherever its threads can be
    set), in about 0.65 of its time on 2 cores."""
    window, u = spec.shape.window, unit_roundoff(spec.dtype)
    x64, w64, b64 = (a.astype(np.float64, copy=False) for a in (data.x, data.w, data.b))  # read, never written
    first: Future[np.ndarray | None] = Future()  # the contract's first output: the engine's first evaluation
    with parallel.side_by_side() as beside:
        with _answered(first):  # no usable output, or a failure: the engine then evaluates at the point twice
            scale = beside.start(lambda: reference.magnitude(x64, w64, b64, window))
            expected = beside.start(lambda: reference_forward(spec, x64, w64, b64))
            built = beside.start(lambda: _engine(layer, data, spec, first.result(), scale()))
            spreads = beside.start(lambda: projection_spreads(data.x, data.w, data.dout, spec, u, scale()))
            directional = DirectionalBeside(lambda: built()[0], spreads, method_rng(spec), beside)
            outcome = exercise(layer, data.x, data.w, data.b, data.dout, first_output=first.set_result)
        out, grads = outcome.out, outcome.gradients
        if grads is not None:
            directional.measure_input()
        verdict = None
        if out is not None:
            verdict = forward_verdict(spec, data.x, data.w, data.b, out, forward_tol, scale(), expected())
        if grads is None:
            return _Measured(outcome.problems, verdict)
        estimates = directional.estimates(grads, final_bounds(grads, u))
        engine, tol, precision = built()
        notes = () if precision is None else (precision,)
        return _Measured(outcome.problems, verdict, _Estimates(engine, Method.DIRECTIONAL, tol, estimates, notes))


@contextmanager
def _answered(future: Future[np.ndarray | None]) -> Iterator[None]:
    """Within the block, ``future`` may get its result; when the block ends, however it ends (normally, by an
    exception, by a timeout's signal), it has one: None if nothing set it, so that no call waiting on it waits for
    ever."""
    try:
        yield
    finally:
        if not future.done():
            future.set_result(None)


def _rounding_bounds(
    data: CheckData, spec: CheckSpec, grads: tuple[np.ndarray, ...], magnitude: np.ndarray, method: Method
) -> Sequence[np.ndarray | ProjectionBound]:
    """The analytic gradients' rounding bounds: per entry (``tolerance.analytic_noise`` plus the final rounding of
    each returned entry to the layer's dtype), or for ``directional`` the same bounds' projections
    (``methods.projection_bounds``: two forwards of the linear layer instead of a forward and a backward)."""
    u = unit_roundoff(spec.dtype)
    if method is Method.DIRECTIONAL:
        return projection_bounds(data.x, data.w, data.dout, grads, spec, u, magnitude)
    bounds = analytic_noise(data.x, data.w, data.b, data.dout, spec.shape.window, u, spec.activation)
    return tuple(bound + u * np.abs(np.asarray(g, dtype=np.float64)) for bound, g in zip(bounds, grads, strict=True))


def refused(spec: CheckSpec, seconds: float, exc: UserCodeError) -> CheckResult:
    """A check the layer refused as the config says it may: ``skipped``, with the layer's words as the reason."""
    return CheckResult(
        name=spec.name,
        status=Status.SKIPPED,
        spec=spec,
        seconds=seconds,
        notes=(Note(NoteKind.REFUSED, f"refused by the layer, as the config's expected_error allows: {exc}"),),
    )


def forward_verdict(
    spec: CheckSpec,
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    out: np.ndarray,
    tol: Tolerance,
    magnitude: np.ndarray | None = None,
    expected: np.ndarray | None = None,
) -> ForwardResult:
    """The layer's output ``out: (N, OH, OW, C_out)`` at the point ``x, w, b`` against the reference convolution
    (``magnitude``: ``reference.magnitude`` at that point, ``expected``: ``reference_forward`` there, when already
    computed)."""
    shape = spec.shape
    if expected is None:
        expected = reference_forward(spec, x, w, b)
    sigma = rounding_sigma(x, w, b, expected, shape.window, unit_roundoff(spec.dtype), magnitude)
    return judge_forward(out, expected, sigma, tol)


def reference_forward(spec: CheckSpec, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The reference convolution of ``spec``'s layer at ``x, w, b``, in float64: ``(N, OH, OW, C_out)``."""
    window, activation = spec.shape.window, spec.activation
    x, w, b = (a.astype(np.float64, copy=False) for a in (x, w, b))
    return reference.forward(x, w, b, window, activation)


def _watch_points(layer: ConvLayer, spec: CheckSpec) -> PointSample | None:
    """A user's layer offers every forward call to a sample that ``audit_points`` compares with the reference."""
    if not isinstance(layer, UserLayer):
        return None
    layer.points = PointSample(spec)
    return layer.points


def _child_clock(layer: ConvLayer) -> Callable[[], float] | None:
    """CPU seconds spent in the process that runs the layer, when that is not this one."""
    return getattr(layer, "child_seconds", None)


def audit_points(
    spec: CheckSpec, points: PointSample | None, forward: ForwardResult | None, tol: Tolerance
) -> tuple[ForwardResult | None, list[Note]]:
    """The forward verdict with the sampled calls (``convcheck.points``) judged too: the first that
    disagrees with the reference replaces a passing verdict, with a note saying at which call it was found."""
    if points is None or forward is None or not forward.ok:
        return forward, []
    for point in sorted(points.points, key=lambda p: p.number):
        if point.out.shape != tuple(spec.shape.out_shape):
            continue
        verdict = forward_verdict(spec, point.x, point.w, point.b, point.out, tol)
        if not verdict.ok:
            note = Note(
                NoteKind.OTHER,
                f"the forward agrees with the reference convolution at the check's point but not at forward call "
                f"{point.number} of {points.calls} (one of {len(points.points)} calls compared at random): a forward "
                "correct only where it is first inspected",
            )
            return verdict, [note]
    return forward, []


def own_forward_note(gradients: tuple[TensorResult, ...]) -> Note:
    """Why a backward can pass next to a failed forward: the differences are taken of the layer's own forward."""
    names = ", ".join(g.name for g in gradients)
    return Note(
        NoteKind.OWN_FORWARD,
        f"the forward disagrees with the reference convolution, so the {names} verdicts compare the backward with "
        "differences of the layer's own (wrong) forward: fix the forward first",
    )


def _engine(
    layer: ConvLayer,
    data: CheckData,
    spec: CheckSpec,
    out: np.ndarray | None,
    magnitude: np.ndarray | None,
) -> tuple[Engine, Tolerance, Note | None]:
    """The finite-difference engine, in float64 whenever the layer computes in float64 when given it, its
    tolerances, and a note saying how a float32 layer was differenced. ``out``: the layer's output at the point
    (the contract's first call), the engine's first evaluation there unless the arrays are promoted (None: the
    engine makes both of its evaluations there); ``magnitude``: ``reference.magnitude`` at the point.

    A float32 layer is differenced at the same float32-valued point with float64 arrays (see
    ``convcheck.tolerance``), unless it returns float32 anyway; then float32 differences are all there is.
    """
    # The engine only needs the output: the built-in layer gives it without building a cache.
    forward = output_function(layer) or (lambda x, w, b: layer.forward(x, w, b)[0])
    arrays: tuple[np.ndarray, ...] = (data.x, data.w, data.b)
    numeric_dtype, note = spec.dtype, None
    if spec.dtype is not DType.FLOAT64:
        promoted = tuple(a.astype(np.float64) for a in arrays)
        if np.asarray(forward(*promoted)).dtype == np.float64:
            arrays, numeric_dtype = promoted, DType.FLOAT64
            note = Note(NoteKind.PRECISION, f"{spec.dtype.value} layer differenced in float64 at the same point")
        else:
            note = Note(
                NoteKind.PRECISION,
                f"the layer returns {spec.dtype.value} for float64 input: differenced in {spec.dtype.value}",
            )
    tol = resolve(numeric_dtype, spec.eps, spec.rtol, spec.atol)
    hook = _progress_hook.get()
    planned = planned_passes(spec)[1] + 2
    progress = None if hook is None else (lambda done: hook(spec.name, done, max(planned, done)))
    workers = parallel.engine_workers(layer, spec.shape)
    many, batch = _batches(layer, spec)
    if many is None and workers == 1 and output_function(layer) is not None:
        many, batch = _stacked(layer, spec.shape)
    engine = Engine(
        forward=forward,
        x=arrays[0],
        w=arrays[1],
        b=arrays[2],
        g=data.dout.astype(np.float64, copy=False),  # the engine only reads it
        shape=spec.shape,
        activation=spec.activation,
        eps=tol.eps,
        unit_roundoff=unit_roundoff(numeric_dtype),
        workers=workers,
        progress=progress,
        many=many,
        batch=batch,
        base=out if arrays[0] is data.x else None,
        magnitude=magnitude,
    )
    return engine, tol, note


def _batches(layer: ConvLayer, spec: CheckSpec) -> tuple[ManyFn | None, int]:
    """A layer in another process measures batches of perturbed points per request, on ``fanout_workers``."""
    forward_many = getattr(layer, "forward_many", None)
    if forward_many is None:
        return None, 1
    workers = parallel.fanout_workers(spec.shape, planned_passes(spec)[1])
    return functools.partial(forward_many, workers=workers), int(layer.batch_groups())  # type: ignore[attr-defined]


def _stacked(layer: ConvLayer, shape: ConvShape) -> tuple[ManyFn | None, int]:
    """The built-in layer's ``outputs`` (several perturbed points per forward pipeline) and how many groups per
    request, for a layer small enough that per-call overhead outweighs its forward; else (None, 1)."""
    groups = stacked_groups(shape)
    if groups < 2 or not isinstance(layer, MatrixConvLayer):
        return None, 1
    return layer.outputs, groups


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
    z = reference.convolve(x, w, b, shape.window)
    sigma = rounding_sigma(data.x, data.w, data.b, z, shape.window, unit_roundoff(spec.dtype))
    near = np.abs(z) <= SAFETY * sigma
    if not near.any():
        return None
    linear = MatrixConvLayer(activation=Activation.NONE, window=shape.window)
    _, cache = linear.forward(np.abs(x), np.abs(w), np.abs(b))
    return linear.backward(np.abs(data.dout.astype(np.float64)) * near, cache)


def _finish(
    spec: CheckSpec,
    start: float,
    method: Method | None,
    passes: int,
    tol: Tolerance,
    gradients: tuple[TensorResult, ...],
    forward: ForwardResult | None,
    contract: tuple[Finding, ...],
    notes: list[Note],
) -> CheckResult:
    failing = [f for f in contract if spec.strict or f.severity is Severity.ERROR]  # warnings pass unless strict
    ok = not failing and (forward is None or forward.ok) and len(gradients) == 3 and all(g.passed for g in gradients)
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
    # Imported here: the rules and the catalogue of bugs they compare with are a sixth of a command's start-up,
    # and only a check that fails needs them.
    from convcheck.diagnosis import diagnose

    return dataclasses.replace(result, diagnosis=diagnose(result))
