"""Row-order mistakes as formulas, shared by the planted bugs and the diagnosis rules that name them.

im2col lays each window out as ``(kh, kw, c_in)``; PyTorch's habit is ``(c_in, kh, kw)``. Reading one order
as the other scrambles a row of dM (``dcols: (R, k·k·C_in)``) or the rows of dW (``(k·k·C_in, C_out)``).
A planted bug and the hypothesis that names it must compute the same wrong gradient, so both call these.
The functions only reshape and transpose, so they also map index arrays (the diagnosis uses them that way).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dm_read_channels_first(dcols: np.ndarray, kernel: Sequence[int], in_depth: int) -> np.ndarray:
    """dM with each row read as ``(c_in, *kernel)`` though im2col wrote ``(*kernel, c_in)``, in ``dcols``'s shape.

    ``dcols``: ``(R, ∏k·C_in)``, or per group ``(g, R, ∏k·C_in/g)`` with ``in_depth`` the channels of one group;
    ``kernel``: the kernel's extents (the seed's ``(k, k)``).
    """
    lead, dims = dcols.shape[:-1], len(kernel)
    nl = len(lead)
    read = dcols.reshape(*lead, in_depth, *kernel)
    return read.transpose(*range(nl), *range(nl + 1, nl + 1 + dims), nl).reshape(dcols.shape)


def dm_read_channels_last(dcols: np.ndarray, kernel: Sequence[int], in_depth: int) -> np.ndarray:
    """The converse: each row read as ``(*kernel, c_in)`` though it was written ``(c_in, *kernel)``."""
    lead, dims = dcols.shape[:-1], len(kernel)
    nl = len(lead)
    read = dcols.reshape(*lead, *kernel, in_depth)
    return read.transpose(*range(nl), nl + dims, *range(nl, nl + dims)).reshape(dcols.shape)


def dw_read_channels_first(dw: np.ndarray, w_shape: tuple[int, ...]) -> np.ndarray:
    """dW's ``∏k·C_in`` rows read in ``(c_in, *kernel)`` order though M's columns are ``(*kernel, c_in)``.

    Args:
        dw: ``(∏k·C_in, C_out)`` or already ``(*kernel, C_in, C_out)`` (C-order either way).
        w_shape: ``(*kernel, C_in, C_out)`` (the seed's ``(k, k, C_in, C_out)``; any number of kernel axes).
    Returns:
        A ``(*kernel, C_in, C_out)`` view (not a copy) of ``dw`` in the wrong order.
    """
    *kernel, c_in, c_out = w_shape
    dims = len(kernel)
    return dw.reshape(c_in, *kernel, c_out).transpose(*range(1, dims + 1), 0, dims + 1)


def dw_written_channels_first(dw: np.ndarray, w_shape: tuple[int, ...]) -> np.ndarray:
    """The converse: ``dw: (*kernel, C_in, C_out)`` written out with its rows in ``(c_in, *kernel)`` order."""
    dims = len(w_shape) - 2
    return dw.transpose(dims, *range(dims), dims + 1).reshape(w_shape)
