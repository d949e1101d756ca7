"""An independent direct convolution, used to check any implementation's forward pass.

It shares no code with the im2col layer: it takes a sliding-window *view* of the zero-padded input (``numpy.pad``
and ``sliding_window_view``: no copies, no matrix unfolding), keeps every ``stride``-th window and every
``dilation``-th tap of each, and contracts it with the filters by ``einsum`` — per group, with the channels split
into ``(group, channel within group)`` on both sides. Tests prove it equals a plain loop convolution.

Arrays are channels-last as in ``convcheck.spec``: ``x: (N, *S, C_in)``, ``w: (*kernel, C_in/g, C_out)``,
``b: (C_out,)`` or ``(0,)`` (no bias), result ``(N, *O, C_out)``. The geometry comes as a ``Window``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from convcheck import activation as act
from convcheck.geometry import Window
from convcheck.spec import Activation

_LETTERS = "ijk"  # kernel offset axes in the einsum subscripts (spatial positions use "dhw")


def convolve(x: np.ndarray, w: np.ndarray, b: np.ndarray, window: Window) -> np.ndarray:
    """Cross-correlation with zero padding, before any activation.

    Args:
        x: (N, *S, C_in)
        w: (*kernel, C_in/groups, C_out)
        b: (C_out,), or (0,) for a layer without a bias
        window: strides, dilations, padding and groups.
    Returns:
        z: (N, *O, C_out) with ``O = (S + before + after − d·(k − 1) − 1) // s + 1`` per axis.
    """
    dims = x.ndim - 2
    kernel = w.shape[:dims]
    pads = window.resolve_pads(x.shape[1:-1], kernel)
    padded = np.pad(x, ((0, 0), *pads, (0, 0)))
    spans = tuple(d * (k - 1) + 1 for k, d in zip(kernel, window.dilations, strict=True))
    spatial = tuple(range(1, dims + 1))
    # windows: (N, *(Sp − span + 1), C_in, *span); keep every stride-th start and every dilation-th tap.
    views = sliding_window_view(padded, spans, axis=spatial)
    starts = (slice(None), *(slice(None, None, s) for s in window.strides), slice(None))
    taps_kept: tuple[Any, ...] = (Ellipsis, *(slice(None, None, d) for d in window.dilations))
    views = views[starts][taps_kept]
    where, taps = "dhw"[3 - dims :], _LETTERS[:dims]
    groups = window.groups
    if groups == 1:
        z = np.einsum(f"n{where}c{taps},{taps}co->n{where}o", views, w, optimize=True)
    else:
        c_out = w.shape[-1]
        split = views.reshape(*views.shape[: dims + 1], groups, -1, *views.shape[dims + 2 :])
        filters = w.reshape(*kernel, w.shape[-2], groups, c_out // groups)
        z = np.einsum(f"n{where}gc{taps},{taps}cgo->n{where}go", split, filters, optimize=True)
        z = z.reshape(*z.shape[: dims + 1], c_out)
    return z + b if b.size else z


def forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, window: Window, activation: Activation) -> np.ndarray:
    """``activation(convolve(x, w, b))``: ``(N, *S, C_in)`` → ``(N, *O, C_out)``."""
    return act.apply(activation, convolve(x, w, b, window))


def magnitude(x: np.ndarray, w: np.ndarray, b: np.ndarray, window: Window) -> np.ndarray:
    """``Σ |x|·|w| + |b|`` per output element: the scale of the terms each pre-activation sums.

    Rounding error in a computed pre-activation is bounded by a multiple of this, not of ``|z|`` (which
    cancellation can make arbitrarily small). The rounding model in ``tolerance.py`` uses it.
    """
    return convolve(np.abs(x), np.abs(w), np.abs(b), window)
