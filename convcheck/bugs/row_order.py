"""Row-order mistakes as formulas, shared by the planted bugs and the diagnosis rules that name them.

im2col lays each window out as ``(kh, kw, c_in)``; PyTorch's habit is ``(c_in, kh, kw)``. Reading one order
as the other scrambles a row of dM (``dcols: (R, k·k·C_in)``) or the rows of dW (``(k·k·C_in, C_out)``).
A planted bug and the hypothesis that names it must compute the same wrong gradient, so both call these.
The functions only reshape and transpose, so they also map index arrays (the diagnosis uses them that way).
"""

from __future__ import annotations

import numpy as np


def dm_read_channels_first(dcols: np.ndarray, filter_size: int, in_depth: int) -> np.ndarray:
    """dM with each row read as ``(c_in, kh, kw)`` though im2col wrote ``(kh, kw, c_in)``, in ``dcols``'s shape."""
    k, c = filter_size, in_depth
    return dcols.reshape(-1, c, k, k).transpose(0, 2, 3, 1).reshape(dcols.shape)


def dm_read_channels_last(dcols: np.ndarray, filter_size: int, in_depth: int) -> np.ndarray:
    """The converse: each row read as ``(kh, kw, c_in)`` though it was written ``(c_in, kh, kw)``."""
    k, c = filter_size, in_depth
    return dcols.reshape(-1, k, k, c).transpose(0, 3, 1, 2).reshape(dcols.shape)


def dw_read_channels_first(dw: np.ndarray, w_shape: tuple[int, ...]) -> np.ndarray:
    """dW's ``k·k·C_in`` rows read in ``(c_in, kh, kw)`` order though M's columns are ``(kh, kw, c_in)``.

    Args:
        dw: ``(k·k·C_in, C_out)`` or already ``(k, k, C_in, C_out)`` (C-order either way).
        w_shape: ``(k, k, C_in, C_out)``.
    Returns:
        A ``(k, k, C_in, C_out)`` view (not a copy) of ``dw`` in the wrong order.
    """
    k, _, c_in, c_out = w_shape
    return dw.reshape(c_in, k, k, c_out).transpose(1, 2, 0, 3)


def dw_written_channels_first(dw: np.ndarray, w_shape: tuple[int, ...]) -> np.ndarray:
    """The converse: ``dw: (k, k, C_in, C_out)`` written out with its rows in ``(c_in, kh, kw)`` order."""
    return dw.transpose(2, 0, 1, 3).reshape(w_shape)
