"""The interface the checking engine sees: a layer with stride, padding and activation already bound.

convcheck's own ``MatrixConvLayer`` satisfies it directly; a user's functions are wrapped by the adapter in
``convcheck.user.adapter`` so that the engine is written once, for NHWC arrays:

    x: (N, H, W, C_in), w: (k, k, C_in, C_out), b: (C_out,), out and dout: (N, OH, OW, C_out)
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class ConvLayer(Protocol):
    def forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, Any]:
        """``(x, w, b)`` → ``(out, cache)``."""
        ...

    def backward(self, dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(dout, cache)`` → ``(dx, dw, db)`` shaped like ``(x, w, b)``."""
        ...
