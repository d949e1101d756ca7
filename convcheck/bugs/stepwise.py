"""The correct layer split into the seed's backward steps: every planted bug overrides exactly one of them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convcheck import activation as act
from convcheck.layer import MatrixCache, MatrixConvLayer, col2im


@dataclass(frozen=True)
class StepwiseLayer(MatrixConvLayer):
    """``MatrixConvLayer`` with its backward split into the seed's steps; exactly as correct as the original.

    The steps, with ``R = N·OH·OW`` rows and ``K = k·k·C_in``:

    1. ``dout_matrix``: ``dout: (N, OH, OW, C_out)`` → ``dA: (R, C_out)`` (inverse of the forward's reshape);
    2. ``through_activation``: ``dZ = dA ⊙ act'(Z)``;
    3. ``weights_grad``: ``dW = Mᵀ·dZ`` reshaped to ``(k, k, C_in, C_out)``;
    4. ``bias_grad``: ``db = Σ_rows dZ``, ``(C_out,)``;
    5. ``cols_grad``: ``dM = dZ·Wᵀ``, ``(R, K)``;
    6. ``fold``: col2im (accumulating where windows overlap) and the padding crop → ``dx: (N, H, W, C_in)``.
    """

    def backward(self, dout: np.ndarray, cache: MatrixCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``dout: (N, OH, OW, C_out)`` → ``(dx, dw, db)`` shaped like ``(x, w, b)``."""
        dz = self.through_activation(self.dout_matrix(dout, cache), cache)
        return (
            self.fold(self.cols_grad(dz, cache), cache),
            self.weights_grad(dz, cache),
            self.bias_grad(dz, cache),
        )

    def dout_matrix(self, dout: np.ndarray, cache: MatrixCache) -> np.ndarray:
        """``(N, OH, OW, C_out)`` → ``(R, C_out)``, row ``(n·OH + oh)·OW + ow`` like the rows of ``M``."""
        return dout.reshape(-1, cache.weights.shape[1])

    def through_activation(self, da: np.ndarray, cache: MatrixCache) -> np.ndarray:
        """``dZ = dA ⊙ act'(Z)``, ``(R, C_out)``."""
        slope = act.derivative(self.activation, cache.pre_activation, cache.activated)
        return da if slope is None else da * slope

    def weights_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        """``dW = Mᵀ·dZ``: ``(K, C_out)`` viewed as ``(k, k, C_in, C_out)``."""
        return (cache.cols.T @ dz).reshape(cache.w_shape)

    def bias_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        """``db = Σ_rows dZ``: every output position adds the bias once."""
        return dz.sum(axis=0)

    def cols_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        """``dM = dZ·Wᵀ``, ``(R, K)``: one row per window."""
        return dz @ cache.weights.T

    def fold(self, dcols: np.ndarray, cache: MatrixCache) -> np.ndarray:
        """col2im with accumulation, then the padding crop: ``(R, K)`` → ``(N, H, W, C_in)``."""
        return col2im(dcols, cache.x_shape, cache.w_shape[0], self.stride, self.padding)


def fold_uncropped(dcols: np.ndarray, cache: MatrixCache, stride: int, padding: int) -> np.ndarray:
    """col2im without the crop: ``(R, K)`` → the padded gradient ``(N, H + 2p, W + 2p, C_in)``.

    Reuses ``col2im`` by telling it the padded input is the input and there is no padding (the windows, and
    so ``OH``/``OW``, are the same); the bugs that get only the crop wrong start from this.
    """
    n, h, w, c = cache.x_shape
    return col2im(dcols, (n, h + 2 * padding, w + 2 * padding, c), cache.w_shape[0], stride, 0)
