"""What the tests of the built-in layer's output paths (``output``, ``outputs``) draw: one call's geometry, seed,
activation and dtype as ``@given`` keywords, and the call's arrays from that seed."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from convcheck.spec import Activation, ConvShape, DType
from tests.strategies import nd_geometries

#: The textbook 2-D layer the examples pin: batch 2, 9×7 input, 3 → 4 channels, k 3, stride 1, padding 1.
SEED_LIKE = ConvShape(2, 9, 7, 3, 4, 3, 1, 1)


def layer_calls(max_size: int) -> dict[str, st.SearchStrategy[Any]]:
    """The keywords of one call of the layer: a geometry of the whole N-d space (``nd_geometries``, spatial
    sizes up to ``max_size``), the arrays' seed, every activation, and float64 or float32."""
    return {
        "shape": nd_geometries(max_size=max_size),
        "seed": st.integers(0, 2**32 - 1),
        "activation": st.sampled_from(list(Activation)),
        "dtype": st.sampled_from([DType.FLOAT64, DType.FLOAT32]),
    }


def arrays(shape: ConvShape, seed: int, dtype: DType = DType.FLOAT64) -> list[np.ndarray]:
    """Standard normal ``x: shape.x_shape``, ``w: shape.w_shape`` and ``b: shape.b_shape`` from ``seed``, in
    ``dtype``."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype.value) for s in (shape.x_shape, shape.w_shape, shape.b_shape)]
