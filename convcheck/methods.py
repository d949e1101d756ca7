"""How a check measures its gradients: the method ``auto`` resolves to, what each method costs, and running it.

``full`` measures every entry by grouped differences (``numeric.groups``), ``entrywise`` one entry at a time,
``sampled`` a seeded random subset of entries per tensor, ``directional`` a few random projections per tensor.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from convcheck.layer import MatrixConvLayer
from convcheck.numeric import Engine, Estimate, NotLocalError, entrywise_passes, grouped_passes
from convcheck.numeric.audit import AUDIT_ENTRIES, audit_entries, disagreement
from convcheck.numeric.engine import along, directions, measure_directions, taken
from convcheck.numeric.groups import Group
from convcheck.numeric.kinks import Projection
from convcheck.parallel import Beside
from convcheck.results import Note, NoteKind, Tensor, Tolerance
from convcheck.spec import Activation, CheckSpec, Method
from convcheck.tolerance import SECOND_DERIVATIVE_BOUND


@dataclass(frozen=True)
class ProjectionBound:
    """The rounding bound of an analytic gradient's projection onto a direction ``v`` (flat, like the tensor):
    ``spread(v) + Σ|v_i|·final_i``, the rounding the layer's sums spread onto the gradient plus each entry's final
    rounding (``projection_spreads``, ``final_bounds``)."""

    spread: Callable[[np.ndarray], float]  # ``Spread``
    final: np.ndarray  # (size,) per entry

    def __call__(self, v: np.ndarray) -> float:
        return float(self.spread(v) + np.abs(v) @ self.final)


#: A projection's spread: ``v ↦ Σ|v_i|·analytic_noise_i`` (``projection_spreads``), one per tensor (``Spreads``).
Spread = Callable[[np.ndarray], float]
Spreads = tuple[Spread, Spread, Spread]

AUTO_BUDGET = 60.0  # seconds of forward passes ``auto`` may spend on an every-entry check
SAMPLED_ENTRIES = 64  # entries per tensor for ``sampled``
DIRECTIONAL_PROJECTIONS = (
    1  # random Gaussian projections per tensor for ``directional`` (one suffices: ``Engine.directional``)
)
ENTRYWISE_FALLBACK_LIMIT = 20_000  # passes above which a failed grouping falls back to ``sampled``, not ``entrywise``
WARM_CALLS = 3  # timed forward calls behind ``auto``'s cost estimate (after the contract run has warmed the layer)

#: The clock ``auto`` times forward calls with: this process's CPU time, so that other processes' load on a busy
#: machine does not make a layer look slower than it is (wall time under load was 5× the quiet figure). Tests
#: replace it to simulate a slow machine.
CLOCK: Callable[[], float] = time.process_time


def forward_seconds(call: Callable[[], object], elsewhere: Callable[[], float] | None = None) -> float:
    """Seconds one warm forward call takes: the median of ``WARM_CALLS`` calls timed by ``CLOCK``, plus
    ``elsewhere()``'s CPU seconds (the process a user's layer runs in, when it is not this one).

    The first call of a check is cold (caches, lazy imports, page faults on fresh buffers) and is never used;
    the median ignores one outlier either way.
    """
    times = []

    def clock() -> float:
        return CLOCK() + (elsewhere() if elsewhere is not None else 0.0)

    for _ in range(WARM_CALLS):
        start = clock()
        call()
        times.append(clock() - start)
    return statistics.median(times)


def choose_method(spec: CheckSpec, seconds_per_forward: float) -> tuple[Method, Note]:
    """Resolve ``auto``: an every-entry method when its estimated time fits ``AUTO_BUDGET``, else ``sampled``.

    ``seconds_per_forward`` is a warm estimate (``forward_seconds``); the note says which estimate was used.
    """
    grouped = full_passes(spec)
    entrywise = entrywise_passes(spec.shape)
    method, passes = (Method.FULL, grouped) if grouped <= entrywise else (Method.ENTRYWISE, entrywise)
    estimate = passes * seconds_per_forward
    basis = f"{seconds_per_forward * 1e3:.3g} ms per forward, the median CPU time of {WARM_CALLS} warm calls"
    if estimate <= AUTO_BUDGET:
        return method, Note(
            NoteKind.METHOD_CHOSEN,
            f"auto chose {method.value}: {passes} forward passes, about {estimate:.1f} s ({basis})",
        )
    return Method.SAMPLED, Note(
        NoteKind.METHOD_CHOSEN,
        f"auto chose sampled ({SAMPLED_ENTRIES} entries per tensor): checking every entry would take "
        f"{passes} forward passes, about {estimate:.0f} s (budget {AUTO_BUDGET:.0f} s; {basis})",
    )


def planned_passes(spec: CheckSpec) -> tuple[str, int]:
    """The method a spec will use and its forward passes, without running anything (for ``validate``).

    ``auto`` is shown as the every-entry method it prefers; at run time it falls back to ``sampled`` when the
    measured forward time says that would exceed ``AUTO_BUDGET``.
    """
    shape = spec.shape
    method = spec.method
    if method is Method.AUTO:
        method = Method.FULL if full_passes(spec) <= entrywise_passes(shape) else Method.ENTRYWISE
        label = f"auto→{method.value}"
    else:
        label = method.value
    sizes = (math.prod(shape.x_shape), math.prod(shape.w_shape), math.prod(shape.b_shape))
    passes = {
        Method.FULL: full_passes(spec),
        Method.ENTRYWISE: entrywise_passes(shape),
        Method.SAMPLED: 2 * sum(min(SAMPLED_ENTRIES, size) for size in sizes),
        Method.DIRECTIONAL: 2 * 3 * DIRECTIONAL_PROJECTIONS,
    }[method]
    return label, passes


def measure(
    engine: Engine,
    method: Method,
    grads: tuple[np.ndarray, ...],
    noise: Sequence[np.ndarray | ProjectionBound],
    tol: Tolerance,
    spec: CheckSpec,
    forward_ok: bool = True,
) -> tuple[list[Estimate], Method, tuple[Note, ...]]:
    """One estimate per tensor by ``method`` (not ``auto``), the method actually used, and notes on fallbacks.

    Args:
        grads: the analytic ``(dx, dw, db)``; noise: their rounding bounds, shaped alike (for ``directional``,
            ``projection_bounds`` may give the bounds of their projections instead).
        forward_ok: False when the layer's forward disagrees with the reference; a wrong forward may also mix
            batch items or channels, so grouping is only used after testing that it does not.
    """
    rng = method_rng(spec)
    notes: tuple[Note, ...] = ()
    if method is Method.DIRECTIONAL:
        return [engine.directional(t, grads[t], noise[t], DIRECTIONAL_PROJECTIONS, rng) for t in Tensor], method, notes
    entries = _per_entry(noise)
    if method is Method.FULL:
        try:
            return grouped_and_audited(engine, grads, entries, tol, spec, forward_ok), method, notes
        except NotLocalError as exc:
            fallback = Method.ENTRYWISE if entrywise_passes(spec.shape) <= ENTRYWISE_FALLBACK_LIMIT else Method.SAMPLED
            notes = (Note(NoteKind.FALLBACK, f"grouped differences not valid ({exc}); fell back to {fallback.value}"),)
            method = fallback
    if method is Method.ENTRYWISE:
        return [engine.entrywise(t, grads[t], entries[t], tol.rtol, tol.atol) for t in Tensor], method, notes
    if method is Method.SAMPLED:
        estimates = []
        for t in Tensor:
            grad = grads[t]
            chosen = rng.choice(grad.size, size=min(SAMPLED_ENTRIES, grad.size), replace=False)
            estimates.append(engine.entrywise(t, grad, entries[t], tol.rtol, tol.atol, np.sort(chosen)))
        return estimates, method, notes
    raise ValueError(f"unknown method {method!r}")  # pragma: no cover


def method_rng(spec: CheckSpec) -> np.random.Generator:
    """The generator ``measure`` draws ``sampled``'s entries and ``directional``'s directions from."""
    return np.random.default_rng([spec.seed, 1])


class DirectionalBeside:
    """``directional`` of x, w and b for convcheck's own layer, its passes started on ``beside``'s thread before
    the analytic gradients are known (they are needed only to project them, at the end).

    On ``beside``'s thread, in this order: the engine (``built()``), the directions (drawn first, in the order x,
    w, b, as ``measure`` draws them), the weights' and bias's passes on their own copies of the parameters, and
    their bounds' spreads (``spreads()``: the linear layer's forwards) at the steps those passes took. On the
    caller's thread: the input's passes and spread (``measure_input``), and the estimates (``estimates``).

    The same directions, passes and estimates as ``measure``'s: the engine only reads its shared arrays, and each
    thread changes only its own parameters (the input's are the engine's own).
    """

    def __init__(
        self, built: Callable[[], Engine], spreads: Callable[[], Spreads], rng: np.random.Generator, beside: Beside
    ) -> None:
        self._beside, self._spreads = beside, spreads

        def prepare() -> tuple[Engine, list[list[Group]]]:
            engine = built()
            return engine, [directions(engine, t, DIRECTIONAL_PROJECTIONS, rng) for t in Tensor]

        def others() -> list[_Projected]:
            engine, _ = self._prepared()
            params = [p.copy() for p in (engine.x, engine.w, engine.b)]  # this thread's own
            return [self._measured(t, params) for t in (Tensor.WEIGHTS, Tensor.BIAS)]

        self._prepared = beside.start(prepare)
        self._others = beside.start(others)
        self._input: _Projected | None = None

    def measure_input(self) -> None:
        """The input's passes and its bound's spread, on this thread (on the engine's own parameters)."""
        self._input = self._measured(Tensor.INPUT, None)

    def estimates(self, grads: tuple[np.ndarray, ...], finals: tuple[np.ndarray, ...]) -> list[Estimate]:
        """One estimate per tensor from the analytic gradients ``(dx, dw, db)`` and each entry's final rounding
        bound, flat per tensor (``final_bounds``)."""
        if self._input is None:
            self.measure_input()
        assert self._input is not None
        engine, groups = self._prepared()
        found = [self._input, *self._others()]
        return [
            along(engine, groups[t], grads[t], ProjectionBound(known, finals[t]), measured, steps)
            for t, (measured, steps, known) in zip(Tensor, found, strict=True)
        ]

    def _measured(self, tensor: Tensor, params: list[np.ndarray] | None) -> _Projected:
        engine, groups = self._prepared()
        measured = measure_directions(engine, groups[tensor], params)
        steps = taken(engine, groups[tensor], [projection.eps for projection in measured])
        return measured, steps, self._spread(tensor, steps)

    def _spread(self, tensor: Tensor, steps: list[np.ndarray]) -> Spread:
        """``spreads()[tensor]``, worked out now at each of ``steps`` (the very arrays ``along`` projects onto)."""
        spread = self._spreads()[tensor]
        values = [spread(v) for v in steps]

        def known(v: np.ndarray) -> float:
            for step, value in zip(steps, values, strict=True):
                if step is v:
                    return value
            return spread(v)

        return known


#: One tensor's projections as ``DirectionalBeside`` measured them: the measurements, the steps they took and the
#: spread of the bound, known at those steps.
_Projected = tuple[list[Projection], list[np.ndarray], Spread]


def _per_entry(noise: Sequence[np.ndarray | ProjectionBound]) -> tuple[np.ndarray, ...]:
    if any(callable(bound) for bound in noise):
        raise ValueError("the every-entry methods need a rounding bound per entry, not per projection")
    return tuple(np.asarray(bound) for bound in noise)


def projection_bounds(
    x: np.ndarray,
    w: np.ndarray,
    dout: np.ndarray,
    grads: tuple[np.ndarray, ...],
    spec: CheckSpec,
    u: float,
    magnitude: np.ndarray,
) -> tuple[ProjectionBound, ProjectionBound, ProjectionBound]:
    """``v ↦ Σ|v_i|·bound_i`` per tensor, for ``bound = tolerance.analytic_noise(...) + u·|grad|``, without the
    per-entry bounds: ``directional`` only needs their projections (``projection_spreads``, ``final_bounds``)."""
    spreads, finals = projection_spreads(x, w, dout, spec, u, magnitude), final_bounds(grads, u)
    return (
        ProjectionBound(spreads[0], finals[0]),
        ProjectionBound(spreads[1], finals[1]),
        ProjectionBound(spreads[2], finals[2]),
    )


def final_bounds(grads: tuple[np.ndarray, ...], u: float) -> tuple[np.ndarray, ...]:
    """Each returned entry's final rounding to the layer's dtype, ``u·|grad|``, flat per tensor."""
    return tuple(u * np.abs(np.asarray(g, dtype=np.float64)).reshape(-1) for g in grads)


def projection_spreads(
    x: np.ndarray, w: np.ndarray, dout: np.ndarray, spec: CheckSpec, u: float, magnitude: np.ndarray
) -> Spreads:
    """``v ↦ Σ|v_i|·analytic_noise_i`` for x, w and b: the rounding the layer's sums spread onto each gradient,
    projected, from the point alone (not the gradients).

    ``tolerance.analytic_noise``'s bounds are ``Jᵀ·H`` for the linear layer ``J`` on ``|x|``, ``|w|`` (its backward
    of ``H = |G|·(u·√m + c·σ_z)``, ``m`` the terms per entry, ``c·σ_z`` the curvature part), so
    ``⟨|v|, Jᵀ·H⟩ = ⟨H, J·|v|⟩``: one forward of ``(|v|, |w|)`` for the input, of ``(|x|, |v|)`` for the weights,
    and a per-channel sum for the bias, instead of a forward and a backward. ``magnitude``:
    ``reference.magnitude`` at the point (``Σ|x|·|w| + |b|``, which sets ``σ_z``).
    """
    shape = spec.shape
    window = shape.window
    linear = MatrixConvLayer(activation=Activation.NONE, window=window)
    ax, aw, ag = (np.abs(np.asarray(a, dtype=np.float64)) for a in (x, w, dout))
    kernel, c_out = w.shape[:-2], w.shape[-1]
    positions = math.prod(dout.shape[:-1])
    windows = (min(k, (k - 1) * d // s + 1) for k, s, d in zip(kernel, window.strides, window.dilations, strict=True))
    per_input = math.prod(windows) * (c_out // window.groups)
    curvature = SECOND_DERIVATIVE_BOUND.get(spec.activation)
    curved = 0.0 if curvature is None else curvature * u * math.sqrt(math.prod(w.shape[:-1]) + 1) * magnitude
    weight_x, weight_w = ag * (u * math.sqrt(per_input) + curved), ag * (u * math.sqrt(positions) + curved)
    per_channel = weight_w.reshape(-1, c_out).sum(axis=0)
    no_bias = np.zeros(0)

    def input_spread(v: np.ndarray) -> float:
        moved = linear.forward(np.abs(v).reshape(ax.shape), aw, no_bias)[0]
        return np.sum(weight_x * moved)

    def weights_spread(v: np.ndarray) -> float:
        moved = linear.forward(ax, np.abs(v).reshape(aw.shape), no_bias)[0]
        return np.sum(weight_w * moved)

    def bias_spread(v: np.ndarray) -> float:
        return np.abs(v) @ per_channel if v.size else 0.0

    return input_spread, weights_spread, bias_spread


def grouped_and_audited(
    engine: Engine,
    grads: tuple[np.ndarray, ...],
    noise: tuple[np.ndarray, ...],
    tol: Tolerance,
    spec: CheckSpec,
    forward_ok: bool,
) -> list[Estimate]:
    """Every entry of every tensor by grouped differences, kept only when proven for this layer at this point.

    The structural tests run on the way (locality per group; batch and channel separability first when the
    forward is wrong, since a wrong forward may mix them), then ``numeric.audit`` compares ``AUDIT_ENTRIES``
    seeded random entries per tensor with plain per-entry differences.

    Raises:
        NotLocalError: a structural test or the audit shows grouping is not valid for this layer.
    """
    if not forward_ok:
        engine.check_separable()
    estimates = [engine.grouped(t, grads[t], noise[t], tol.rtol, tol.atol) for t in Tensor]
    rng = np.random.default_rng([spec.seed, 2])
    for t in Tensor:
        entries = audit_entries(grads[t].size, rng)
        single = engine.entrywise(t, grads[t], noise[t], tol.rtol, tol.atol, entries)
        found = disagreement(estimates[t], single, entries, tol.rtol, tol.atol)
        if found is not None:
            raise NotLocalError(f"an audit of {len(entries)} entries per tensor disagrees at {found}")
    return estimates


def full_passes(spec: CheckSpec) -> int:
    """Forward passes of an every-entry grouped check, its audit included (before kink retries)."""
    return grouped_passes(spec.shape) + audit_passes(spec)


def audit_passes(spec: CheckSpec) -> int:
    """Forward passes the audit of a grouped check adds (two per audited entry, before kink retries)."""
    shape = spec.shape
    sizes = (math.prod(shape.x_shape), math.prod(shape.w_shape), math.prod(shape.b_shape))  # no bias: (0,)
    return 2 * sum(min(AUDIT_ENTRIES, size) for size in sizes)
