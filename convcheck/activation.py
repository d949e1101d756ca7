"""Activation functions and their derivatives, shared by the built-in layer and the reference forward.

Each derivative is written in terms of the pre-activation ``z`` so that the backward pass needs no
recomputation of the nonlinearity's inverse. At ReLU's kink (z == 0) the derivative is 0, as in the seed
(``dfilter_data[filter_data <= 0] = 0``).
"""

from __future__ import annotations

import numpy as np

from convcheck.spec import Activation

LEAKY_SLOPE = 0.01


def apply(activation: Activation, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Return ``activation(z)``; writes into ``out`` (which may be ``z`` itself) when given."""
    if out is None:
        out = np.empty_like(z)
    if activation is Activation.RELU:
        np.maximum(z, 0, out=out)
    elif activation is Activation.NONE:
        if out is not z:
            out[...] = z
    elif activation is Activation.LEAKY_RELU:
        np.multiply(z, np.where(z > 0, 1.0, LEAKY_SLOPE).astype(z.dtype), out=out)
    elif activation is Activation.SIGMOID:
        # exp of -|z| never overflows; split by sign for a stable logistic function.
        e = np.exp(-np.abs(z))
        np.divide(np.where(z >= 0, 1, e), 1 + e, out=out)
    elif activation is Activation.TANH:
        np.tanh(z, out=out)
    else:  # pragma: no cover - every member is handled above
        raise ValueError(f"unknown activation {activation!r}")
    return out


def derivative(activation: Activation, z: np.ndarray, a: np.ndarray) -> np.ndarray | None:
    """d activation / d z at ``z``, given ``a = activation(z)``; ``None`` means "identity, multiply by 1"."""
    if activation is Activation.RELU:
        return (z > 0).astype(z.dtype)
    if activation is Activation.NONE:
        return None
    if activation is Activation.LEAKY_RELU:
        return np.where(z > 0, 1.0, LEAKY_SLOPE).astype(z.dtype)
    if activation is Activation.SIGMOID:
        return a * (1 - a)
    if activation is Activation.TANH:
        return 1 - a * a
    raise ValueError(f"unknown activation {activation!r}")  # pragma: no cover
