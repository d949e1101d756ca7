"""A 2-D convolution + ReLU in JAX with a hand-written backward (jax.custom_vjp; NHWC and HWIO weights)."""

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax


def _conv(x, w, stride, padding):
    pads = [(padding, padding)] * 2
    return lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def conv_relu(x, w, b, stride, padding):
    return jax.nn.relu(_conv(x, w, stride, padding) + b)


def _forward(x, w, b, stride, padding):
    out = conv_relu(x, w, b, stride, padding)
    return out, (x, w, out)


def _backward(stride, padding, saved, grad):
    x, w, out = saved
    grad_z = jnp.where(out > 0, grad, 0.0)  # through the ReLU
    _, conv_vjp = jax.vjp(lambda x, w: _conv(x, w, stride, padding), x, w)
    grad_x, grad_w = conv_vjp(grad_z)
    return grad_x, grad_w, grad_z.sum((0, 1, 2))


conv_relu.defvjp(_forward, _backward)
