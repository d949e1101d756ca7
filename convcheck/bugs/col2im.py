"""col2im with the knobs people get wrong, shared by the planted bugs and the diagnosis hypotheses.

A planted bug and the hypothesis that names it must compute the same wrong gradient, so both call these.
``dcols: (R, k·k·C_in)`` holds one row per window in ``(n, oh, ow)`` order, each laid out ``(kh, kw, c_in)``;
the result is the cropped input gradient ``(N, H, W, C_in)``.
"""

from __future__ import annotations

import numpy as np

from convcheck.spec import output_size


def col2im_variant(
    dcols: np.ndarray,
    x_shape: tuple[int, ...],
    filter_size: int,
    stride: int,
    padding: int,
    *,
    place_stride: int | None = None,
    accumulate: bool = True,
) -> np.ndarray:
    """col2im as in ``convcheck.windows``, then the padding crop, with the two knobs people get wrong exposed.

    Args:
        dcols: ``(R, k·k·C_in)``, ``R = N·OH·OW`` with ``OH``, ``OW`` from the layer's ``stride``.
        x_shape: ``(N, H, W, C_in)``, the input's shape.
        place_stride: the step between neighbouring windows' corners (None: the layer's ``stride``, correct).
        accumulate: False writes ``=`` instead of ``+=`` in (kh, kw) order, so where windows overlap the
            last kernel offset wins.
    Returns:
        The cropped gradient ``(N, H, W, C_in)``, contiguous, in ``dcols``'s dtype.
    """
    n, h, w, c = x_shape
    k = filter_size
    oh, ow = output_size(h, k, stride, padding), output_size(w, k, stride, padding)
    step = stride if place_stride is None else place_stride
    d6 = dcols.reshape(n, oh, ow, k, k, c)
    dpadded = np.zeros((n, h + 2 * padding, w + 2 * padding, c), dtype=dcols.dtype)
    for kh in range(k):
        rows = slice(kh, kh + step * (oh - 1) + 1, step)
        for kw in range(k):
            cols = slice(kw, kw + step * (ow - 1) + 1, step)
            if accumulate:
                dpadded[:, rows, cols, :] += d6[:, :, :, kh, kw, :]
            else:
                dpadded[:, rows, cols, :] = d6[:, :, :, kh, kw, :]
    return np.ascontiguousarray(dpadded[:, padding : padding + h, padding : padding + w, :])


def col2im_assign_by_window(
    dcols: np.ndarray, x_shape: tuple[int, ...], filter_size: int, stride: int, padding: int
) -> np.ndarray:
    """col2im written as the seed's loop over windows but with ``=`` for ``+=``.

    Args:
        dcols: ``(R, k·k·C_in)`` as in ``col2im_variant``.
        x_shape: ``(N, H, W, C_in)``.
    Returns:
        The cropped gradient ``(N, H, W, C_in)``; the window visited last (row-major over (oh, ow)) wins each
        overlapped entry.
    """
    n, h, w, c = x_shape
    k = filter_size
    oh, ow = output_size(h, k, stride, padding), output_size(w, k, stride, padding)
    d6 = dcols.reshape(n, oh, ow, k, k, c)
    dpadded = np.zeros((n, h + 2 * padding, w + 2 * padding, c), dtype=dcols.dtype)
    for i in range(oh):
        for j in range(ow):
            dpadded[:, i * stride : i * stride + k, j * stride : j * stride + k, :] = d6[:, i, j]
    return np.ascontiguousarray(dpadded[:, padding : padding + h, padding : padding + w, :])
