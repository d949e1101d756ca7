"""The ``backward`` benchmark: the built-in layer's backward on the seed layer against its GEMM floor (the two
matrix products alone), torch's float64 conv2d backward (when torch is installed) and the seed's loop algorithm
(``seed_loop.py``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import seed_loop
from harness import SKIP_TORCH, interleaved, torch_or_none
from rows import SEED_SHAPE, Row, seed_data

from convcheck.layer import MatrixConvLayer
from convcheck.spec import Activation
from convcheck.user.shapes import TO_NCHW


def bench_backward(rounds: int) -> list[Row]:
    _, data = seed_data()
    s = SEED_SHAPE
    layer = MatrixConvLayer(s.stride, s.padding, Activation.RELU)
    _, cache = layer.forward(data.x, data.w, data.b)
    dz = data.dout.reshape(-1, s.out_depth)

    def floor():
        return cache.cols.T @ dz, dz @ cache.weights.T

    def loop():
        return seed_loop.backward(
            data.dout, cache.cols, cache.activated, cache.weights, s.x_shape, s.filter_size, s.stride, s.padding
        )

    ours = layer.backward(data.dout, cache)
    theirs = loop()
    agree = all(
        np.allclose(a, np.reshape(b, a.shape), rtol=1e-12, atol=1e-12) for a, b in zip(ours, theirs, strict=True)
    )
    if not agree:
        raise AssertionError("the loop baseline and the built-in backward disagree")

    candidates = {
        "backward": lambda: layer.backward(data.dout, cache),
        "floor": floor,
        "loop": loop,
        "forward": lambda: layer.forward(data.x, data.w, data.b),
    }
    torch = torch_or_none()
    if torch is not None:
        candidates["torch"] = _torch_backward(torch, data)
    best = interleaved(candidates, rounds, every={"loop": max(1, rounds // 5)})
    ms = {name: 1e3 * t for name, t in best.items()}
    rows = [
        Row("backward", "built-in backward", ms["backward"], "ms", note="seed layer, float64, relu"),
        Row("backward", "GEMM floor (Mᵀ·dZ and dZ·Wᵀ)", ms["floor"], "ms"),
        Row("backward", "built-in forward", ms["forward"], "ms"),
        Row("backward", "seed loop baseline", ms["loop"], "ms", note="benchmarks/seed_loop.py"),
        Row(
            "backward",
            "backward / GEMM floor",
            ms["backward"] / ms["floor"],
            "×",
            "≤ 1.4 (when torch is absent)",
            ms["backward"] / ms["floor"] <= 1.4,
        ),
        Row(
            "backward",
            "loop baseline / backward",
            ms["loop"] / ms["backward"],
            "×",
            "≥ 8",
            ms["loop"] / ms["backward"] >= 8,
        ),
    ]
    if "torch" in ms:
        ratio = ms["backward"] / ms["torch"]
        rows.insert(2, Row("backward", f"torch {torch.__version__} conv2d+relu backward", ms["torch"], "ms"))
        rows.append(Row("backward", "backward / torch", ratio, "×", "≤ 1.25", ratio <= 1.25))
    else:
        rows.append(Row("backward", "backward / torch", float("nan"), "×", "≤ 1.25", None, SKIP_TORCH))
    return rows


def _torch_backward(torch, data) -> Callable[[], object]:
    """torch's float64 CPU backward of relu(conv2d(x, w, b)) at the same data: threshold and convolution backward."""
    x = torch.from_numpy(np.ascontiguousarray(data.x.transpose(TO_NCHW["x"])))
    w = torch.from_numpy(np.ascontiguousarray(data.w.transpose(TO_NCHW["w"])))
    b = torch.from_numpy(data.b)
    s = SEED_SHAPE
    out = torch.relu(torch.nn.functional.conv2d(x, w, b, s.stride, s.padding))
    g = torch.from_numpy(np.ascontiguousarray(data.dout.transpose(TO_NCHW["out"])))
    ops = torch.ops.aten

    def run():
        gz = ops.threshold_backward(g, out, 0)
        return ops.convolution_backward(
            gz, x, w, [s.out_depth], [s.stride] * 2, [s.padding] * 2, [1, 1], False, [0, 0], 1, [True, True, True]
        )

    return run
