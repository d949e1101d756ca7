"""An NHWC im2col layer that, like many course solutions, refuses geometries its index arithmetic does not
handle: a stride that does not divide H + 2p − k (and W + 2p − k). Checked with ``expected_error`` in
configs/features.yaml, those checks are skipped as refused rather than failed."""

import numpy as np


def _windows(x_padded, k, stride, out_h, out_w):
    n, _, _, c = x_padded.shape
    cols = np.empty((n, out_h, out_w, k, k, c), dtype=x_padded.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, :, i, j, :] = x_padded[:, i : i + stride * out_h : stride, j : j + stride * out_w : stride, :]
    return cols.reshape(n * out_h * out_w, k * k * c)


def forward(x, w, b, stride, padding):
    n, h, width, c = x.shape
    k, _, _, f = w.shape
    if (h + 2 * padding - k) % stride or (width + 2 * padding - k) % stride:
        raise ValueError(f"stride {stride} does not divide the padded input minus the filter size")
    out_h = (h + 2 * padding - k) // stride + 1
    out_w = (width + 2 * padding - k) // stride + 1
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    cols = _windows(xp, k, stride, out_h, out_w)
    z = cols @ w.reshape(k * k * c, f) + b
    out = np.maximum(z, 0)
    return out.reshape(n, out_h, out_w, f), (x.shape, w, cols, z, stride, padding)


def backward(dout, cache):
    x_shape, w, cols, z, stride, padding = cache
    n, h, width, c = x_shape
    k, _, _, f = w.shape
    dz = dout.reshape(-1, f) * (z > 0)
    dw = (cols.T @ dz).reshape(w.shape)
    db = dz.sum(axis=0)
    dcols = (dz @ w.reshape(k * k * c, f).T).reshape(n, dout.shape[1], dout.shape[2], k, k, c)
    dxp = np.zeros((n, h + 2 * padding, width + 2 * padding, c), dtype=dout.dtype)
    out_h, out_w = dout.shape[1:3]
    for i in range(k):
        for j in range(k):
            dxp[:, i : i + stride * out_h : stride, j : j + stride * out_w : stride, :] += dcols[:, :, :, i, j, :]
    return dxp[:, padding : padding + h, padding : padding + width, :], dw, db
