"""The im2col layer of ``im2col_nhwc.py`` with a classic col2im bug: it assigns instead of accumulating.

Where windows overlap (stride < filter size), an input entry belongs to several windows and its gradient is
the sum of their contributions; assigning keeps only the last one. The forward pass, dw and db are right; dx
is wrong at every entry that more than one window covers (with k=3, s=1, p=1: all of them).
``convcheck run buggy_col2im.yaml`` shows the failure.
"""

import numpy as np


def _window_indices(out_h, out_w, k, stride):
    """Row and column indices, broadcastable to (OH, OW, k, k): window (i, j), offset (di, dj)."""
    rows = (np.arange(out_h) * stride)[:, None] + np.arange(k)[None, :]  # (OH, k)
    cols = (np.arange(out_w) * stride)[:, None] + np.arange(k)[None, :]  # (OW, k)
    return rows[:, None, :, None], cols[None, :, None, :]


def forward(x, w, b, stride, padding):
    """Returns (out, cache); out (N, OH, OW, C_out) = relu(conv(x, w) + b)."""
    n, h, width, c_in = x.shape
    k, _, _, c_out = w.shape
    out_h = (h + 2 * padding - k) // stride + 1
    out_w = (width + 2 * padding - k) // stride + 1
    x_pad = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    rows, cols = _window_indices(out_h, out_w, k, stride)
    patches = x_pad[:, rows, cols, :]  # (N, OH, OW, k, k, C_in)
    matrix = patches.reshape(n * out_h * out_w, k * k * c_in)
    z = matrix @ w.reshape(k * k * c_in, c_out) + b  # (N·OH·OW, C_out)
    out = np.maximum(z, 0).reshape(n, out_h, out_w, c_out)
    cache = {"matrix": matrix, "z": z, "w": w, "x_pad_shape": x_pad.shape, "stride": stride, "padding": padding}
    return out, cache


def col2im(dmatrix, x_pad_shape, k, stride, out_h, out_w):
    """Put every window's gradient back onto the padded input: (N·OH·OW, k·k·C) → (N, Hp, Wp, C)."""
    n, _, _, c = x_pad_shape
    windows = dmatrix.reshape(n, out_h, out_w, k, k, c)
    dx_pad = np.zeros(x_pad_shape, dtype=dmatrix.dtype)
    for i in range(out_h):
        for j in range(out_w):
            # BUG: `=` where a correct col2im has `+=`: where windows overlap, only the last window's gradient survives.
            dx_pad[:, i * stride : i * stride + k, j * stride : j * stride + k, :] = windows[:, i, j]
    return dx_pad


def backward(dout, cache):
    """dout (N, OH, OW, C_out) → (dx (N, H, W, C_in), dw (k, k, C_in, C_out), db (C_out,))."""
    matrix, z, w = cache["matrix"], cache["z"], cache["w"]
    stride, padding = cache["stride"], cache["padding"]
    k, _, c_in, c_out = w.shape
    _, out_h, out_w, _ = dout.shape
    dz = dout.reshape(-1, c_out) * (z > 0)
    dw = (matrix.T @ dz).reshape(w.shape)
    db = dz.sum(axis=0)
    dmatrix = dz @ w.reshape(k * k * c_in, c_out).T
    dx_pad = col2im(dmatrix, cache["x_pad_shape"], k, stride, out_h, out_w)
    _, hp, wp, _ = dx_pad.shape
    dx = dx_pad[:, padding : hp - padding, padding : wp - padding, :]
    return dx, dw, db
