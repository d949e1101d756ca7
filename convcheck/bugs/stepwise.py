"""The correct layer split into the seed's backward steps: every planted bug overrides exactly one of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np

from convcheck import activation as act
from convcheck.bugs.fold import grouped_dw, split_groups
from convcheck.geometry import Window
from convcheck.layer import MatrixCache, MatrixConvLayer
from convcheck.spec import Activation, ConvShape
from convcheck.windows import col2im, fold


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

    The steps hold for every geometry ``ConvShape`` covers (``window_of`` is the layer's window; with g groups
    ``M``, ``W`` and ``dM`` hold one matrix per group, as in ``MatrixCache``); the seed's bugs override them
    for its 2-D layers, the ``window`` and ``grouped`` families for the rest.
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
        return dout.reshape(-1, cache.w_shape[-1])

    def through_activation(self, da: np.ndarray, cache: MatrixCache) -> np.ndarray:
        """``dZ = dA ⊙ act'(Z)``, ``(R, C_out)``."""
        slope = act.derivative(self.activation, cache.pre_activation, cache.activated)
        return da if slope is None else da * slope

    @classmethod
    def stepwise_for(cls, shape: ConvShape, activation: Activation) -> StepwiseLayer:
        """``for_shape``, typed as the stepwise layer it builds (a fresh instance bound to ``shape``'s geometry)."""
        return cast(StepwiseLayer, cls.for_shape(shape, activation))

    def window_of(self, cache: MatrixCache) -> Window:
        """The window the forward that made ``cache`` used."""
        return self.geometry(len(cache.x_shape) - 2)

    def weights_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        """``dW = Mᵀ·dZ``: ``(K, C_out)`` viewed as ``(k, k, C_in, C_out)`` (per group ``dW_γ = M_γᵀ·dZ_γ``)."""
        groups = self.window_of(cache).groups
        if groups == 1:
            return (cache.cols.T @ dz).reshape(cache.w_shape)
        return grouped_dw(self.weights_grad_per_group(dz, cache), cache.w_shape)

    def weights_grad_per_group(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        """``dW_γ = M_γᵀ·dZ_γ``: ``(g, ∏k·C_in/g, C_out/g)``."""
        return cache.cols.transpose(0, 2, 1) @ split_groups(dz, self.window_of(cache).groups)

    def bias_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        """``db = Σ_rows dZ``: every output position adds the bias once; ``(0,)`` for a layer without one."""
        return dz.sum(axis=0) if cache.bias else np.zeros(0, dz.dtype)

    def cols_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        """``dM = dZ·Wᵀ``, ``(R, K)``: one row per window (per group ``dM_γ = dZ_γ·W_γᵀ``, ``(g, R, K/g)``)."""
        groups = self.window_of(cache).groups
        if groups == 1:
            return dz @ cache.weights.T
        return split_groups(dz, groups) @ cache.weights.transpose(0, 2, 1)

    def fold(self, dcols: np.ndarray, cache: MatrixCache) -> np.ndarray:
        """col2im with accumulation, then the padding crop: ``(R, K)`` → ``(N, H, W, C_in)`` (any kernel: the seed's
        ints with a rectangular kernel too)."""
        return fold(dcols, cache.x_shape, cache.w_shape[:-2], self.window_of(cache))


def fold_uncropped(dcols: np.ndarray, cache: MatrixCache, stride: int, padding: int) -> np.ndarray:
    """col2im without the crop: ``(R, K)`` → the padded gradient ``(N, H + 2p, W + 2p, C_in)``.

    Reuses ``col2im`` by telling it the padded input is the input and there is no padding (the windows, and
    so ``OH``/``OW``, are the same); the bugs that get only the crop wrong start from this.
    """
    n, h, w, c = cache.x_shape
    return col2im(dcols, (n, h + 2 * padding, w + 2 * padding, c), cache.w_shape[0], stride, 0)
