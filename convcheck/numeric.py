"""Finite-difference gradients of ``L = Σ out ⊙ G``: every entry, from few forward passes, kinks handled.

Why one random ``G`` suffices. The analytic gradients are ``backward(G) = Jᵀ·G``. A wrong backward computes some
other linear map ``Bᵀ·G``; it agrees with ``Jᵀ·G`` on a random Gaussian ``G`` only if ``(B − J)ᵀ·G = 0``, which has
probability zero unless ``B = J``. So one ``G``, checked in every entry, is as strong as the full Jacobian.

Grouped perturbation (column grouping for sparse Jacobians, Curtis, Powell & Reid 1974). Output ``(n, oh, ow, co)``
depends only on the input entries of its window, on ``w[..., co]`` and on ``b[co]``. Perturbing, at once, every
input entry with ``h ≡ i (mod k)``, ``w ≡ j (mod k)`` in one channel ``c`` (all batch items) puts exactly one
perturbed entry, its *owner*, in each window (k consecutive rows hold exactly one row of each residue mod k), so
each output's change is that owner's doing; summing ``G ⊙ Δout`` per owner gives every owner's derivative. Weights
``w[kh, kw, ci, :]`` are perturbed together (output channel ``co`` sees only its own), and the bias at once. Hence
``2·(2·k²·C_in + 1)`` forward passes for every entry of dx, dw and db, whatever N, H and W are.

The engine checks that assumption: outputs whose window holds no perturbed entry must not move beyond rounding.
If they do, the forward is not local (not a convolution) and the caller falls back to per-entry differences.

Kinks. With the unperturbed output ``f0`` known, each output gives a forward difference ``d⁺ = (f⁺ − f0)/ε`` and a
backward one ``d⁻ = (f0 − f⁻)/ε``. For a piecewise-linear activation they agree (up to rounding) unless the
perturbation carried the pre-activation across the kink. The derivative at a crossed output lies between ``d⁻`` and
``d⁺`` (one side has the slope of each piece, and the value at the kink is any subgradient), so an entry fed by
crossed outputs is judged against the interval ``Σ_uncrossed G·central + Σ_crossed [min, max](G·d⁻, G·d⁺)``: sound
(a correct layer always lies inside) and as tight as the data allow. Entries whose verdict hinges on a crossing are
re-measured once with a step 16× smaller; what still straddles is counted as a kink.

Speed. The forward passes dominate; around them each group costs a few passes over ``out``-sized arrays. With the
step actually taken equal to the nominal power-of-two ``ε`` (the usual case), dividing by ``ε`` or ``2ε`` is exact, so
the owner sums are taken before dividing and the crossing test compares ``|(f⁺ − f0) − (f0 − f⁻)|`` with the
threshold times ``ε``: the same numbers, bit for bit, as the textbook formulas, at about half the passes. Groups are
independent, so with ``workers > 1`` they are measured on that many threads (``convcheck.parallel``), each with its
own copy of the parameters, and stored in their original order: the estimate does not depend on ``workers``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convcheck import parallel
from convcheck.spec import Activation, ConvShape
from convcheck.tolerance import SAFETY, THIRD_DERIVATIVE_BOUND, rounding_sigma

ForwardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

TENSOR_NAMES = ("input", "weights", "bias")
RETRY_SHRINK = 16.0  # step reduction when re-measuring entries that straddled a kink
SCAN_BLOCK = 16384  # outputs per block when scanning a group's differences (128 KiB per float64 array: cache-sized)


class NotLocalError(Exception):
    """The forward moved outputs that no perturbed entry can reach: it is not a (local) convolution."""


@dataclass
class Estimate:
    """Numeric gradient of one tensor (flat, float64), with what is needed to judge each entry.

    For entry-wise methods the arrays have the tensor's size; for ``directional`` they hold one value per
    random projection, and ``analytic`` holds the analytic gradient's projections.
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

    def allowed(self, entries: np.ndarray | slice, rtol: float, atol: float) -> np.ndarray:
        """``atol + rtol·|central| + SAFETY·(noise + analytic noise) + truncation`` (``convcheck.tolerance``)."""
        return (
            atol
            + rtol * np.abs(self.central[entries])
            + SAFETY * (self.noise[entries] + self.analytic_noise[entries])
            + self.truncation[entries]
        )


@dataclass(frozen=True)
class _Group:
    """Entries perturbed together and, per output, which of them owns it.

    ``kind`` says how ownership is laid out over ``out: (N, OH, OW, C_out)``:
    ``position``: ``owner: (N, OH, OW)`` local index (−1: no owner), the same for every output channel;
    ``channel``: ``owner: (C_out,)`` local index, the same for every position;
    ``all``: every output belongs to local entry 0.
    ``direction`` (directional only): the perturbation to add, ``±eps·direction`` (flat, like the tensor).
    ``span``: the same entries as a slice when they are one increasing run (gathered and scattered as views).
    """

    tensor: int  # 0 input, 1 weights, 2 bias
    entries: np.ndarray  # flat indices into the tensor
    kind: str
    owner: np.ndarray | None = None
    unowned: np.ndarray | None = None  # (N, OH, OW) bool, position groups only
    direction: np.ndarray | None = None
    span: slice | None = None


@dataclass
class _Measurement:
    """Per local entry of one group."""

    central: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    crossed: np.ndarray
    noise: np.ndarray
    truncation: np.ndarray


@dataclass
class Engine:
    """Finite differences of ``L = Σ forward(x, w, b) ⊙ G`` around one point.

    Args:
        forward: ``(x, w, b) -> out``; arrays as in ``convcheck.spec`` (NHWC).
        x: (N, H, W, C_in), w: (k, k, C_in, C_out), b: (C_out,) in the layer's dtype.
        g: (N, OH, OW, C_out), the weights of L (the ``dout`` handed to backward).
        shape, activation: the layer's geometry and nonlinearity (they set the noise model and the kink logic).
        eps: the step; unit_roundoff: of the layer's dtype.
        workers: threads measuring groups at once, for ``grouped`` and ``entrywise`` (each calls ``forward`` on its
            own copies of x, w and b, so ``forward`` must be safe to call from several threads; convcheck's own
            layer is; ``parallel.engine_workers`` chooses). The results do not depend on it.
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
    f0: np.ndarray = field(init=False, repr=False)
    _threshold: np.ndarray = field(init=False, repr=False)  # per output: spread above this means a crossing
    _sigma: np.ndarray = field(init=False, repr=False)  # per output: rounding noise of one evaluation

    def __post_init__(self) -> None:
        self._params = [self.x.copy(), self.w.copy(), self.b.copy()]
        self._count_lock = threading.Lock()
        self.f0 = self._evaluate(self._params)
        again = self._evaluate(self._params)
        self._sigma = rounding_sigma(
            self.x, self.w, self.b, self.f0, self.shape.stride, self.shape.padding, self.unit_roundoff
        )
        # d⁺ − d⁻ of an uncrossed output is the difference of two noisy quotients: ≈ √6·σ/ε at most.
        # A crossing below this threshold moves an entry's central difference by at most |G|·SAFETY·σ/(2ε), inside
        # the noise band that entry is allowed anyway; a larger one is detected and judged by its interval.
        self._threshold = SAFETY * self._sigma / self.eps
        self._threshold_step = self._threshold * self.eps  # the same test on |(f⁺ − f0) − (f0 − f⁻)| (exact steps)
        self._exact_scaling = _is_power_of_two(self.eps)
        if not np.array_equal(self.f0, again, equal_nan=True):
            raise NotLocalError(
                "the forward pass is not deterministic: two calls with the same arrays gave different outputs "
                f"(max difference {np.nanmax(np.abs(self.f0 - again)):.3g})"
            )
        g = self.g.astype(np.float64)
        gs2 = (g * self._sigma) ** 2
        absg = np.abs(g)
        self._g = g
        # Per-owner reductions that do not change between groups.
        self._gs2_position = gs2.sum(axis=-1)
        self._gs2_channel = gs2.sum(axis=(0, 1, 2))
        self._gs2_all = float(gs2.sum())
        self._absg_position = absg.sum(axis=-1)
        self._absg_channel = absg.sum(axis=(0, 1, 2))
        self._absg_all = float(absg.sum())
        # Largest |∂z/∂θ| for one entry of each tensor: the partner it multiplies (bias: 1).
        self._slope_bound = (
            float(np.max(np.abs(self.w), initial=0.0)),
            float(np.max(np.abs(self.x), initial=0.0)),
            1.0,
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

    def _measure(self, group: _Group, eps: float, params: list[np.ndarray] | None = None) -> _Measurement:
        """Two forward passes with the group's entries at ``θ ± eps``; per local entry of the group.

        ``params`` are the (x, w, b) copies to perturb (the engine's own by default); they are restored after.
        """
        params = self._params if params is None else params
        param = params[group.tensor]
        flat = param.reshape(-1)
        where = group.entries if group.span is None else group.span
        original = flat[where].copy()
        step_dir = np.ones_like(original) if group.direction is None else group.direction[where]
        plus = (original + eps * step_dir).astype(param.dtype, copy=False)
        minus = (original - eps * step_dir).astype(param.dtype, copy=False)
        flat[where] = plus
        f_plus = self._evaluate(params)
        flat[where] = minus
        f_minus = self._evaluate(params)
        flat[where] = original
        if group.direction is None:
            # The steps actually taken (exact for power-of-two eps and ordinary data; measured to be safe).
            step_plus = plus.astype(np.float64) - original.astype(np.float64)
            step_minus = original.astype(np.float64) - minus.astype(np.float64)
        else:
            step_plus = np.full(1, eps)
            step_minus = np.full(1, eps)
        count = len(group.entries) if group.direction is None else 1
        if self._exact_steps(group, eps, step_plus, step_minus):
            return self._reduce_exact_steps(group, count, f_plus, f_minus, eps)
        if group.kind == "position":
            self._check_locality(group, f_plus, f_minus)
        return self._reduce(group, count, f_plus, f_minus, step_plus, step_minus, eps)

    def _measure_all(
        self, groups: Iterable[_Group], eps: float, threads: bool = True
    ) -> Iterator[tuple[_Group, _Measurement]]:
        """``(group, measurement)`` in the order of ``groups``, measured on ``workers`` threads (if ``threads``)."""
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

    def _exact_steps(self, group: _Group, eps: float, step_plus: np.ndarray, step_minus: np.ndarray) -> bool:
        """True when every step taken is the nominal ``eps`` and ``eps`` and ``self.eps`` are powers of two."""
        if not (self._exact_scaling and _is_power_of_two(eps)):
            return False
        if group.direction is not None:
            return True  # a projection's step is eps by construction
        return bool(np.all(step_plus == eps) and np.all(step_minus == eps))

    def _reduce_exact_steps(
        self, group: _Group, count: int, f_plus: np.ndarray, f_minus: np.ndarray, eps: float
    ) -> _Measurement:
        """``_reduce`` when every step is exactly ``eps``, a power of two: the same numbers in fewer passes.

        Scaling by a power of two is exact, so ``Σ G·(f⁺ − f⁻)/(2ε) = (Σ G·(f⁺ − f⁻))/(2ε)`` and
        ``|d⁺ − d⁻| > T·(ε₀/ε)`` is ``|(f⁺ − f0) − (f0 − f⁻)| > T·ε₀`` (``ε₀ = self.eps``), bit for bit.
        """
        g = self._g
        span = np.full(count, 2.0 * eps)
        smooth = not self.activation.piecewise_linear
        sums, crossed = self._scan(group, f_plus, f_minus, test_crossings=not smooth)
        if sums is None:
            central = self._owner_sum(group, count, g * (f_plus - f_minus), None) / span
        elif group.kind == "position":
            central = self._owner_sum(group, count, None, sums.reshape(g.shape[:-1])) / span
        else:
            central = self._owner_sum(group, count, None, sums) / span
        gs2, absg = self._owner_constants(group, count)
        noise = np.sqrt(2.0 * gs2) / span
        lo = central.copy()
        hi = central.copy()
        crossed_count = np.zeros(count, dtype=np.int64)
        truncation = np.zeros(count)
        if smooth and group.direction is None:
            truncation = self._truncation(group, span, absg)
            return _Measurement(central, lo, hi, crossed_count, noise, truncation)
        if crossed is None:  # smooth, along a direction: every output is judged by its interval
            crossed = np.ones(g.shape, dtype=bool)
        if crossed.any():
            idx = np.nonzero(crossed.reshape(g.shape))
            f0, fp, fm, gi = self.f0[idx], f_plus[idx], f_minus[idx], g[idx]
            gp = gi * ((fp - f0) / eps)
            gm = gi * ((f0 - fm) / eps)
            mid = gi * (fp - fm) / (2.0 * eps)
            counted = self._widen(group, count, idx, gp, gm, mid, lo, hi)
            if not smooth:
                crossed_count = counted
        return _Measurement(central, lo, hi, crossed_count, noise, truncation)

    def _scan(
        self, group: _Group, f_plus: np.ndarray, f_minus: np.ndarray, test_crossings: bool
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """One cache-sized block of output positions at a time: what ``_reduce_exact_steps`` needs per output.

        Returns ``Σ G·(f⁺ − f⁻)`` per position (position groups) or per output channel (channel groups with
        ``C_out ≥ 2``; the blocks' sums are chained through a carried row, so they add up in numpy's own
        sequential order; else None) and, when ``test_crossings``, the
        outputs with ``|(f⁺ − f0) − (f0 − f⁻)| > T·ε₀`` (positions × C_out, bool; else None). Checks locality
        (position groups) on the way, raising ``NotLocalError`` as ``_check_locality`` does. Every value is computed
        per output or per position, so the blocks change nothing but the memory traffic.
        """
        c_out = self._g.shape[-1]
        positions = self._g.size // c_out
        unowned = group.unowned.reshape(-1) if group.kind == "position" and group.unowned is not None else None
        if unowned is not None and not unowned.any():
            unowned = None
        sums = group.kind == "position" or (group.kind == "channel" and c_out >= 2)
        if not (sums or test_crossings or unowned is not None):
            return None, None
        fp, fm, f0, g, limit = (
            a.reshape(positions, c_out) for a in (f_plus, f_minus, self.f0, self._g, self._threshold_step)
        )
        per_position = np.empty(positions) if group.kind == "position" else None
        per_channel = None  # Σ over the positions so far (channel groups)
        crossed = np.empty((positions, c_out), dtype=bool) if test_crossings else None
        rows = max(1, SCAN_BLOCK // c_out)
        chained = np.empty((min(rows, positions) + 1, c_out)) if sums and per_position is None else None
        work = np.empty((3, min(rows, positions), c_out))
        for start in range(0, positions, rows):
            block = slice(start, min(start + rows, positions))
            size = block.stop - start
            diff, rise, fall = work[0, :size], work[1, :size], work[2, :size]
            if per_position is not None:
                np.subtract(fp[block], fm[block], out=diff)
                diff *= g[block]
                diff.sum(axis=-1, out=per_position[block])
            elif chained is not None:
                part = chained[: size + 1]  # row 0: the sum so far; the block's rows after it
                np.subtract(fp[block], fm[block], out=part[1:])
                part[1:] *= g[block]
                if per_channel is None:
                    per_channel = part[1:].sum(axis=0)
                else:
                    part[0] = per_channel
                    per_channel = part.sum(axis=0)
            if crossed is None and unowned is None:
                continue
            np.subtract(fp[block], f0[block], out=rise)  # f⁺ − f0: exact when the two are within a factor 2
            np.subtract(f0[block], fm[block], out=fall)
            if unowned is not None:
                here = unowned[block]
                if here.any():
                    moved = np.maximum(np.abs(rise[here]), np.abs(fall[here]))
                    if np.any(moved > limit[block][here]):
                        self._check_locality(group, f_plus, f_minus)  # raises, naming the worst entry
            if crossed is not None:
                rise -= fall
                np.abs(rise, out=rise)
                np.greater(rise, limit[block], out=crossed[block])
        return (per_position if per_position is not None else per_channel), crossed

    def _owner_constants(self, group: _Group, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Per local entry: ``Σ (G·σ)²`` and ``Σ |G|`` over the outputs it owns."""
        if group.kind == "position":
            return (
                self._owner_sum(group, count, None, self._gs2_position),
                self._owner_sum(group, count, None, self._absg_position),
            )
        if group.kind == "channel":
            return (
                self._owner_sum(group, count, None, self._gs2_channel),
                self._owner_sum(group, count, None, self._absg_channel),
            )
        return np.array([self._gs2_all]), np.array([self._absg_all])

    def check_separable(self) -> None:
        """Two extra passes that test what the per-group locality check cannot see: that output batch item ``n``
        depends on input batch item ``n`` only, and output channel ``co`` on ``w[..., co]`` only (every input
        group perturbs all batch items, every weight group all output channels, at once).

        Raises:
            NotLocalError: perturbing batch item 0 moved another item's outputs, or perturbing channel 0's
                filters moved another channel's outputs.
        """
        n, c_out = self.shape.batch, self.shape.out_depth
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
        for tensor, perturbed, others, what in probes:
            params = [p.copy() for p in self._params]
            params[tensor][perturbed] += self.eps
            moved = np.abs(self._evaluate(params)[others] - self.f0[others])
            limit = self._threshold_step[others]
            if np.any(moved > limit):
                raise NotLocalError(
                    f"outputs of {what} moved (by up to {float(moved.max()):.3g}): the forward is not separable"
                )

    def _check_locality(self, group: _Group, f_plus: np.ndarray, f_minus: np.ndarray) -> None:
        mask = group.unowned
        if mask is None or not mask.any():
            return
        moved = np.maximum(np.abs(f_plus[mask] - self.f0[mask]), np.abs(f_minus[mask] - self.f0[mask]))
        limit = self._threshold_step[mask]
        if np.any(moved > limit):
            raise NotLocalError(
                f"outputs outside every perturbed window moved (by up to {float(np.max(moved)):.3g}): "
                "the forward is not local"
            )

    def _owner_sum(
        self, group: _Group, count: int, per_output: np.ndarray | None, axis_sums: np.ndarray | float | None
    ) -> np.ndarray:
        """Sum ``per_output: (N, OH, OW, C_out)`` over the outputs of each local entry (or take ``axis_sums``,
        the per-position, per-channel or total sums, when they are already known)."""
        if axis_sums is None:
            assert per_output is not None
            if group.kind == "position":
                axis_sums = per_output.sum(axis=-1)
            elif group.kind == "channel":
                axis_sums = per_output.sum(axis=(0, 1, 2))
            else:
                axis_sums = float(per_output.sum())
        sums = np.asarray(axis_sums)
        if group.kind == "all":
            return sums.reshape(1).astype(np.float64)
        owner = group.owner
        assert owner is not None
        if group.kind == "position":
            owned = owner >= 0
            return np.bincount(owner[owned], weights=sums[owned], minlength=count)
        if count == len(owner):
            return sums[owner].astype(np.float64)
        return np.bincount(owner, weights=sums, minlength=count)

    def _per_output_steps(self, group: _Group, steps: np.ndarray) -> np.ndarray | float:
        """Broadcast each local entry's step to the outputs it owns."""
        if np.all(steps == steps[0]):
            return float(steps[0])
        if group.kind == "position":
            padded = np.append(steps, steps[0])  # index −1 (no owner) picks a harmless value
            return padded[group.owner][..., None]
        if group.kind == "channel":
            return steps[group.owner]
        return float(steps[0])

    def _reduce(
        self,
        group: _Group,
        count: int,
        f_plus: np.ndarray,
        f_minus: np.ndarray,
        step_plus: np.ndarray,
        step_minus: np.ndarray,
        eps: float,
    ) -> _Measurement:
        g = self._g
        span = step_plus + step_minus  # per local entry
        span_out = self._per_output_steps(group, span)
        central = self._owner_sum(group, count, g * (f_plus - f_minus) / span_out, None)
        gs2, absg = self._owner_constants(group, count)
        noise = np.sqrt(2.0 * gs2) / span

        lo = central.copy()
        hi = central.copy()
        crossed_count = np.zeros(count, dtype=np.int64)
        truncation = np.zeros(count)
        smooth = not self.activation.piecewise_linear
        if smooth and group.direction is None:
            truncation = self._truncation(group, span, absg)
        else:
            step_out_plus = self._per_output_steps(group, step_plus)
            step_out_minus = self._per_output_steps(group, step_minus)
            d_plus = (f_plus - self.f0) / step_out_plus
            d_minus = (self.f0 - f_minus) / step_out_minus
            spread = np.abs(d_plus - d_minus)
            crossed = np.ones_like(spread, dtype=bool) if smooth else spread > self._threshold * (self.eps / eps)
            if crossed.any():
                idx = np.nonzero(crossed)
                gp = g[idx] * d_plus[idx]
                gm = g[idx] * d_minus[idx]
                mid = (
                    g[idx]
                    * (f_plus[idx] - f_minus[idx])
                    / (span_out if np.isscalar(span_out) else np.broadcast_to(span_out, g.shape)[idx])
                )
                counted = self._widen(group, count, idx, gp, gm, mid, lo, hi)
                if not smooth:
                    crossed_count = counted
        return _Measurement(central, lo, hi, crossed_count, noise, truncation)

    def _truncation(self, group: _Group, span: np.ndarray, absg: np.ndarray) -> np.ndarray:
        """Taylor remainder of a central difference per local entry: ``ε²/6 · sup|act'''| · |∂z/∂θ|³`` per
        output, summed with weights ``|G|`` (``absg``); ``span`` is ``2ε`` per entry."""
        bound = THIRD_DERIVATIVE_BOUND[self.activation] * self._slope_bound[group.tensor] ** 3
        return (span / 2) ** 2 / 6 * bound * absg

    def _widen(
        self,
        group: _Group,
        count: int,
        idx: tuple[np.ndarray, ...],
        gp: np.ndarray,
        gm: np.ndarray,
        mid: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
    ) -> np.ndarray:
        """Widen ``lo``/``hi`` in place by the outputs ``idx`` judged by their interval: ``G·d⁺`` and ``G·d⁻``
        (``gp``, ``gm``) around their central term ``mid``. Returns how many such outputs each entry owns.

        An output no perturbed entry reaches belongs to no entry (locality is checked apart) and is skipped.
        """
        slots = self._slots_of(group, idx)
        owned = slots >= 0
        slots, gp, gm, mid = slots[owned], gp[owned], gm[owned], mid[owned]
        lo += np.bincount(slots, weights=np.minimum(gp, gm) - mid, minlength=count)
        hi += np.bincount(slots, weights=np.maximum(gp, gm) - mid, minlength=count)
        return np.bincount(slots, minlength=count)

    @staticmethod
    def _slots_of(group: _Group, idx: tuple[np.ndarray, ...]) -> np.ndarray:
        """Local entry owning each output listed in ``idx`` (a tuple of index arrays into out)."""
        owner = group.owner
        if group.kind == "position":
            assert owner is not None
            return owner[idx[0], idx[1], idx[2]]
        if group.kind == "channel":
            assert owner is not None
            return owner[idx[3]]
        return np.zeros(len(idx[0]), dtype=np.int64)

    # -- groups ---------------------------------------------------------------------------------------------

    def input_groups(self) -> Iterator[_Group]:
        """k²·C_in groups: residues (i, j) of (h, w) mod k, one channel, every batch item."""
        s = self.shape
        n, h, w, c = s.x_shape
        k = s.filter_size
        batch = np.arange(n)[:, None, None]
        for i in range(min(k, h)):
            owner_h = self._owner_rows(i, h, s.out_height)
            rows = np.arange(i, h, k)
            for j in range(min(k, w)):
                owner_w = self._owner_rows(j, w, s.out_width)
                cols = np.arange(j, w, k)
                # Local index of each owner among the group's entries, laid out (n, row, col).
                valid = (owner_h[None, :, None] >= 0) & (owner_w[None, None, :] >= 0)
                local = (batch * len(rows) + (owner_h[None, :, None] - i) // k) * len(cols) + (
                    owner_w[None, None, :] - j
                ) // k
                owner = np.where(valid, local, -1)
                owner = np.broadcast_to(owner, (n, s.out_height, s.out_width))
                positions = ((batch * h + rows[None, :, None]) * w + cols[None, None, :]).reshape(-1)
                unowned = owner < 0
                for channel in range(c):
                    yield _Group(0, positions * c + channel, "position", owner, unowned)

    def _owner_rows(self, residue: int, size: int, out_size: int) -> np.ndarray:
        """For each output row, the input row ≡ residue (mod k) inside its window, or −1 (in the padding)."""
        s = self.shape
        start = np.arange(out_size) * s.stride - s.padding
        row = start + (residue - start) % s.filter_size
        return np.where((row >= 0) & (row < size), row, -1)

    def weight_groups(self) -> Iterator[_Group]:
        """k²·C_in groups: ``w[kh, kw, ci, :]``, every output channel at once."""
        k, _, c_in, c_out = self.shape.w_shape
        owner = np.arange(c_out)
        for first in range(0, k * k * c_in * c_out, c_out):
            yield _Group(1, np.arange(first, first + c_out), "channel", owner, span=slice(first, first + c_out))

    def bias_groups(self) -> Iterator[_Group]:
        c_out = self.shape.out_depth
        yield _Group(2, np.arange(c_out), "channel", np.arange(c_out), span=slice(0, c_out))

    def single_entry_groups(self, tensor: int, entries: np.ndarray) -> Iterator[_Group]:
        for entry in entries:
            yield _Group(tensor, np.array([entry]), "all")

    # -- methods ----------------------------------------------------------------------------------------------

    def grouped(
        self, tensor: int, analytic: np.ndarray, analytic_noise: np.ndarray, rtol: float, atol: float
    ) -> Estimate:
        """Every entry of one tensor by grouped perturbation (see the module docstring)."""
        groups = (self.input_groups, self.weight_groups, self.bias_groups)[tensor]()
        return self._by_groups(
            tensor,
            groups,
            Estimate.empty(TENSOR_NAMES[tensor], self._params[tensor].shape, analytic, analytic_noise),
            rtol,
            atol,
        )

    def entrywise(
        self,
        tensor: int,
        analytic: np.ndarray,
        analytic_noise: np.ndarray,
        rtol: float,
        atol: float,
        entries: np.ndarray | None = None,
    ) -> Estimate:
        """One central difference per entry (all entries, or the given flat indices)."""
        size = self._params[tensor].size
        chosen = np.arange(size) if entries is None else np.asarray(entries)
        est = Estimate.empty(TENSOR_NAMES[tensor], self._params[tensor].shape, analytic, analytic_noise)
        return self._by_groups(tensor, self.single_entry_groups(tensor, chosen), est, rtol, atol)

    def _by_groups(self, tensor: int, groups: Iterator[_Group], est: Estimate, rtol: float, atol: float) -> Estimate:
        retry = []
        for group, m in self._measure_all(groups, self.eps):
            self._store(est, group.entries, m)
            if m.crossed.any() and self._kink_matters(est, group.entries, rtol, atol):
                retry.append(group)
        for group, m in self._measure_all(retry, self.eps / RETRY_SHRINK):
            was_crossed = est.crossed[group.entries] > 0
            self._store(est, group.entries[was_crossed], _subset(m, was_crossed))
        return est

    @staticmethod
    def _kink_matters(est: Estimate, entries: np.ndarray, rtol: float, atol: float) -> bool:
        """True when some crossed entry's central difference alone would fail it (so a smaller step may help)."""
        crossed = entries[est.crossed[entries] > 0]
        error = np.abs(est.analytic[crossed] - est.central[crossed])
        return bool(np.any(error > est.allowed(crossed, rtol, atol)))

    @staticmethod
    def _store(est: Estimate, entries: np.ndarray, m: _Measurement) -> None:
        est.central[entries] = m.central
        est.lo[entries] = m.lo
        est.hi[entries] = m.hi
        est.crossed[entries] = m.crossed
        est.noise[entries] = m.noise
        est.truncation[entries] = m.truncation
        est.measured[entries] = True

    def directional(
        self,
        tensor: int,
        analytic: np.ndarray,
        analytic_noise: np.ndarray,
        projections: int,
        rng: np.random.Generator,
    ) -> Estimate:
        """Compare ``⟨∇L, v⟩`` with one central difference along random ±1 directions ``v``."""
        param = self._params[tensor]
        grad = np.asarray(analytic, dtype=np.float64).reshape(-1)
        directions = [rng.choice(np.array([-1.0, 1.0]), size=param.size) for _ in range(projections)]
        noise = np.full(projections, float(np.sum(analytic_noise)))
        est = Estimate.empty(TENSOR_NAMES[tensor], (projections,), np.array([grad @ v for v in directions]), noise)
        est.projections = projections
        all_entries = np.arange(param.size)
        groups = [_Group(tensor, all_entries, "all", direction=v, span=slice(0, param.size)) for v in directions]
        # A few projections of the whole tensor: one thread, BLAS on every core (threads measured no faster here).
        for p, (_, m) in enumerate(self._measure_all(groups, self.eps, threads=False)):
            self._store(est, np.array([p]), m)
        return est


def _is_power_of_two(value: float) -> bool:
    """True for ``2^k`` (scaling by it is exact, barring overflow and underflow)."""
    return value > 0 and math.isfinite(value) and math.frexp(value)[0] == 0.5


def _subset(m: _Measurement, keep: np.ndarray) -> _Measurement:
    return _Measurement(m.central[keep], m.lo[keep], m.hi[keep], m.crossed[keep], m.noise[keep], m.truncation[keep])


def grouped_passes(shape: ConvShape) -> int:
    """Forward passes of a grouped check of every entry: ``2·(2·k²·C_in + 1)`` (fewer when H or W < k)."""
    k = shape.filter_size
    input_groups = min(k, shape.in_height) * min(k, shape.in_width) * shape.in_depth
    return 2 * (input_groups + k * k * shape.in_depth + 1)


def entrywise_passes(shape: ConvShape) -> int:
    """Forward passes of one central difference per entry of x, w and b."""
    return 2 * (math.prod(shape.x_shape) + math.prod(shape.w_shape) + shape.out_depth)
