"""Activation mistakes: the derivative of the activation missing, inverted, or taken from the wrong tensor."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convcheck.bugs.planted import PlantedBug, relu
from convcheck.bugs.stepwise import StepwiseLayer
from convcheck.layer import MatrixCache
from convcheck.spec import Activation


@dataclass(frozen=True)
class ReluMaskMissing(StepwiseLayer):
    """Forgets the seed's ``dfilter_data[filter_data <= 0] = 0``: dout flows through the ReLU unmasked."""

    def through_activation(self, da: np.ndarray, cache: MatrixCache) -> np.ndarray:
        if self.activation is not Activation.RELU:
            return super().through_activation(da, cache)
        return da


@dataclass(frozen=True)
class ReluMaskFromDout(StepwiseLayer):
    """Masks by the sign of the incoming gradient (``dA[dA <= 0] = 0``) instead of the unit's output."""

    def through_activation(self, da: np.ndarray, cache: MatrixCache) -> np.ndarray:
        if self.activation is not Activation.RELU:
            return super().through_activation(da, cache)
        return da * (da > 0)


@dataclass(frozen=True)
class ReluMaskFromInput(StepwiseLayer):
    """Applies the ReLU mask on the wrong side of the layer: ``dM[M <= 0] = 0`` on the input matrix."""

    def through_activation(self, da: np.ndarray, cache: MatrixCache) -> np.ndarray:
        if self.activation is not Activation.RELU:
            return super().through_activation(da, cache)
        return da

    def cols_grad(self, dz: np.ndarray, cache: MatrixCache) -> np.ndarray:
        dcols = super().cols_grad(dz, cache)
        if self.activation is not Activation.RELU:
            return dcols
        return dcols * (cache.cols > 0)


@dataclass(frozen=True)
class ReluMaskInverted(StepwiseLayer):
    """The seed's mask with the comparison typed backwards: ``dfilter_data[filter_data > 0] = 0``."""

    def through_activation(self, da: np.ndarray, cache: MatrixCache) -> np.ndarray:
        if self.activation is not Activation.RELU:
            return super().through_activation(da, cache)
        return da * (cache.activated <= 0)


@dataclass(frozen=True)
class ActivationAfterParams(StepwiseLayer):
    """Computes ``dW`` and ``db`` from ``dA`` before the activation's derivative; only dx goes through it."""

    def backward(self, dout: np.ndarray, cache: MatrixCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        da = self.dout_matrix(dout, cache)
        dz = self.through_activation(da, cache)
        return (
            self.fold(self.cols_grad(dz, cache), cache),
            self.weights_grad(da, cache),
            self.bias_grad(da, cache),
        )


@dataclass(frozen=True)
class LeakySlopeForgotten(StepwiseLayer):
    """Leaky ReLU back-propagated as plain ReLU: the 0.01 slope on the negative side becomes 0."""

    def through_activation(self, da: np.ndarray, cache: MatrixCache) -> np.ndarray:
        if self.activation is not Activation.LEAKY_RELU:
            return super().through_activation(da, cache)
        return da * (cache.pre_activation > 0)


#: The activation family, in catalogue order.
BUGS: tuple[PlantedBug, ...] = (
    PlantedBug(
        "relu-mask-missing",
        "ReLU backward forgotten: dout passes through where the unit was off",
        ("input", "weights", "bias"),
        "activation mask",
        "activation relu",
        relu,
        ReluMaskMissing,
    ),
    PlantedBug(
        "relu-mask-from-dout",
        "ReLU mask taken from the sign of dout instead of the unit's output",
        ("input", "weights", "bias"),
        "activation mask",
        "activation relu",
        relu,
        ReluMaskFromDout,
    ),
    PlantedBug(
        "relu-mask-from-input",
        "ReLU mask applied to dM from the input matrix M (M <= 0) instead of to dZ",
        ("input", "weights", "bias"),
        "activation mask",
        "activation relu",
        relu,
        ReluMaskFromInput,
    ),
    PlantedBug(
        "relu-mask-inverted",
        "ReLU mask with the comparison reversed: gradient kept where the unit was off",
        ("input", "weights", "bias"),
        "activation mask",
        "activation relu",
        relu,
        ReluMaskInverted,
    ),
    PlantedBug(
        "activation-after-params",
        "dW and db computed from dout before the activation mask; only dx goes through it",
        ("weights", "bias"),
        "activation mask",
        "any activation but none",
        lambda shape, activation: activation is not Activation.NONE,
        ActivationAfterParams,
    ),
    PlantedBug(
        "leaky-slope-forgotten",
        "leaky ReLU back-propagated as ReLU: the negative-side slope becomes 0",
        ("input", "weights", "bias"),
        "activation mask",
        "activation leaky_relu",
        lambda shape, activation: activation is Activation.LEAKY_RELU,
        LeakySlopeForgotten,
    ),
)
