"""An independent direct convolution, used to check any implementation's forward pass.

It shares no code with the im2col layer: it takes a strided sliding-window *view* of the padded input
(no copies, no matrix unfolding) and contracts it with the filters by ``einsum``. Tests prove it equals a
plain six-loop convolution.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from convcheck import activation as act
from convcheck.spec import Activation


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """Cross-correlation with zero padding, before any activation.

    Args:
        x: (N, H, W, C_in)
        w: (k, k, C_in, C_out)
        b: (C_out,)
    Returns:
        z: (N, OH, OW, C_out) with ``OH = (H + 2p − k) // s + 1``.
    """
    k = w.shape[0]
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    # windows: (N, Hp-k+1, Wp-k+1, C_in, kh, kw); keep every stride-th window start.
    windows = sliding_window_view(padded, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    z = np.einsum("nhwcij,ijco->nhwo", windows, w, optimize=True)
    return z + b


def forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, padding: int, activation: Activation
) -> np.ndarray:
    """``activation(conv2d(x, w, b))``: ``(N, H, W, C_in)`` → ``(N, OH, OW, C_out)``."""
    return act.apply(activation, conv2d(x, w, b, stride, padding))


def magnitude(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """``Σ |x|·|w| + |b|`` per output element: the scale of the terms each pre-activation sums.

    Rounding error in a computed pre-activation is bounded by a multiple of this, not of ``|z|`` (which
    cancellation can make arbitrarily small). The rounding model in ``tolerance.py`` uses it.
    """
    return conv2d(np.abs(x), np.abs(w), np.abs(b), stride, padding)
