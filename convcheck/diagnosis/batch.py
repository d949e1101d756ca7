"""A hint across a batch: the checks that crashed share a geometric condition the others do not.

A layer that refuses a geometry (an ``assert`` that the stride tiles the input, square images only) or that
breaks on it (an index past the padded input) raises in some checks of a sweep and runs in the others. One
check alone cannot say why; the batch can: if the checks that ended in ``error`` are *exactly* those where a
condition holds, among all the checks that ran, the condition is the evidence. The conditions are tried in
order, most specific first, and the first that separates the two groups is named.

``crash_hint(results)`` is the hint for one layer's checks (or None); ``with_batch_hints(results)`` groups a
batch by layer and returns the results with each group's hint added to its crashed checks' ``diagnosis``: call
it once a batch is finished, before rendering (the table, the panel and the JSON then show it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from convcheck.diagnosis.shapes import OUTPUT_FORMULAS
from convcheck.results import CheckResult, Hint, Status
from convcheck.spec import ConvShape

__all__ = ["CONDITIONS", "crash_hint", "with_batch_hints"]


def _untiled(s: ConvShape) -> bool:
    k, st, p = s.filter_size, s.stride, s.padding
    return (s.in_height + 2 * p - k) % st != 0 or (s.in_width + 2 * p - k) % st != 0


#: (what holds where the checks crashed, the likely cause, the test on a layer's geometry), most specific first.
CONDITIONS: tuple[tuple[str, str, Callable[[ConvShape], bool]], ...] = (
    (
        "(H + 2p − k) or (W + 2p − k) is not a multiple of the stride",
        "the layer refuses (or breaks on) strides whose windows do not tile the padded input; support them "
        "(OH = (H + 2p − k) // s + 1 drops the rest), or declare the refusal",
        _untiled,
    ),
    (
        "H ≠ W",
        "the layer assumes square inputs (or mixes H and W); use H for rows and W for columns",
        lambda s: s.in_height != s.in_width,
    ),
    (
        "H > W",
        "an index or size meant for W is taken from H (or the other way round)",
        lambda s: s.in_height > s.in_width,
    ),
    (
        "H < W",
        "an index or size meant for H is taken from W (or the other way round)",
        lambda s: s.in_height < s.in_width,
    ),
    (
        "OH ≠ OW",
        "the output's row and column counts are mixed up (swapped loop indices, OW from H)",
        lambda s: s.out_height != s.out_width,
    ),
    (
        "the stride is > 1",
        "the stride is used wrongly (applied twice, or missing where windows are placed)",
        lambda s: s.stride > 1,
    ),
    (
        "the padding is > 0",
        "the padding is applied wrongly (twice, or the cropped size is wrong)",
        lambda s: s.padding > 0,
    ),
    ("the padding is 0", "a crop such as x[p:-p] is empty at p = 0; crop with p:p + H", lambda s: s.padding == 0),
    ("k is even", "the layer assumes an odd kernel (a centre, same padding)", lambda s: s.filter_size % 2 == 0),
    ("k = 1", "a 1×1 kernel: an axis of size 1 is squeezed away", lambda s: s.filter_size == 1),
    ("the stride is > k", "windows with gaps between them", lambda s: s.stride > s.filter_size),
    (
        "C_in ≠ C_out",
        "the input and output channels are mixed up (a transposed weight, a wrong reshape)",
        lambda s: s.in_depth != s.out_depth,
    ),
    ("the batch is 1", "an axis of size 1 is squeezed away (np.squeeze, or indexing [0])", lambda s: s.batch == 1),
    ("the batch is > 1", "the layer handles one sample (the batch axis is not looped over)", lambda s: s.batch > 1),
)


def _formula_conditions() -> tuple[tuple[str, str, Callable[[ConvShape], bool]], ...]:
    """ "OH or OW computed as <wrong formula> differs from the real one", for each known wrong formula: a layer
    that sizes its arrays by it breaks exactly there."""

    def differs(formula: Callable[[int, int, int, int], int]) -> Callable[[ConvShape], bool]:
        def holds(s: ConvShape) -> bool:
            k, st, p = s.filter_size, s.stride, s.padding
            return formula(s.in_height, k, st, p) != s.out_height or formula(s.in_width, k, st, p) != s.out_width

        return holds

    return tuple(
        (
            f"{what} differs from (H + 2p − k) // s + 1",
            f"the layer sizes an array as {what}: it breaks exactly where that is not the output size",
            differs(formula),
        )
        for what, formula in OUTPUT_FORMULAS
    )


def _ran(result: CheckResult) -> bool:
    """The check reached a verdict (pass or fail): the layer ran on its geometry."""
    return result.status is not Status.ERROR


def crash_hint(results: Sequence[CheckResult]) -> Hint | None:
    """The condition shared by exactly the checks that ended in ``error``, as a hint; None when there is none.

    Args:
        results: a batch's results (any order); checks whose geometry is invalid, or not the 2-D square-kernel
            geometry the conditions are written for (``ConvShape.is_basic``), are left out.
    Returns:
        A ``Hint`` labelled ``unsupported geometry`` naming the condition and how many checks are on each side,
        or None when no check crashed, none ran, or no condition separates them.
    """
    valid = [r for r in results if r.spec.shape.is_basic and not r.spec.shape.problems()]
    crashed = [r for r in valid if not _ran(r)]
    ran = [r for r in valid if _ran(r)]
    if not crashed or not ran:
        return None
    for condition, cause, holds in (*CONDITIONS, *_formula_conditions()):
        if all(holds(r.spec.shape) for r in crashed) and not any(holds(r.spec.shape) for r in ran):
            return Hint(
                "unsupported geometry",
                f"the {len(crashed)} check(s) that raised are exactly those where {condition}; the {len(ran)} where it "
                f"does not ran: {cause}",
            )
    return None


def with_batch_hints(results: Sequence[CheckResult]) -> tuple[CheckResult, ...]:
    """``results`` (in their order) with ``crash_hint``'s hint appended to each crashed check's diagnosis.

    The checks are grouped by the layer they ran (``spec.impl``, ``spec.layout``): one layer's crashes are
    compared with that layer's other checks only. Checks that ran are returned unchanged.
    """
    groups: dict[object, list[CheckResult]] = {}
    for r in results:
        groups.setdefault((r.spec.impl, r.spec.layout), []).append(r)
    hints = {key: crash_hint(group) for key, group in groups.items()}

    def marked(r: CheckResult) -> CheckResult:
        hint = hints[(r.spec.impl, r.spec.layout)]
        if hint is None or _ran(r) or not r.spec.shape.is_basic or r.spec.shape.problems():
            return r
        return dataclasses.replace(r, diagnosis=(*r.diagnosis, hint))

    return tuple(marked(r) for r in results)
