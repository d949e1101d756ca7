"""The seed's backward pass as the textbook page writes it: Python loops over every output position.

This is the loop baseline of ``benchmarks/run.py``. It follows the classic im2col exercise's page step by
step: turn ``dout`` into the matrix ``dfilter_data`` one output position at a time,
zero it where the activation was not positive, two matrix products for ``dweights`` and ``dmatric_data``, the
bias as a column sum, then add every row of ``dmatric_data`` back onto its window of the padded input (again one
output position at a time) and crop the padding. Unlike the page it takes its ``matric_data`` and
``filter_data`` from a real forward pass, crops ``[p : p + H]`` (the page's ``[p:-p]`` is only right for p > 0),
and honours the stride.

Shapes as in ``convcheck.spec``: x ``(N, H, W, C_in)``, weights matrix ``(k·k·C_in, C_out)``, dout
``(N, OH, OW, C_out)``.
"""

from __future__ import annotations

import numpy as np


def backward(
    dout: np.ndarray,
    matric_data: np.ndarray,
    filter_data: np.ndarray,
    weights: np.ndarray,
    x_shape: tuple[int, int, int, int],
    filter_size: int,
    stride: int,
    padding: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(din_data, dweights, dbias)``: dx ``(N, H, W, C_in)``, dW ``(k·k·C_in, C_out)``, db ``(1, C_out)``."""
    batch, out_height, out_width, _ = dout.shape
    _, in_height, in_width, in_depth = x_shape
    out_size = out_height * out_width

    # dout_data → dfilter_data: each output position's depth column is one row.
    dfilter_data = np.zeros_like(filter_data)
    for i_batch in range(batch):
        i_batch_size = i_batch * out_size
        for i_height in range(out_height):
            i_height_size = i_batch_size + i_height * out_width
            for i_width in range(out_width):
                dfilter_data[i_height_size + i_width, :] = dout[i_batch, i_height, i_width, :]

    # Through the activation (ReLU) and the fully connected product.
    dfilter_data[filter_data <= 0] = 0
    dweights = np.dot(matric_data.T, dfilter_data)
    dbias = np.sum(dfilter_data, axis=0, keepdims=True)
    dmatric_data = np.dot(dfilter_data, weights.T)

    # dmatric_data → the padded input's gradient, window by window (overlapping windows accumulate).
    padding_height = in_height + 2 * padding
    padding_width = in_width + 2 * padding
    dpadding_data = np.zeros((batch, padding_height, padding_width, in_depth))
    for i_batch in range(batch):
        i_batch_size = i_batch * out_size
        for i_h in range(out_height):
            top = i_h * stride
            i_height_size = i_batch_size + i_h * out_width
            for i_w in range(out_width):
                left = i_w * stride
                dpadding_data[i_batch, top : top + filter_size, left : left + filter_size, :] += dmatric_data[
                    i_height_size + i_w, :
                ].reshape(filter_size, filter_size, -1)
    din_data = dpadding_data[:, padding : padding + in_height, padding : padding + in_width, :]
    return din_data, dweights, dbias
