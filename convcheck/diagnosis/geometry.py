"""Where windows reach, one spatial axis at a time (coordinates are input rows/columns), and how an error
pattern lies on that geometry. Masks are ``(H,)``/``(W,)`` per axis, ``(H, W)`` per position."""

from __future__ import annotations

import numpy as np

from convcheck.diagnosis.evidence import Gradient
from convcheck.spec import ConvShape


def _coverage(size: int, k: int, s: int, p: int, count: int) -> np.ndarray:
    """How many windows cover each input row ``0..size-1`` (window ``i`` starts at padded row ``i·s``)."""
    cov = np.zeros(size + 2 * p + k + s * count, dtype=int)
    for i in range(count):
        cov[i * s : i * s + k] += 1
    return cov[p : p + size]


def window_rows(i: int, size: int, k: int, s: int, p: int) -> np.ndarray:
    """Boolean mask of the input rows window ``i`` covers."""
    rows = np.arange(size) + p
    return (rows >= i * s) & (rows < i * s + k)


def coverage_hw(shape: ConvShape) -> np.ndarray:
    """Windows covering each input position, ``(H, W)``."""
    k, s, p = shape.filter_size, shape.stride, shape.padding
    return np.outer(
        _coverage(shape.in_height, k, s, p, shape.out_height), _coverage(shape.in_width, k, s, p, shape.out_width)
    )


def last_windows(shape: ConvShape) -> tuple[np.ndarray, np.ndarray]:
    """Input rows and columns the last row and column of windows cover (none along an axis with one window:
    there the "last" windows are all of them)."""
    k, s, p = shape.filter_size, shape.stride, shape.padding
    rows = window_rows(shape.out_height - 1, shape.in_height, k, s, p) & (shape.out_height > 1)
    cols = window_rows(shape.out_width - 1, shape.in_width, k, s, p) & (shape.out_width > 1)
    return rows, cols


def hw(mask: np.ndarray) -> np.ndarray:
    """An ``(N, H, W, C)`` mask projected onto ``(H, W)`` (any over batch and channels)."""
    return np.asarray(mask.any(axis=(0, 3)))


def right_positions(t: Gradient, region: np.ndarray) -> int:
    """Positions ``(h, w)`` in ``region`` with a clearly nonzero gradient that are right at every entry."""
    return int(np.sum(region & hw(t.informative) & ~hw(t.bad)))


def overlap_evidence(t: Gradient, shape: ConvShape) -> str:
    """How dx's wrong positions split between those several windows cover and those one window covers."""
    cov = coverage_hw(shape)
    bad = hw(t.bad)
    several, single = cov > 1, cov == 1
    text = f"wrong at {int((bad & several).sum())} of the {int(several.sum())} positions several windows cover"
    if single.any():
        text += f", right at the {int(single.sum())} positions one window covers"
    return text


def stride_evidence(t: Gradient, shape: ConvShape) -> list[str]:
    """What a window placement without the stride leaves in dx: exact zeros past where stride-1 windows end,
    nonzero values where no window reaches."""
    k, p = shape.filter_size, shape.padding
    a, n = t.analytic, t.numeric
    found = []
    for axis, size, count, word in (
        (1, shape.in_height, shape.out_height, "row"),
        (2, shape.in_width, shape.out_width, "column"),
    ):
        end = count - 1 + k - p  # first input row past windows placed every 1 row
        if count > 1 and 0 < end < size:
            beyond = np.take(a, np.arange(end, size), axis=axis)
            just_before = np.take(a, [end - 1], axis=axis)
            if not np.any(beyond) and np.any(just_before) and np.any(np.take(n, np.arange(end, size), axis=axis)):
                found.append(f"exactly 0 from {word} {end} on")
    cov = coverage_hw(shape)
    unreached = cov == 0
    if unreached.any() and np.any(hw(a != 0) & unreached):
        found.append(f"nonzero at {int(np.sum(hw(a != 0) & unreached))} positions no window reaches")
    return found
