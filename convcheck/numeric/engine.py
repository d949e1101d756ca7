"""Finite-difference gradients of ``L = Σ out ⊙ G``: every entry, from few forward passes, kinks handled.

Why one random ``G`` suffices. The analytic gradients are ``backward(G) = Jᵀ·G``. A wrong backward computes some
other linear map ``Bᵀ·G``; it agrees with ``Jᵀ·G`` on a random Gaussian ``G`` only if ``(B − J)ᵀ·G = 0``, which has
probability zero unless ``B = J``. So one ``G``, checked in every entry, is as strong as the full Jacobian.

Grouped perturbation (column grouping for sparse Jacobians, Curtis, Powell & Reid 1974; ``numeric.groups``):
entries whose windows never share an output are perturbed together, and each output's change is credited to the
one perturbed entry in its window, its *owner*; summing ``G ⊙ Δout`` per owner gives every owner's derivative.
Hence ``2·(2·∏k·C_in/groups + 1)`` forward passes for every entry of dx, dw and db (``2·(2·k²·C_in + 1)`` for the
seed's layer), whatever N and the spatial sizes are; ``numeric.groups`` derives the grouping and its lower bound.

The engine checks that assumption: outputs whose window holds no perturbed entry must not move beyond rounding.
If they do, the forward is not local (not a convolution) and the caller falls back to per-entry differences.

Kinks (``numeric.reduce``): an entry fed by outputs whose perturbation crossed an activation kink is judged against
the interval its one-sided differences span; entries whose verdict hinges on a crossing are re-measured once with
a step 16× smaller; what still straddles is counted as a kink. A projection (``directional``) steps every entry
of a tensor, so some output almost always crosses, and its interval is then far wider than its rounding noise;
a crossed projection is re-measured with steps 16× shorter each, a bounded number of times, until no output
crosses (``numeric.kinks``).

Speed. The forward passes dominate; around them each group costs a few passes over ``out``-sized arrays. Groups are
independent, so with ``workers > 1`` they are measured on that many threads (``convcheck.parallel``), each with its
own copy of the parameters, and stored in their original order: the estimate does not depend on ``workers``.
A layer whose forward runs in another process (a user's layer) may instead offer ``many``: the outputs of a whole
batch of perturbed points from one request (``numeric.fanout`` measures them on several processes there); the
engine reduces them in the groups' order, exactly as if it had made the calls one at a time. The built-in layer
offers the same for small layers (``MatrixConvLayer.outputs``: a batch's points in one numpy pipeline, answered as
one stacked array), where a call's Python and numpy overhead outweighs its arithmetic; the engine then takes the
batch's passes over the outputs once over the stack too (``Reductions.exact_many``), bit for bit as group by group.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convcheck import parallel
from convcheck.bits import same_bits
from convcheck.numeric.fanout import Point
from convcheck.numeric.groups import Group, Ownership, single_entry_groups, tensor_groups
from convcheck.numeric.kinks import RETRY_SHRINK, Projection, shortened
from convcheck.numeric.reduce import Measurement, NotLocalError, Reductions, exact_many
from convcheck.results import Tensor
from convcheck.spec import Activation, ConvShape
from convcheck.tolerance import SAFETY, rounding_sigma

ForwardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
#: ``many(params, points)``: the outputs of forward at each of ``points`` (changes of the base ``params``, x, w and
#: b, flat indices as the engine has them), in order; None when they could not be had that way.
#: It may answer with one array stacking them (``(len(points), N, *O, C_out)``: the built-in layer's ``outputs``, a
#: user's layer in the engine's layout), which the engine then reduces in one pass over the stack; and it may
#: answer later: a function that gives them (or None) when called.
Outputs = list[np.ndarray] | np.ndarray
Answer = Outputs | Callable[[], Outputs | None] | None
ManyFn = Callable[[list[np.ndarray], list[Point]], Answer]
Steps = tuple[np.ndarray | slice, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Estimate:
    """Numeric gradient of one tensor (flat, float64), with what is needed to judge each entry.

    For entry-wise methods the arrays have the tensor's size; for ``directional`` they hold one value per
    random projection, and ``analytic`` holds the analytic gradient's projections. The engine fills the arrays
    while it measures; once returned, an estimate is only read (``widened`` makes a new one).
    """

    name: str
    shape: tuple[int, ...]  # the gradient's shape (or (P,) for projections)
    analytic: np.ndarray  # (size,) float64
    central: np.ndarray  # (size,) central difference of L; NaN where not measured
    lo: np.ndarray  # (size,) lower end of the interval the derivative must lie in
    hi: np.ndarray  # (size,) upper end
    crossed: np.ndarray  # (size,) int: outputs that straddled a kink
    noise: np.ndarray  # (size,) estimated rounding noise (one standard deviation) of ``central``
    truncation: np.ndarray  # (size,) bound on the truncation error (smooth activations)
    measured: np.ndarray  # (size,) bool
    analytic_noise: np.ndarray  # (size,) rounding bound of the analytic value itself
    projections: int = 0  # > 0 for directional estimates

    @classmethod
    def empty(
        cls, name: str, shape: tuple[int, ...], analytic: np.ndarray, analytic_noise: np.ndarray | None = None
    ) -> Estimate:
        size = int(np.prod(shape))
        nan = np.full(size, np.nan)
        return cls(
            name=name,
            shape=shape,
            analytic=np.asarray(analytic, dtype=np.float64).reshape(-1),
            central=nan,
            lo=nan.copy(),
            hi=nan.copy(),
            crossed=np.zeros(size, dtype=np.int64),
            noise=np.zeros(size),
            truncation=np.zeros(size),
            measured=np.zeros(size, dtype=bool),
            analytic_noise=np.zeros(size)
            if analytic_noise is None
            else np.asarray(analytic_noise, dtype=np.float64).reshape(-1),
        )

    def widened(self, extra: np.ndarray) -> Estimate:
        """A copy whose measured entries with ``extra > 0`` (flat, one per entry) have their interval widened by
        ``extra`` on each side and count one more kink crossing (a kink only the layer's rounding can straddle)."""
        if self.projections:
            return self
        extra = extra.reshape(-1)
        near = (extra > 0) & self.measured
        lo, hi, crossed = self.lo.copy(), self.hi.copy(), self.crossed.copy()
        lo[near] -= extra[near]
        hi[near] += extra[near]
        crossed[near] += 1
        return dataclasses.replace(self, lo=lo, hi=hi, crossed=crossed)

    def allowed(self, entries: np.ndarray | slice, rtol: float, atol: float) -> np.ndarray:
        """``atol + rtol·|central| + SAFETY·(noise + analytic noise) + truncation`` (``convcheck.tolerance``)."""
        return (
            atol
            + rtol * np.abs(self.central[entries])
            + SAFETY * (self.noise[entries] + self.analytic_noise[entries])
            + self.truncation[entries]
        )


@dataclass
class Engine:
    """Finite differences of ``L = Σ forward(x, w, b) ⊙ G`` around one point.

    Args:
        forward: ``(x, w, b) -> out``; arrays as in ``convcheck.spec`` (NHWC).
        x: (N, *S, C_in), w: (*kernel, C_in/g, C_out), b: (C_out,) or (0,) (no bias), in the layer's dtype.
        g: (N, *O, C_out), the weights of L (the ``dout`` handed to backward).
        shape, activation: the layer's geometry and nonlinearity (they set the noise model and the kink logic).
        eps: the step; unit_roundoff: of the layer's dtype.
        workers: threads measuring groups at once, for ``grouped`` and ``entrywise`` (each calls ``forward`` on its
            own copies of x, w and b, so ``forward`` must be safe to call from several threads; convcheck's own
            layer is; ``parallel.engine_workers`` chooses). The results do not depend on it.
        many: optional; forward passes by batches (``ManyFn``), ``batch`` groups (two passes each) per request.
            Used instead of threads; the results do not depend on it either.
        base: optional; what ``forward`` returned at exactly (x, w, b) (a call made before, counted as a pass):
            the first of the two evaluations at the point, whose comparison proves the forward deterministic.
        magnitude: optional; ``reference.magnitude(x, w, b)`` in float64, if the caller has it (noise model).
    """

    forward: ForwardFn
    x: np.ndarray
    w: np.ndarray
    b: np.ndarray
    g: np.ndarray
    shape: ConvShape
    activation: Activation
    eps: float
    unit_roundoff: float
    forward_passes: int = 0
    workers: int = 1
    progress: Callable[[int], None] | None = field(default=None, repr=False)  # called with the passes done so far
    many: ManyFn | None = field(default=None, repr=False)
    batch: int = 1
    base: np.ndarray | None = field(default=None, repr=False)  # forward's output at (x, w, b), when already had
    magnitude: np.ndarray | None = field(default=None, repr=False)  # ``reference.magnitude`` at (x, w, b), if known
    f0: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._params = [self.x.copy(), self.w.copy(), self.b.copy()]
        self._count_lock = threading.Lock()
        # The first of the two evaluations at the point may be one made before (the contract's first call).
        self.f0 = self._evaluate(self._params) if self.base is None else self._counted(self.base)
        again = self._evaluate(self._params)
        window, u = self.shape.window, self.unit_roundoff
        sigma = rounding_sigma(self.x, self.w, self.b, self.f0, window, u, self.magnitude)
        self._exact_scaling = _is_power_of_two(self.eps)
        # Largest |∂z/∂θ| for one entry of each tensor: the partner it multiplies (bias: 1).
        slope_bound = (float(np.max(np.abs(self.w), initial=0.0)), float(np.max(np.abs(self.x), initial=0.0)), 1.0)
        self._reductions = Reductions(
            self.f0, self.g.astype(np.float64, copy=False), sigma, self.eps, self.activation, slope_bound
        )
        if not (same_bits(self.f0, again) or np.array_equal(self.f0, again, equal_nan=True)):
            raise NotLocalError(
                "the forward pass is not deterministic: two calls with the same arrays gave different outputs "
                f"(max difference {np.nanmax(np.abs(self.f0 - again)):.3g})"
            )

    # -- evaluation -------------------------------------------------------------------------------------------

    def _evaluate(self, params: list[np.ndarray]) -> np.ndarray:
        with self._count_lock:
            self.forward_passes += 1
            done = self.forward_passes
        if self.progress is not None:
            self.progress(done)
        out = self.forward(*params)
        return np.asarray(out, dtype=np.float64)

    def _measure(self, group: Group, eps: float, params: list[np.ndarray] | None = None) -> Measurement:
        """Two forward passes with the group's entries at ``θ ± eps``; per local entry of the group.

        ``params`` are the (x, w, b) copies to perturb (the engine's own by default); they are restored after.
        """
        params = self._params if params is None else params
        flat = params[group.tensor].reshape(-1)
        where, original, plus, minus = self._steps(group, eps, params)
        flat[where] = plus
        f_plus = self._evaluate(params)
        flat[where] = minus
        f_minus = self._evaluate(params)
        flat[where] = original
        return self._reduce(group, eps, (original, plus, minus), f_plus, f_minus)

    def _steps(
        self, group: Group, eps: float, params: list[np.ndarray]
    ) -> tuple[np.ndarray | slice, np.ndarray, np.ndarray, np.ndarray]:
        """``(where, original, plus, minus)``: the flat positions a group changes and their values at θ, θ ± eps."""
        param = params[group.tensor]
        where = group.entries if group.span is None else group.span
        original = param.reshape(-1)[where].copy()
        step = eps if group.direction is None else eps * group.direction[where]  # eps·1: the same numbers
        plus = (original + step).astype(param.dtype, copy=False)
        minus = (original - step).astype(param.dtype, copy=False)
        return where, original, plus, minus

    def _reduce(
        self,
        group: Group,
        eps: float,
        values: tuple[np.ndarray, np.ndarray, np.ndarray],
        f_plus: np.ndarray,
        f_minus: np.ndarray,
    ) -> Measurement:
        """One group's measurement from its two outputs; ``values``: the entries' (original, plus, minus)."""
        original, plus, minus = values
        if group.direction is None:
            # The steps actually taken (exact for power-of-two eps and ordinary data; measured to be safe).
            step_plus = np.subtract(plus, original, dtype=np.float64)
            step_minus = np.subtract(original, minus, dtype=np.float64)
        else:
            step_plus = np.full(1, eps)
            step_minus = np.full(1, eps)
        count = len(group.entries) if group.direction is None else 1
        if self._exact_steps(group, eps, step_plus, step_minus):
            return self._reductions.exact(group, count, f_plus, f_minus, eps)
        if group.ownership in (Ownership.POSITION, Ownership.OUTPUT):
            self._reductions.check_locality(group, f_plus, f_minus)
        return self._reductions.general(group, count, f_plus, f_minus, step_plus, step_minus, eps)

    def _measure_all(
        self, groups: Iterable[Group], eps: float, threads: bool = True
    ) -> Iterator[tuple[Group, Measurement]]:
        """``(group, measurement)`` in the order of ``groups``: by batches (``many``), on ``workers`` threads (if
        ``threads``), or one at a time."""
        if self.many is not None:
            yield from self._measure_batches(groups, eps)
            return
        if self.workers <= 1 or not threads:
            for group in groups:
                yield group, self._measure(group, eps)
            return
        yield from parallel.ordered_map(
            lambda group, params: (group, self._measure(group, eps, params)),
            groups,
            workers=self.workers,
            local=lambda: [p.copy() for p in self._params],
        )

    def _measure_batches(self, groups: Iterable[Group], eps: float) -> Iterator[tuple[Group, Measurement]]:
        """``batch`` groups per request to ``many``; a batch it cannot measure is measured one call at a time.
        ``many`` may answer later (a function): the next batch is then asked for before this one is reduced."""
        source, size = iter(groups), max(1, self.batch)
        chunk = list(itertools.islice(source, size))
        sent = self._send(chunk, eps) if chunk else None
        while sent is not None:
            steps, answer = sent
            outputs = answer() if callable(answer) else answer
            following = list(itertools.islice(source, size))
            if outputs is None:
                yield from ((group, self._measure(group, eps)) for group in chunk)
            sent = self._send(following, eps) if following else None  # measured while this batch is reduced
            together = _reduce_together(self, chunk, steps, outputs, eps)
            if together is not None:
                for group, measurement in zip(chunk, together, strict=True):
                    self._count()
                    self._count()
                    yield group, measurement
                chunk = following
                continue
            for k, (group, (_, original, plus, minus)) in enumerate(zip(chunk, steps, strict=True)):
                if outputs is not None:
                    f_plus, f_minus = (self._counted(outputs[2 * k + j]) for j in (0, 1))
                    yield group, self._reduce(group, eps, (original, plus, minus), f_plus, f_minus)
            chunk = following

    def _send(self, chunk: list[Group], eps: float) -> tuple[list[Steps], Answer]:
        """Each group's steps and what ``many`` answered for its ± points (the outputs, or a function giving them)."""
        assert self.many is not None
        steps = [self._steps(group, eps, self._params) for group in chunk]
        return steps, self.many(self._params, _points(chunk, steps))

    def _counted(self, out: np.ndarray) -> np.ndarray:
        """An output ``many`` returned, counted as one forward pass (as ``_evaluate`` counts its calls)."""
        self._count()
        return np.asarray(out, dtype=np.float64)

    def _count(self) -> None:
        with self._count_lock:
            self.forward_passes += 1
            done = self.forward_passes
        if self.progress is not None:
            self.progress(done)

    def _exact_steps(self, group: Group, eps: float, step_plus: np.ndarray, step_minus: np.ndarray) -> bool:
        """True when every step taken is the nominal ``eps`` and ``eps`` and ``self.eps`` are powers of two."""
        if not (self._exact_scaling and _is_power_of_two(eps)):
            return False
        if group.direction is not None:
            return True  # a projection's step is eps by construction
        return bool((step_plus == eps).all() and (step_minus == eps).all())

    def check_separable(self) -> None:
        """Two or three extra passes that test what the per-group locality check cannot see: that output batch item
        ``n`` depends on input batch item ``n`` only, output channel ``co`` on ``w[..., co]`` only, and (conv groups)
        the outputs of group γ on the input channels of group γ only (every input group perturbs all batch items and
        a channel of every conv group, every weight group all output channels, at once).

        Raises:
            NotLocalError: perturbing batch item 0 moved another item's outputs, perturbing channel 0's filters
                moved another channel's outputs, or perturbing conv group 0's input channels moved another
                group's outputs.
        """
        probes = _separability_probes(self.shape)
        for tensor, perturbed, others, what in probes:
            params = [p.copy() for p in self._params]
            params[tensor][perturbed] += self.eps
            moved = np.abs(self._evaluate(params)[others] - self.f0[others])
            limit = self._reductions.threshold_step[others]
            if np.any(moved > limit):
                raise NotLocalError(
                    f"outputs of {what} moved (by up to {float(moved.max()):.3g}): the forward is not separable"
                )

    # -- methods ----------------------------------------------------------------------------------------------

    def grouped(
        self, tensor: Tensor | int, analytic: np.ndarray, analytic_noise: np.ndarray, rtol: float, atol: float
    ) -> Estimate:
        """Every entry of one tensor by grouped perturbation (see the module docstring)."""
        tensor = Tensor(tensor)
        est = Estimate.empty(tensor.label, self._params[tensor].shape, analytic, analytic_noise)
        return self._by_groups(tensor_groups(self.shape, tensor), est, rtol, atol)

    def entrywise(
        self,
        tensor: Tensor | int,
        analytic: np.ndarray,
        analytic_noise: np.ndarray,
        rtol: float,
        atol: float,
        entries: np.ndarray | None = None,
    ) -> Estimate:
        """One central difference per entry (all entries, or the given flat indices)."""
        size = self._params[tensor].size
        chosen = np.arange(size) if entries is None else np.asarray(entries)
        tensor = Tensor(tensor)
        est = Estimate.empty(tensor.label, self._params[tensor].shape, analytic, analytic_noise)
        return self._by_groups(single_entry_groups(tensor, chosen), est, rtol, atol)

    def _by_groups(self, groups: Iterator[Group], est: Estimate, rtol: float, atol: float) -> Estimate:
        retry = []
        for group, m in self._measure_all(groups, self.eps):
            self._store(est, group.entries, m)
            if m.crossed.any() and self._kink_matters(est, group.entries, rtol, atol):
                retry.append(group)
        for group, m in self._measure_all(retry, self.eps / RETRY_SHRINK):
            was_crossed = est.crossed[group.entries] > 0
            self._store(est, group.entries[was_crossed], m.subset(was_crossed))
        return est

    @staticmethod
    def _kink_matters(est: Estimate, entries: np.ndarray, rtol: float, atol: float) -> bool:
        """True when some crossed entry's central difference alone would fail it (so a smaller step may help)."""
        crossed = entries[est.crossed[entries] > 0]
        error = np.abs(est.analytic[crossed] - est.central[crossed])
        return bool(np.any(error > est.allowed(crossed, rtol, atol)))

    @staticmethod
    def _store(est: Estimate, entries: np.ndarray, m: Measurement) -> None:
        est.central[entries] = m.central
        est.lo[entries] = m.lo
        est.hi[entries] = m.hi
        est.crossed[entries] = m.crossed
        est.noise[entries] = m.noise
        est.truncation[entries] = m.truncation
        est.measured[entries] = True

    def directional(
        self,
        tensor: Tensor | int,
        analytic: np.ndarray,
        analytic_noise: np.ndarray | Callable[[np.ndarray], float],
        projections: int,
        rng: np.random.Generator,
    ) -> Estimate:
        """Compare ``⟨∇L, v⟩`` with one central difference along random Gaussian directions ``v``
        (``projected`` says why Gaussian, and how the analytic side and its rounding bound are taken)."""
        groups = directions(self, tensor, projections, rng)
        # A few projections of the whole tensor, on one thread (threads measured no faster here; for convcheck's
        # own layer on two cores or more, ``methods.DirectionalBeside`` runs whole tensors side by side instead).
        first = [m for _, m in self._measure_all(groups, self.eps, threads=False)]
        measured = [shortened(self._measure_one, group, m, self.eps) for group, m in zip(groups, first, strict=True)]
        return along(self, groups, analytic, analytic_noise, measured)

    def _measure_one(self, group: Group, eps: float) -> Measurement:
        """One group's measurement at ``eps``, by the way ``_measure_all`` takes (``many`` when there is one)."""
        return next(m for _, m in self._measure_all([group], eps, threads=False))


def directions(engine: Engine, tensor: Tensor | int, projections: int, rng: np.random.Generator) -> list[Group]:
    """``projections`` groups that step the whole of ``tensor`` along a random Gaussian direction each."""
    tensor, size = Tensor(tensor), engine._params[tensor].size
    entries, span = np.arange(size), slice(0, size)
    return [
        Group(tensor, entries, Ownership.ALL, direction=rng.standard_normal(size), span=span)
        for _ in range(projections)
    ]


def measure_directions(engine: Engine, groups: list[Group], params: list[np.ndarray] | None = None) -> list[Projection]:
    """The two passes of each of ``directions``' groups (and, where a kink was crossed, those of its shorter steps:
    ``shortened``), one call at a time, on ``params`` (copies of x, w and b that this thread alone changes; the
    engine's own by default)."""

    def measure(group: Group, eps: float) -> Measurement:
        return engine._measure(group, eps, params)

    return [shortened(measure, group, measure(group, engine.eps), engine.eps) for group in groups]


def taken(engine: Engine, groups: list[Group], eps: list[float] | None = None) -> list[np.ndarray]:
    """Per group of ``directions``, the step actually taken along its direction, ``(θ⁺ − θ⁻)/2ε`` (flat), at the
    engine's ``eps`` or at each group's own (``eps``: one per group)."""
    steps_eps = [engine.eps] * len(groups) if eps is None else eps
    steps = [engine._steps(group, step, engine._params)[2:] for group, step in zip(groups, steps_eps, strict=True)]
    return [
        (plus.astype(np.float64) - minus.astype(np.float64)) / (2.0 * step)
        for (plus, minus), step in zip(steps, steps_eps, strict=True)
    ]


def along(
    engine: Engine,
    groups: list[Group],
    analytic: np.ndarray,
    analytic_noise: np.ndarray | Callable[[np.ndarray], float],
    measured: list[Projection],
    steps: list[np.ndarray] | None = None,
) -> Estimate:
    """The estimate of ``directions``' groups (one tensor) from their measurements, in the groups' order: the
    analytic gradient projected onto the step each measurement took, at the engine's step or, for a projection
    that ``shortened`` measured at a shorter one, there (``steps``: those steps, ``taken`` already)."""
    if steps is None:
        steps = taken(engine, groups, [projection.eps for projection in measured])
    est = projected(groups[0].tensor, analytic, analytic_noise, steps)
    for p, projection in enumerate(measured):
        engine._store(est, np.array([p]), projection.measurement)
    return est


def projected(
    tensor: Tensor,
    analytic: np.ndarray,
    analytic_noise: np.ndarray | Callable[[np.ndarray], float],
    taken: list[np.ndarray],
) -> Estimate:
    """An empty estimate of the projections of ``analytic`` onto the directions ``taken`` (flat).

    Gaussian directions, not ±1: a wrong gradient ``∇L + e`` (``e ≠ 0``) passes a projection only where ``⟨e, v⟩``
    falls inside the tolerance, and ``⟨e, v⟩ = 0`` has probability zero for a Gaussian ``v`` (for ±1 entries it
    has probability up to 1/2: two swapped entries cancel whenever their signs agree), so one projection per
    tensor is as strong as several. The analytic side projects onto the steps actually taken
    (``(θ⁺ − θ⁻)/2ε``, not ``v``: ``θ ± ε·v`` rounds), and its rounding bound is ``Σ|v_i|·bound_i``
    (``analytic_noise``: the per-entry bounds, or a function of the direction that gives that sum).
    """
    grad = np.asarray(analytic, dtype=np.float64).reshape(-1)
    if callable(analytic_noise):
        noise = np.array([analytic_noise(v) for v in taken])
    else:
        bound = np.asarray(analytic_noise, dtype=np.float64).reshape(-1)
        noise = np.array([float(np.abs(v) @ bound) for v in taken])
    est = Estimate.empty(tensor.label, (len(taken),), np.array([grad @ v for v in taken]), noise)
    return dataclasses.replace(est, projections=len(taken))


def _reduce_together(
    engine: Engine, chunk: list[Group], steps: list[Steps], outputs: Outputs | None, eps: float
) -> list[Measurement] | None:
    """The chunk's measurements reduced together (``Reductions.exact_many``) when ``many`` answered with one
    stacked array (``(2·len(chunk), N, *O, C_out)``: each group's ``+`` then ``−`` output) and every step
    taken is exactly ``eps``; else None (each group is then reduced on its own, as ``Engine._reduce`` does)."""
    if not isinstance(outputs, np.ndarray) or any(group.direction is not None for group in chunk):
        return None
    original, plus, minus = (np.concatenate([step[j] for step in steps]) for j in (1, 2, 3))
    step_plus = np.subtract(plus, original, dtype=np.float64)
    step_minus = np.subtract(original, minus, dtype=np.float64)
    if not engine._exact_steps(chunk[0], eps, step_plus, step_minus):
        return None
    stack = np.asarray(outputs, dtype=np.float64)
    counts = [len(group.entries) for group in chunk]
    return exact_many(engine._reductions, chunk, counts, stack[0::2], stack[1::2], eps)


def _separability_probes(shape: ConvShape) -> list[tuple[int, tuple[Any, ...], tuple[Any, ...], str]]:
    """``Engine.check_separable``'s probes: (tensor, the entries perturbed, the outputs that must not move, what
    those outputs are)."""
    n, c_out = shape.batch, shape.out_depth
    probes: list[tuple[int, tuple[Any, ...], tuple[Any, ...], str]] = []
    if n > 1:
        probes.append((0, (slice(0, 1),), (slice(1, None),), "batch items other than the one perturbed"))
    if c_out > 1:
        probes.append(
            (
                1,
                (Ellipsis, slice(0, 1)),
                (Ellipsis, slice(1, None)),
                "output channels other than the one whose filters were perturbed",
            )
        )
    groups = shape.groups
    if groups > 1:
        probes.append(
            (
                0,
                (Ellipsis, slice(0, shape.in_depth // groups)),
                (Ellipsis, slice(c_out // groups, None)),
                "other conv groups than the one whose input channels were perturbed",
            )
        )
    return probes


def _points(chunk: list[Group], steps: list[Steps]) -> list[Point]:
    """The ``+`` and ``−`` point of each group of a batch, as changes of the base (flat positions in the tensor)."""
    points = []
    for group, (where, _, plus, minus) in zip(chunk, steps, strict=True):
        at = np.arange(where.start or 0, where.stop) if isinstance(where, slice) else np.asarray(where)
        points += [Point(group.tensor, at, plus), Point(group.tensor, at, minus)]
    return points


def _is_power_of_two(value: float) -> bool:
    """True for ``2^k`` (scaling by it is exact, barring overflow and underflow)."""
    return value > 0 and math.isfinite(value) and math.frexp(value)[0] == 0.5
