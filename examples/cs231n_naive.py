"""A CS231n-style naive convolution: NCHW, ``conv_param = {"stride": s, "pad": p}``, no activation.

Shapes: x (N, C, H, W), w (F, C, HH, WW), b (F,), out (N, F, H', W') with
H' = 1 + (H + 2·pad − HH) // stride and W' likewise. Check it with ``convcheck run cs231n_naive.yaml``
(``signature: cs231n`` in the config makes convcheck call it this way).

The loops run over output positions only; each step handles the whole batch and all filters at once.
"""

import numpy as np


def conv_forward_naive(x, w, b, conv_param):
    """Returns (out, cache): out (N, F, H', W'), cache (x, w, b, conv_param)."""
    stride, pad = conv_param["stride"], conv_param["pad"]
    n, _, h, width = x.shape
    f, _, hh, ww = w.shape
    out_h = 1 + (h + 2 * pad - hh) // stride
    out_w = 1 + (width + 2 * pad - ww) // stride
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="constant")
    out = np.zeros((n, f, out_h, out_w), dtype=x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            window = x_pad[:, :, i * stride : i * stride + hh, j * stride : j * stride + ww]  # (N, C, HH, WW)
            out[:, :, i, j] = np.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    """dout (N, F, H', W') → (dx (N, C, H, W), dw (F, C, HH, WW), db (F,))."""
    x, w, _, conv_param = cache
    stride, pad = conv_param["stride"], conv_param["pad"]
    _, _, h, width = x.shape
    _, _, hh, ww = w.shape
    _, _, out_h, out_w = dout.shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="constant")
    dx_pad = np.zeros_like(x_pad)
    dw = np.zeros_like(w)
    db = dout.sum(axis=(0, 2, 3))
    for i in range(out_h):
        for j in range(out_w):
            rows = slice(i * stride, i * stride + hh)
            cols = slice(j * stride, j * stride + ww)
            d = dout[:, :, i, j]  # (N, F)
            dw += np.tensordot(d, x_pad[:, :, rows, cols], axes=([0], [0]))  # (F, C, HH, WW)
            dx_pad[:, :, rows, cols] += np.tensordot(d, w, axes=([1], [0]))  # (N, C, HH, WW)
    dx = dx_pad[:, :, pad : pad + h, pad : pad + width]
    return dx, dw, db
