"""The contract's shapes in each layout, the NHWC↔NCHW permutations, and messages for a wrong shape.

Shapes, per layout (``OH = (H + 2p − k) // s + 1``, likewise ``OW``)::

              nhwc (convcheck's internal layout)     nchw (PyTorch, CS231n)
    x, dx     (N, H, W, C_in)                        (N, C_in, H, W)
    w, dw     (k, k, C_in, C_out)                    (C_out, C_in, k, k)
    b, db     (C_out,)                               (C_out,)
    out, dout (N, OH, OW, C_out)                     (N, C_out, OH, OW)

Tensors are named as the contract names them: ``x``, ``w``, ``b``, ``out`` (gradients share their tensor's
shape and permutation). A wrong shape is described, never repaired: the message says what the shape looks like
(a textbook ``keepdims=True`` bias gradient, the other layout, an uncropped padded ``dx``, …).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from convcheck.spec import Layout, output_size

__all__ = [
    "TO_NCHW",
    "TO_NHWC",
    "expected_shape",
    "layer_dims",
    "named_dims",
    "shape_problem",
    "user_index",
]

#: The one permutation table: an nchw user's array is ``engine_array.transpose(TO_NCHW[tensor])`` (``b`` is
#: the same in both layouts). Also an index map: ``user_index[i] = engine_index[TO_NCHW[tensor][i]]``.
TO_NCHW: dict[str, tuple[int, ...]] = {"x": (0, 3, 1, 2), "w": (3, 2, 0, 1), "out": (0, 3, 1, 2)}


def _inverse(permutation: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(permutation.index(axis) for axis in range(len(permutation)))


#: Back to convcheck's layout: ``engine_array = user_array.transpose(TO_NHWC[tensor])``.
TO_NHWC: dict[str, tuple[int, ...]] = {tensor: _inverse(p) for tensor, p in TO_NCHW.items()}


def user_index(tensor: str, index: Sequence[int], layout: Layout) -> tuple[int, ...]:
    """An NHWC index of ``tensor`` (``x``, ``w``, ``b``, ``out``) as an index into the array in ``layout``."""
    if layout is Layout.NHWC or tensor not in TO_NCHW:
        return tuple(index)
    return tuple(index[axis] for axis in TO_NCHW[tensor])


# Axis names per layout; sizes come from ``layer_dims`` or ``named_dims``.
_AXES: dict[Layout, dict[str, tuple[str, ...]]] = {
    Layout.NHWC: {
        "x": ("N", "H", "W", "C_in"),
        "w": ("k", "k", "C_in", "C_out"),
        "b": ("C_out",),
        "out": ("N", "OH", "OW", "C_out"),
    },
    Layout.NCHW: {
        "x": ("N", "C_in", "H", "W"),
        "w": ("C_out", "C_in", "k", "k"),
        "b": ("C_out",),
        "out": ("N", "C_out", "OH", "OW"),
    },
}

# Shapes that wrong implementations commonly hand back, and what each one suggests.
_LOOKALIKES: dict[str, tuple[tuple[tuple[str, ...], str], ...]] = {
    "x": (
        (("N", "H", "W", "C_in"), "the NHWC layout (N, H, W, C_in)"),
        (("N", "C_in", "H", "W"), "the NCHW layout (N, C_in, H, W)"),
        (("N", "Hp", "Wp", "C_in"), "the padded input (N, H + 2p, W + 2p, C_in): crop the padding off"),
        (("N", "C_in", "Hp", "Wp"), "the padded input (N, C_in, H + 2p, W + 2p): crop the padding off"),
    ),
    "w": (
        (("k", "k", "C_in", "C_out"), "the NHWC weight layout (k, k, C_in, C_out)"),
        (("C_out", "C_in", "k", "k"), "the NCHW weight layout (C_out, C_in, k, k)"),
        (("kkC", "C_out"), "the matrix form (k·k·C_in, C_out) of an im2col layer: reshape it"),
        (("C_out", "kkC"), "the matrix form (C_out, C_in·k·k): reshape it"),
        (("C_in", "C_out", "k", "k"), "(C_in, C_out, k, k): C_in and C_out swapped"),
        (("k", "k", "C_out", "C_in"), "(k, k, C_out, C_in): C_in and C_out swapped"),
    ),
    "b": (
        (
            ("one", "C_out"),
            "(1, C_out), what a sum with keepdims=True produces (as a textbook bias gradient often does): "
            "sum over axis 0 without keepdims",
        ),
        (("C_out", "one"), "(C_out, 1), a column vector: the contract wants a flat (C_out,)"),
        (
            ("one", "C_out", "one", "one"),
            "(1, C_out, 1, 1), what sum(axis=(0, 2, 3), keepdims=True) produces: drop keepdims",
        ),
        (
            ("one", "one", "one", "C_out"),
            "(1, 1, 1, C_out), what sum(axis=(0, 1, 2), keepdims=True) produces: drop keepdims",
        ),
    ),
    "out": (
        (("N", "OH", "OW", "C_out"), "the NHWC layout (N, OH, OW, C_out)"),
        (("N", "C_out", "OH", "OW"), "the NCHW layout (N, C_out, OH, OW)"),
        (("NOHOW", "C_out"), "the matrix form (N·OH·OW, C_out): reshape it"),
    ),
}


def layer_dims(x_shape: tuple[int, ...], w_shape: tuple[int, ...], stride: int, padding: int) -> dict[str, int]:
    """Named sizes from convcheck's NHWC ``x: (N, H, W, C_in)`` and ``w: (k, k, C_in, C_out)``."""
    _, h, w, _ = x_shape
    k = w_shape[0]
    dims = named_dims(x_shape, w_shape, output_size(h, k, stride, padding), output_size(w, k, stride, padding))
    dims.update({"Hp": h + 2 * padding, "Wp": w + 2 * padding, "s": stride, "p": padding})
    return dims


def named_dims(x_shape: tuple[int, ...], w_shape: tuple[int, ...], oh: int, ow: int) -> dict[str, int]:
    """The sizes shape messages name, for a layer whose stride and padding are unknown (output size given)."""
    n, h, w, c_in = x_shape
    k, _, _, c_out = w_shape
    return {
        "N": n,
        "H": h,
        "W": w,
        "C_in": c_in,
        "C_out": c_out,
        "k": k,
        "OH": oh,
        "OW": ow,
        "kkC": k * k * c_in,
        "NOHOW": n * oh * ow,
        "one": 1,
    }


def _axes_text(axes: tuple[str, ...]) -> str:
    return f"({axes[0]},)" if len(axes) == 1 else f"({', '.join(axes)})"


def expected_shape(tensor: str, layout: Layout, dims: dict[str, int]) -> tuple[int, ...]:
    """The contract's shape of ``tensor`` (``x``, ``w``, ``b`` or ``out``; gradients share their tensor's)."""
    return tuple(dims[axis] for axis in _AXES[layout][tensor])


def shape_problem(name: str, tensor: str, got: tuple[int, ...], layout: Layout, dims: dict[str, int]) -> str | None:
    """Why ``got`` is the wrong shape for ``tensor`` in ``layout``, or None when it is right.

    Args:
        name: what the message calls the array (``db``, ``forward's out``, …).
        tensor: which contract shape applies: ``x``, ``w``, ``b`` or ``out``.
        got: the shape the user's code returned.
        layout: the user's layout.
        dims: named sizes from ``layer_dims``.
    """
    axes = _AXES[layout][tensor]
    expected = tuple(dims[a] for a in axes)
    got = tuple(got)
    if got == expected:
        return None
    message = (
        f"{name} has shape {got}, but with layout {layout.value} the contract wants {_axes_text(axes)} = {expected}"
    )
    for candidate, meaning in _LOOKALIKES[tensor]:
        shape = tuple(dims.get(a, -1) for a in candidate)  # sizes a caller could not know never match
        if shape == got and shape != expected:
            return f"{message}; {shape} is {meaning}"
    if tensor == "out" and len(got) == 4 and "s" in dims:
        spatial = [i for i, a in enumerate(axes) if a in ("OH", "OW")]
        others_match = all(got[i] == expected[i] for i in range(4) if i not in spatial)
        if others_match:
            d = dims
            return (
                f"{message}: the output size is off; OH = (H + 2p − k) // s + 1 = "
                f"({d['H']} + 2·{d['p']} − {d['k']}) // {d['s']} + 1 = {d['OH']} and OW = "
                f"({d['W']} + 2·{d['p']} − {d['k']}) // {d['s']} + 1 = {d['OW']}"
            )
    if int(np.prod(got)) == int(np.prod(expected)):
        return f"{message}; it has the right number of entries in the wrong arrangement"
    return message
