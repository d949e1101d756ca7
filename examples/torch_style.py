"""A torch-style convolution in numpy for 1-, 2- and 3-D inputs: channels first, weights (C_out, C_in/groups, *k).

x (N, C_in, *spatial), w (C_out, C_in // groups, *k), b (C_out,) or None, out (N, C_out, *out) with, per axis,
out = (in + before + after − dilation·(k − 1) − 1) // stride + 1. convcheck passes stride and dilation as one
int or a tuple per axis, padding as one int, a tuple per axis, or (before, after) pairs per axis, and dilation
and groups as keyword arguments. No activation (check it with ``activation: none``).

One loop over the kernel taps: each tap reads a strided slice of the padded input, and every group's channels
meet only their own filters (an einsum over the group axis).
"""

import itertools

import numpy as np


def _per_axis(value, dims):
    return (value,) * dims if isinstance(value, int) else tuple(value)


def _pads(padding, dims):
    return tuple((p, p) if isinstance(p, int) else tuple(p) for p in _per_axis(padding, dims))


def _tap(offsets, strides, out_sizes):
    """The slices of the padded input that one kernel tap reads for every output position."""
    return tuple(slice(o, o + s * (n - 1) + 1, s) for o, s, n in zip(offsets, strides, out_sizes, strict=True))


def forward(x, w, b, stride, padding, dilation=1, groups=1):
    dims = x.ndim - 2
    strides, dilations, pads = _per_axis(stride, dims), _per_axis(dilation, dims), _pads(padding, dims)
    n, c_in = x.shape[:2]
    c_out, c_group, *kernel = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), *pads))
    out_sizes = [
        (size - d * (k - 1) - 1) // s + 1
        for size, k, s, d in zip(xp.shape[2:], kernel, strides, dilations, strict=True)
    ]
    xg = xp.reshape(n, groups, c_group, *xp.shape[2:])
    wg = w.reshape(groups, c_out // groups, c_group, *kernel)
    out = np.zeros((n, groups, c_out // groups, *out_sizes), dtype=x.dtype)
    for taps in itertools.product(*(range(k) for k in kernel)):
        window = xg[(..., *_tap([t * d for t, d in zip(taps, dilations, strict=True)], strides, out_sizes))]
        out += np.einsum("ngc...,gfc->ngf...", window, wg[(..., *taps)])
    out = out.reshape(n, c_out, *out_sizes)
    if b is not None:
        out += b.reshape(1, c_out, *([1] * dims))
    return out, (x, w, b, strides, dilations, pads, groups)


def backward(dout, cache):
    x, w, b, strides, dilations, pads, groups = cache
    n, c_in, *spatial = x.shape
    c_out, c_group, *kernel = w.shape
    out_sizes = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), *pads))
    xg = xp.reshape(n, groups, c_group, *xp.shape[2:])
    wg = w.reshape(groups, c_out // groups, c_group, *kernel)
    dg = dout.reshape(n, groups, c_out // groups, *out_sizes)
    dg_flat = dg.reshape(n, groups, c_out // groups, -1)
    dxg, dwg = np.zeros_like(xg), np.zeros_like(wg)
    for taps in itertools.product(*(range(k) for k in kernel)):
        where = (..., *_tap([t * d for t, d in zip(taps, dilations, strict=True)], strides, out_sizes))
        dwg[(..., *taps)] = np.einsum("ngcp,ngfp->gfc", xg[where].reshape(n, groups, c_group, -1), dg_flat)
        dxg[where] += np.einsum("ngf...,gfc->ngc...", dg, wg[(..., *taps)])
    crop = tuple(slice(before, before + size) for (before, _), size in zip(pads, spatial, strict=True))
    dx = dxg.reshape(xp.shape)[(slice(None), slice(None), *crop)]
    db = None if b is None else dout.sum(axis=(0, *range(2, dout.ndim)))
    return dx, dwg.reshape(w.shape), db
