"""From one group's two perturbed outputs to each of its entries' derivative, interval and noise.

Kinks. With the unperturbed output ``f0`` known, each output gives a forward difference ``d⁺ = (f⁺ − f0)/ε`` and a
backward one ``d⁻ = (f0 − f⁻)/ε``. For a piecewise-linear activation they agree (up to rounding) unless the
perturbation carried the pre-activation across the kink. The derivative at a crossed output lies between ``d⁻`` and
``d⁺``, so an entry fed by crossed outputs is judged against the interval
``Σ_uncrossed G·central + Σ_crossed [min, max](G·d⁻, G·d⁺)``.

Speed. With the step actually taken equal to the nominal power-of-two ``ε`` (the usual case), dividing by ``ε`` or
``2ε`` is exact, so the owner sums are taken before dividing and the crossing test compares
``|(f⁺ − f0) − (f0 − f⁻)|`` with the threshold times ``ε``: the same numbers, bit for bit, as the textbook
formulas, at about half the passes over the output (``Reductions.exact``; ``Reductions.general`` otherwise).

Arrays: ``f0``, ``f⁺``, ``f⁻`` and ``G`` are ``(N, *O, C_out)`` float64 (``(N, OH, OW, C_out)`` for the seed's
layer); per-entry results are ``(count,)``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import numpy as np

from convcheck.numeric.groups import Group, Ownership
from convcheck.spec import Activation
from convcheck.tolerance import SAFETY, THIRD_DERIVATIVE_BOUND

SCAN_BLOCK = 16384  # outputs per block when scanning a group's differences (128 KiB per float64 array: cache-sized)


class NotLocalError(Exception):
    """The forward moved outputs that no perturbed entry can reach: it is not a (local) convolution."""


@dataclass
class Measurement:
    """Per local entry of one group: what ``numeric.Estimate`` stores for those entries."""

    central: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    crossed: np.ndarray
    noise: np.ndarray
    truncation: np.ndarray

    def subset(self, keep: np.ndarray) -> Measurement:
        """The entries where ``keep`` (bool, per local entry) is set."""
        return Measurement(
            self.central[keep],
            self.lo[keep],
            self.hi[keep],
            self.crossed[keep],
            self.noise[keep],
            self.truncation[keep],
        )


@dataclass(frozen=True)
class _Scan:
    """What one pass over a group's outputs found: owner sums (or None) and crossed outputs (or None)."""

    sums: np.ndarray | None
    crossed: np.ndarray | None


class Reductions:
    """The per-output quantities that do not change between groups, and the reductions that use them.

    Args:
        f0: (N, *O, C_out) the unperturbed output; g: the same shape, the weights ``G`` of ``L``.
        sigma: the same shape, rounding noise of one evaluation per output.
        eps: the nominal step; activation: sets the kink logic and the truncation bound.
        slope_bound: per tensor (input, weights, bias), the largest ``|∂z/∂θ|`` of one entry.
    """

    def __init__(
        self,
        f0: np.ndarray,
        g: np.ndarray,
        sigma: np.ndarray,
        eps: float,
        activation: Activation,
        slope_bound: tuple[float, float, float],
    ) -> None:
        self.f0, self.g, self.eps, self.activation = f0, g, eps, activation
        self.slope_bound = slope_bound
        # d⁺ − d⁻ of an uncrossed output is the difference of two noisy quotients: ≈ √6·σ/ε at most.
        # A crossing below this threshold moves an entry's central difference by at most |G|·SAFETY·σ/(2ε), inside
        # the noise band that entry is allowed anyway; a larger one is detected and judged by its interval.
        self.threshold = SAFETY * sigma / eps
        self.threshold_step = self.threshold * eps  # the same test on |(f⁺ − f0) − (f0 − f⁻)| (exact steps)
        # Per-owner reductions that do not change between groups, each made when first asked for (``_per_owner``):
        # a check reads only the ownerships of its groups (a directional check, one).
        self._per_output = {"gs2": (g * sigma) ** 2, "absg": np.abs(g)}
        self._sums: dict[tuple[str, Ownership], np.ndarray | float] = {}  # (name, ownership) -> the sums
        self.smooth = not activation.piecewise_linear  # read several times per group: looked up once
        # Successive groups share their owner arrays (every channel of an input class, every weight group): what
        # depends on the owners alone is kept for the last one seen (held by reference, so compared by identity).
        self._owned: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (owner, owned mask, owner[owned])
        self._constants: tuple[np.ndarray, Ownership, int, np.ndarray, np.ndarray] | None = None

    def exact(self, group: Group, count: int, f_plus: np.ndarray, f_minus: np.ndarray, eps: float) -> Measurement:
        """``general`` when every step is exactly ``eps``, a power of two: the same numbers in fewer passes.

        Scaling by a power of two is exact, so ``Σ G·(f⁺ − f⁻)/(2ε) = (Σ G·(f⁺ − f⁻))/(2ε)`` and
        ``|d⁺ − d⁻| > T·(ε₀/ε)`` is ``|(f⁺ − f0) − (f0 − f⁻)| > T·ε₀`` (``ε₀ = self.eps``), bit for bit."""
        scan = self._scan(group, f_plus, f_minus, not self.smooth)
        g = self.g
        span = np.full(count, 2.0 * eps)
        if scan.sums is None:
            central = self.owner_sum(group, count, g * (f_plus - f_minus), None) / span
        elif group.ownership is Ownership.POSITION:
            central = self.owner_sum(group, count, None, scan.sums.reshape(g.shape[:-1])) / span
        else:
            central = self.owner_sum(group, count, None, scan.sums) / span
        m = self._start(group, count, central, span)
        if self.smooth and group.direction is None:
            return m
        crossed = scan.crossed
        if crossed is None:  # smooth, along a direction: every output is judged by its interval
            crossed = np.ones(g.shape, dtype=bool)
        widen_crossed(self, group, count, crossed, f_plus, f_minus, eps, m)
        return m

    def general(
        self,
        group: Group,
        count: int,
        f_plus: np.ndarray,
        f_minus: np.ndarray,
        step_plus: np.ndarray,
        step_minus: np.ndarray,
        eps: float,
    ) -> Measurement:
        """Per local entry, from the steps actually taken (``step_plus``, ``step_minus``: per entry)."""
        g = self.g
        span = step_plus + step_minus  # per local entry
        span_out = _per_output_steps(group, span)
        central = self.owner_sum(group, count, g * (f_plus - f_minus) / span_out, None)
        m = self._start(group, count, central, span)
        if self.smooth and group.direction is None:
            return m
        d_plus = (f_plus - self.f0) / _per_output_steps(group, step_plus)
        d_minus = (self.f0 - f_minus) / _per_output_steps(group, step_minus)
        spread = np.abs(d_plus - d_minus)
        crossed = np.ones_like(spread, dtype=bool) if self.smooth else spread > self.threshold * (self.eps / eps)
        if crossed.any():
            idx = np.nonzero(crossed)
            gp = g[idx] * d_plus[idx]
            gm = g[idx] * d_minus[idx]
            span_at = span_out if np.isscalar(span_out) else np.broadcast_to(span_out, g.shape)[idx]
            mid = g[idx] * (f_plus[idx] - f_minus[idx]) / span_at
            counted = _widen(group, count, idx, gp, gm, mid, m.lo, m.hi)
            if not self.smooth:
                m.crossed = counted
        return m

    def _start(self, group: Group, count: int, central: np.ndarray, span: np.ndarray) -> Measurement:
        """A measurement with its interval collapsed to ``central``, its noise, and (smooth) its truncation."""
        return _starts(self, group, count, central[None], span)[0]

    def _scan(self, group: Group, f_plus: np.ndarray, f_minus: np.ndarray, test_crossings: bool) -> _Scan:
        """One cache-sized block of output positions at a time: what ``exact`` needs per output.

        Returns ``Σ G·(f⁺ − f⁻)`` per position (position groups) or per output channel (channel groups with
        ``C_out ≥ 2``; the blocks' sums are chained through a carried row, so they add up in numpy's own
        sequential order; else None) and, when ``test_crossings``, the outputs with
        ``|(f⁺ − f0) − (f0 − f⁻)| > T·ε₀`` (positions × C_out, bool; else None). Checks locality (position
        groups) on the way, raising ``NotLocalError`` as ``check_locality`` does. Every value is computed per
        output or per position, so the blocks change nothing but the memory traffic.
        """
        c_out = self.g.shape[-1]
        positions = self.g.size // c_out
        by_position = group.ownership is Ownership.POSITION
        positional = by_position or group.ownership is Ownership.OUTPUT
        unowned = group.unowned.reshape(-1) if positional and group.unowned is not None else None
        if unowned is not None and not unowned.any():
            unowned = None
        sums = by_position or (group.ownership is Ownership.CHANNEL and c_out >= 2)
        if not (sums or test_crossings or unowned is not None):
            return _Scan(None, None)
        fp, fm = f_plus.reshape(positions, c_out), f_minus.reshape(positions, c_out)
        rows = max(1, SCAN_BLOCK // c_out)
        if positions <= rows:  # one block: the same operations on whole arrays, without the block machinery
            return self._scan_whole(group, fp, fm, unowned, by_position, sums, test_crossings, (f_plus, f_minus))
        per_position = np.empty(positions) if by_position else None
        per_channel = None  # Σ over the positions so far (channel groups)
        crossed = np.empty((positions, c_out), dtype=bool) if test_crossings else None
        chained = np.empty((min(rows, positions) + 1, c_out)) if sums and per_position is None else None
        work = np.empty((3, min(rows, positions), c_out))
        g = self.g.reshape(positions, c_out)
        for start in range(0, positions, rows):
            block = slice(start, min(start + rows, positions))
            size = block.stop - start
            diff = work[0, :size]
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
            if crossed is not None or unowned is not None:
                self._scan_block(
                    group, block, work[1, :size], work[2, :size], fp, fm, unowned, crossed, f_plus, f_minus
                )
        return _Scan(per_position if per_position is not None else per_channel, crossed)

    def _scan_whole(
        self,
        group: Group,
        fp: np.ndarray,
        fm: np.ndarray,
        unowned: np.ndarray | None,
        by_position: bool,
        sums: bool,
        test_crossings: bool,
        outputs: tuple[np.ndarray, np.ndarray],
    ) -> _Scan:
        """``_scan`` when every position fits one block (``fp``, ``fm``: (positions, C_out)): each block's steps
        once, on arrays of their own (the sums reduce the same rows in the same order)."""
        c_out = self.g.shape[-1]
        found = None
        if sums:
            diff = fp - fm
            diff *= self.g.reshape(-1, c_out)
            found = diff.sum(axis=-1) if by_position else diff.sum(axis=0)
        crossed = None
        if test_crossings or unowned is not None:
            everything = slice(None)
            rise, fall = np.empty_like(fp), np.empty_like(fp)
            crossed = np.empty(fp.shape, dtype=bool) if test_crossings else None
            self._scan_block(group, everything, rise, fall, fp, fm, unowned, crossed, *outputs)
        return _Scan(found, crossed)

    def _scan_block(
        self,
        group: Group,
        block: slice,
        rise: np.ndarray,
        fall: np.ndarray,
        fp: np.ndarray,
        fm: np.ndarray,
        unowned: np.ndarray | None,
        crossed: np.ndarray | None,
        f_plus: np.ndarray,
        f_minus: np.ndarray,
    ) -> None:
        """Locality and crossings for one block of positions (``fp``, ``fm``: (positions, C_out) views)."""
        c_out = self.g.shape[-1]
        f0 = self.f0.reshape(-1, c_out)
        limit = self.threshold_step.reshape(-1, c_out)
        np.subtract(fp[block], f0[block], out=rise)  # f⁺ − f0: exact when the two are within a factor 2
        np.subtract(f0[block], fm[block], out=fall)
        if unowned is not None:
            here = unowned[block]
            if here.any():
                moved = np.maximum(np.abs(rise[here]), np.abs(fall[here]))
                if np.any(moved > limit[block][here]):
                    self.check_locality(group, f_plus, f_minus)  # raises, naming the worst entry
        if crossed is not None:
            rise -= fall
            np.abs(rise, out=rise)
            np.greater(rise, limit[block], out=crossed[block])

    def check_locality(self, group: Group, f_plus: np.ndarray, f_minus: np.ndarray) -> None:
        """Raise ``NotLocalError`` when an output no perturbed entry of ``group`` reaches moved beyond rounding."""
        mask = group.unowned
        if mask is None or not mask.any():
            return
        moved = np.maximum(np.abs(f_plus[mask] - self.f0[mask]), np.abs(f_minus[mask] - self.f0[mask]))
        limit = self.threshold_step[mask]
        if np.any(moved > limit):
            raise NotLocalError(
                f"outputs outside every perturbed window moved (by up to {float(np.max(moved)):.3g}): "
                "the forward is not local"
            )

    def _owner_constants(self, group: Group, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Per local entry: ``Σ (G·σ)²`` and ``Σ |G|`` over the outputs it owns (only read by the caller)."""
        if group.ownership is Ownership.ALL:
            return np.array([self._per_owner("gs2", Ownership.ALL)]), np.array([self._per_owner("absg", Ownership.ALL)])
        held = self._constants
        if held is not None and held[0] is group.owner and held[1] is group.ownership and held[2] == count:
            return held[3], held[4]
        gs2 = self.owner_sum(group, count, None, self._per_owner("gs2", group.ownership))
        absg = self.owner_sum(group, count, None, self._per_owner("absg", group.ownership))
        assert group.owner is not None
        self._constants = (group.owner, group.ownership, count, gs2, absg)
        return gs2, absg

    def _per_owner(self, name: Literal["gs2", "absg"], ownership: Ownership) -> np.ndarray | float:
        """``(G·σ)²`` (``name="gs2"``) or ``|G|`` (``"absg"``) summed over what one owner of ``ownership`` covers:
        per position (over the channels), per output (itself), per channel (over the positions), or everything."""
        key = (name, ownership)
        found = self._sums.get(key)
        if found is None:
            per_output = self._per_output[name]
            if ownership is Ownership.POSITION:
                found = per_output.sum(axis=-1)
            elif ownership is Ownership.OUTPUT:
                found = per_output
            elif ownership is Ownership.CHANNEL:
                found = per_output.sum(axis=tuple(range(per_output.ndim - 1)))
            else:
                found = float(per_output.sum())
            self._sums[key] = found
        return found

    def _owned_slots(self, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(owner >= 0, owner[owner >= 0])`` for a position or output group's owners, kept for the last seen."""
        held = self._owned
        if held is None or held[0] is not owner:
            owned = owner >= 0
            held = self._owned = (owner, owned, owner[owned])
        return held[1], held[2]

    def owner_sum(
        self, group: Group, count: int, per_output: np.ndarray | None, axis_sums: np.ndarray | float | None
    ) -> np.ndarray:
        """Sum ``per_output: (N, *O, C_out)`` over the outputs of each local entry (or take ``axis_sums``,
        the per-position, per-channel or total sums, when they are already known)."""
        if axis_sums is None:
            assert per_output is not None
            if group.ownership is Ownership.POSITION:
                axis_sums = per_output.sum(axis=-1)
            elif group.ownership is Ownership.OUTPUT:
                axis_sums = per_output
            elif group.ownership is Ownership.CHANNEL:
                axis_sums = per_output.sum(axis=tuple(range(per_output.ndim - 1)))
            else:
                axis_sums = float(per_output.sum())
        return _owner_sums(self, group, count, np.asarray(axis_sums)[None])[0]

    def _truncation(self, group: Group, span: np.ndarray, absg: np.ndarray) -> np.ndarray:
        """Taylor remainder of a central difference per local entry: ``ε²/6 · sup|act'''| · |∂z/∂θ|³`` per
        output, summed with weights ``|G|`` (``absg``); ``span`` is ``2ε`` per entry."""
        bound = THIRD_DERIVATIVE_BOUND[self.activation] * self.slope_bound[group.tensor] ** 3
        return (span / 2) ** 2 / 6 * bound * absg


def exact_many(
    reductions: Reductions, groups: list[Group], counts: list[int], f_plus: np.ndarray, f_minus: np.ndarray, eps: float
) -> list[Measurement] | None:
    """``reductions.exact`` of each of ``groups`` (one tensor's, of one ownership), from their outputs stacked:
    ``f_plus``, ``f_minus``: (B, N, *O, C_out), one C-contiguous output per group. The passes over the outputs
    (differences, crossings, locality) run once over the stack, the sums and owner sums once per run of groups
    that share their owners (``_measure_run``), and the crossed outputs' intervals per group: the same
    numbers, bit for bit, as ``exact`` group by group. None where this does not apply (``exact`` per group
    then): outputs beyond one scan block, output groups (several conv groups), channel groups of one output
    channel, steps along a direction, slices that are not C-contiguous, or a group that moved outputs it does
    not own (so that it raises where ``exact`` would)."""
    g = reductions.g
    c_out = g.shape[-1]
    positions = g.size // c_out
    ownership = groups[0].ownership
    by_position = ownership is Ownership.POSITION
    if (
        positions > max(1, SCAN_BLOCK // c_out)
        or not (by_position or ownership is Ownership.ALL or (ownership is Ownership.CHANNEL and c_out >= 2))
        or any(group.ownership is not ownership or group.direction is not None for group in groups)
        or not (f_plus.strides[-1] == f_plus.itemsize and f_plus[0].flags.c_contiguous)
        or not (f_minus.strides[-1] == f_minus.itemsize and f_minus[0].flags.c_contiguous)
    ):
        return None
    stacked = len(groups)
    fp, fm = f_plus.reshape(stacked, positions, c_out), f_minus.reshape(stacked, positions, c_out)
    diff = fp - fm  # (B, positions, C_out), each slice laid out as ``_scan_whole``'s own difference
    diff *= g.reshape(positions, c_out)
    local, crossed = _stacked_crossings(reductions, groups, fp, fm)
    if not local:
        return None
    found: list[Measurement] = []
    # Runs of consecutive groups that share their owners: every channel of an input class, every weight group.
    start = 0
    for (_, count), run in itertools.groupby(range(stacked), key=lambda k: (id(groups[k].owner), counts[k])):
        stop = start + len(list(run))
        found += _measure_run(reductions, groups[start:stop], count, diff[start:stop], eps)
        start = stop
    if crossed is not None:
        for k, group in enumerate(groups):
            widen_crossed(reductions, group, counts[k], crossed[k], f_plus[k], f_minus[k], eps, found[k])
    return found


def _stacked_crossings(
    reductions: Reductions, groups: list[Group], fp: np.ndarray, fm: np.ndarray
) -> tuple[bool, np.ndarray | None]:
    """``exact_many``'s locality check and crossing test over the stack ``fp``, ``fm``: (B, positions, C_out).
    Returns (False, None) when a group moved an output it does not own, else (True, the crossed outputs: the
    same shape, bool; None for a smooth activation)."""
    stacked, positions, c_out = fp.shape
    by_position = groups[0].ownership is Ownership.POSITION
    crossed = None
    unowned = [group.unowned if by_position else None for group in groups]
    if not reductions.smooth or any(mask is not None for mask in unowned):
        f0, limit = reductions.f0.reshape(positions, c_out), reductions.threshold_step.reshape(positions, c_out)
        # f⁺ − f0 and f0 − f⁻, as ``_scan_block`` takes them (smooth: only where locality needs them)
        rise, fall = (fp - f0, f0 - fm) if not reductions.smooth else (None, None)
        checked: set[int] = set()
        for k, mask in enumerate(unowned):
            if mask is None or id(mask) in checked:
                continue
            checked.add(id(mask))
            here = mask.reshape(-1)
            if not here.any():
                continue
            same = [j for j in range(k, stacked) if unowned[j] is mask]  # groups sharing these owners
            if rise is None or fall is None:
                up, down = fp[:, here][same] - f0[here], f0[here] - fm[:, here][same]
            else:
                up, down = rise[:, here][same], fall[:, here][same]
            moved = np.maximum(np.abs(up), np.abs(down))
            if np.any(moved > limit[here]):
                return False, None
        if rise is not None and fall is not None:
            rise -= fall
            np.abs(rise, out=rise)
            crossed = rise > limit
    return True, crossed


def widen_crossed(
    reductions: Reductions,
    group: Group,
    count: int,
    crossed: np.ndarray,
    f_plus: np.ndarray,
    f_minus: np.ndarray,
    eps: float,
    m: Measurement,
) -> None:
    """Judge the outputs ``crossed`` (bool, as many as the output) by their interval: ``m``'s ``lo`` and ``hi``
    widened in place and, for a kinked activation, its ``crossed`` counted (steps exactly ``eps``)."""
    if not crossed.any():
        return
    g = reductions.g
    idx = np.nonzero(crossed.reshape(g.shape))
    f0, fp, fm, gi = reductions.f0[idx], f_plus[idx], f_minus[idx], g[idx]
    gp = gi * ((fp - f0) / eps)
    gm = gi * ((f0 - fm) / eps)
    mid = gi * (fp - fm) / (2.0 * eps)
    counted = _widen(group, count, idx, gp, gm, mid, m.lo, m.hi)
    if not reductions.smooth:
        m.crossed = counted


def _measure_run(
    reductions: Reductions, groups: list[Group], count: int, diff: np.ndarray, eps: float
) -> list[Measurement]:
    """``Reductions.exact``'s measurements before crossings are judged, for groups of one ownership that share
    their owners and their entry count, from ``diff: (B, positions, C_out)``, ``G·(f⁺ − f⁻)`` per group: the
    sums per position, per channel or of everything in one reduction over the stack (a row of it adds in the
    order the reduction of that row alone does), then ``_owner_sums`` and ``_starts`` as for one group."""
    first, runs = groups[0], len(groups)
    if first.ownership is Ownership.ALL:
        sums = diff.reshape(runs, -1).sum(axis=-1)  # (B,)
    elif first.ownership is Ownership.POSITION:
        sums = diff.sum(axis=-1)  # (B, positions)
    else:
        sums = diff.sum(axis=1)  # (B, C_out)
    span = np.full(count, 2.0 * eps)
    return _starts(reductions, first, count, _owner_sums(reductions, first, count, sums) / span, span)


def _owner_sums(reductions: Reductions, group: Group, count: int, axis_sums: np.ndarray) -> np.ndarray:
    """``(B, count)``: for each of B groups sharing ``group``'s owners, its ``axis_sums`` (per position: ``(B, N,
    *O)`` or ``(B, positions)``; per output; per channel: ``(B, C_out)``; the total: ``(B,)``) summed over the
    outputs each local entry owns. Each row the same numbers, bit for bit, as that row alone: the groups' slots
    are offset by ``count`` into one ``bincount``, which adds each bin's weights in their input order whatever
    the other bins are."""
    runs = len(axis_sums)
    if group.ownership is Ownership.ALL:
        return axis_sums.reshape(runs, 1).astype(np.float64)
    owner = group.owner
    assert owner is not None
    flat = axis_sums.reshape(runs, -1)
    if group.ownership in (Ownership.POSITION, Ownership.OUTPUT):
        owned, slots = reductions._owned_slots(owner)
        weights = flat[:, owned.reshape(-1)]
    elif count == len(owner):
        return flat[:, owner].astype(np.float64)
    else:
        slots, weights = owner, flat
    if runs > 1:
        slots = slots + count * np.arange(runs)[:, None]
    return np.bincount(slots.reshape(-1), weights=weights.reshape(-1), minlength=runs * count).reshape(runs, count)


def _starts(
    reductions: Reductions, group: Group, count: int, central: np.ndarray, span: np.ndarray
) -> list[Measurement]:
    """For each row of ``central: (B, count)`` (groups sharing ``group``'s owners), a measurement with its interval
    collapsed to that row, its noise and (smooth, not along a direction) its truncation bound: what depends on
    the owners alone computed once. Each measurement has rows of its own: callers widen them in place."""
    runs = len(central)
    gs2, absg = reductions._owner_constants(group, count)
    noise = np.sqrt(2.0 * gs2) / span
    truncation = np.zeros(count)
    if reductions.smooth and group.direction is None:
        truncation = reductions._truncation(group, span, absg)
    lo, hi = central.copy(), central.copy()
    noises, truncations = np.empty((runs, count)), np.empty((runs, count))
    noises[...], truncations[...] = noise, truncation
    crossed = np.zeros((runs, count), dtype=np.int64)
    return [Measurement(central[k], lo[k], hi[k], crossed[k], noises[k], truncations[k]) for k in range(runs)]


def _per_output_steps(group: Group, steps: np.ndarray) -> np.ndarray | float:
    """Broadcast each local entry's step to the outputs it owns."""
    if np.all(steps == steps[0]):
        return float(steps[0])
    if group.ownership is Ownership.POSITION:
        padded = np.append(steps, steps[0])  # index −1 (no owner) picks a harmless value
        return padded[group.owner][..., None]
    if group.ownership is Ownership.OUTPUT:
        return np.append(steps, steps[0])[group.owner]
    if group.ownership is Ownership.CHANNEL:
        return steps[group.owner]
    return float(steps[0])


def _widen(
    group: Group,
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
    slots = _slots_of(group, idx)
    owned = slots >= 0
    slots, gp, gm, mid = slots[owned], gp[owned], gm[owned], mid[owned]
    lo += np.bincount(slots, weights=np.minimum(gp, gm) - mid, minlength=count)
    hi += np.bincount(slots, weights=np.maximum(gp, gm) - mid, minlength=count)
    return np.bincount(slots, minlength=count)


def _slots_of(group: Group, idx: tuple[np.ndarray, ...]) -> np.ndarray:
    """Local entry owning each output listed in ``idx`` (a tuple of index arrays into out)."""
    owner = group.owner
    if group.ownership is Ownership.POSITION:
        assert owner is not None
        return owner[idx[:-1]]
    if group.ownership is Ownership.OUTPUT:
        assert owner is not None
        return owner[idx]
    if group.ownership is Ownership.CHANNEL:
        assert owner is not None
        return owner[idx[-1]]
    return np.zeros(len(idx[0]), dtype=np.int64)
