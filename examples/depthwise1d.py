"""A depthwise 1-D convolution in numpy, channels last: every channel has its own filter.

x (N, W, C), w (k, 1, C) (convcheck's channels-last weights (k, C_in/groups, C_out) with groups = C),
b (1, 1, C), broadcast against out (N, OW, C) (check it with ``bias_shape: broadcast``), and
OW = (W + before + after − k) // stride + 1. padding is an int or one (before, after) pair for the one axis.
``groups`` is accepted (it equals the channels) so that convcheck may pass it. No activation.
"""

import numpy as np


def forward(x, w, b, stride, padding, groups=1):
    before, after = (padding, padding) if isinstance(padding, int) else padding[0]
    xp = np.pad(x, ((0, 0), (before, after), (0, 0)))
    k = w.shape[0]
    out_w = (xp.shape[1] - k) // stride + 1
    out = np.zeros((x.shape[0], out_w, x.shape[2]), dtype=x.dtype)
    for i in range(out_w):
        out[:, i, :] = (xp[:, i * stride : i * stride + k, :] * w[:, 0, :]).sum(axis=1)
    return out + b, (x, w, stride, (before, after))


def backward(dout, cache):
    x, w, stride, (before, after) = cache
    xp = np.pad(x, ((0, 0), (before, after), (0, 0)))
    k = w.shape[0]
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(dout.shape[1]):
        rows = slice(i * stride, i * stride + k)
        dxp[:, rows, :] += dout[:, i : i + 1, :] * w[:, 0, :]
        dw[:, 0, :] += (xp[:, rows, :] * dout[:, i : i + 1, :]).sum(axis=0)
    db = dout.sum(axis=(0, 1), keepdims=True)
    return dxp[:, before : before + x.shape[1], :], dw, db
