"""The contract's shapes in each layout, the channels-last↔channels-first permutations, and messages for a
wrong shape.

Shapes of the seed's 2-D layer, per layout (``OH = (H + 2p − k) // s + 1``, likewise ``OW``)::

              nhwc (convcheck's internal layout)     nchw (PyTorch, CS231n)
    x, dx     (N, H, W, C_in)                        (N, C_in, H, W)
    w, dw     (k, k, C_in, C_out)                    (C_out, C_in, k, k)
    b, db     (C_out,)                               (C_out,)
    out, dout (N, OH, OW, C_out)                     (N, C_out, OH, OW)

``nhwc`` and ``nchw`` mean channels last and channels first for every ``dims``: a 1-D layer's x is ``(N, W, C_in)``
or ``(N, C_in, W)``, a 3-D one's ``(N, F, H, W, C_in)`` or ``(N, C_in, F, H, W)``; weights are
``(*k, C_in/g, C_out)`` or torch's ``(C_out, C_in/g, *k)``, with ``g`` the groups.

Tensors are named as the contract names them: ``x``, ``w``, ``b``, ``out`` (gradients share their tensor's
shape and permutation). A wrong shape is described, never repaired: the message says what the shape looks like
(a textbook ``keepdims=True`` bias gradient, the other layout, an uncropped padded ``dx``, …).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from convcheck.geometry import Window
from convcheck.spec import Layout

__all__ = [
    "TO_NCHW",
    "channels_first",
    "TO_NHWC",
    "expected_shape",
    "layer_dims",
    "named_dims",
    "shape_problem",
    "to_engine",
    "to_user",
    "user_index",
]


def channels_first(tensor: str, ndim: int) -> tuple[int, ...]:
    """The permutation of an engine array of ``ndim`` axes to channels first: an nchw user's array is
    ``engine_array.transpose(channels_first(tensor, ndim))`` (``b`` is the same in both layouts). Also an index
    map: ``user_index[i] = engine_index[permutation[i]]``."""
    if tensor in ("x", "out"):
        return (0, ndim - 1, *range(1, ndim - 1))
    if tensor == "w":
        return (ndim - 1, ndim - 2, *range(ndim - 2))
    return tuple(range(ndim))


#: The permutations of the 2-D layer's arrays (``channels_first`` of 4 axes).
TO_NCHW: dict[str, tuple[int, ...]] = {tensor: channels_first(tensor, 4) for tensor in ("x", "w", "out")}


def _inverse(permutation: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(permutation.index(axis) for axis in range(len(permutation)))


def to_user(array: np.ndarray, tensor: str, layout: Layout) -> np.ndarray:
    """A fresh C-contiguous copy of an engine array in the user's layout."""
    if layout is Layout.NCHW:
        return array.transpose(channels_first(tensor, array.ndim)).copy()
    return array.copy()


def to_engine(array: np.ndarray, tensor: str, layout: Layout) -> np.ndarray:
    """A fresh copy of a user's array (of the contract's shape) in the engine's channels-last layout."""
    if layout is Layout.NCHW:
        return array.transpose(_inverse(channels_first(tensor, array.ndim))).copy()
    return np.array(array, copy=True)


#: Back to convcheck's layout: ``engine_array = user_array.transpose(TO_NHWC[tensor])``.
TO_NHWC: dict[str, tuple[int, ...]] = {tensor: _inverse(p) for tensor, p in TO_NCHW.items()}


def user_index(tensor: str, index: Sequence[int], layout: Layout) -> tuple[int, ...]:
    """An NHWC index of ``tensor`` (``x``, ``w``, ``b``, ``out``) as an index into the array in ``layout``."""
    if layout is Layout.NHWC or tensor not in TO_NCHW:
        return tuple(index)
    return tuple(index[axis] for axis in channels_first(tensor, len(index)))


_SPATIAL = {1: ("W",), 2: ("H", "W"), 3: ("F", "H", "W")}  # size names per number of spatial axes


def _axes(layout: Layout, dims: dict[str, int]) -> dict[str, tuple[str, ...]]:
    """Axis names per tensor in ``layout``; sizes come from ``layer_dims`` or ``named_dims``. The seed's layer
    names its kernel ``k, k``; a kernel whose axes differ names them ``kH, kW``; grouped weights have ``C_in/g``."""
    spatial = _SPATIAL[dims.get("dims", 2)]
    kernel = ("k",) * len(spatial) if "k" in dims else tuple(f"k{axis}" for axis in spatial)
    last = {
        "x": ("N", *spatial, "C_in"),
        "w": (*kernel, "C_in" if dims.get("g", 1) == 1 else "C_in/g", "C_out"),
        "b": ("C_out",),
        "out": ("N", *(f"O{axis}" for axis in spatial), "C_out"),
    }
    if layout is Layout.NHWC:
        return last
    return {tensor: tuple(names[i] for i in channels_first(tensor, len(names))) for tensor, names in last.items()}


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


def layer_dims(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], window: Window | int, padding: int = 0
) -> dict[str, int]:
    """Named sizes from convcheck's channels-last ``x: (N, *spatial, C_in)`` and ``w: (*k, C_in/g, C_out)`` for a
    layer of ``window`` (or of the seed's ``stride`` and ``padding``, as ints)."""
    if not isinstance(window, Window):
        window = Window.of(len(x_shape) - 2, window, padding)
    spatial, kernel = x_shape[1:-1], w_shape[:-2]
    dims = named_dims(x_shape, w_shape, window.output_sizes(spatial, kernel))
    uniform = window.uniform(spatial, kernel)
    if uniform is not None and len(set(kernel)) == 1:
        stride, padding = uniform
        h, w = spatial
        dims.update({"Hp": h + 2 * padding, "Wp": w + 2 * padding, "s": stride, "p": padding})
    return dims


def named_dims(x_shape: tuple[int, ...], w_shape: tuple[int, ...], out_sizes: Sequence[int]) -> dict[str, int]:
    """The sizes shape messages name, for a layer whose stride and padding are unknown (output sizes given)."""
    n, *spatial, c_in = x_shape
    *kernel, c_group, c_out = w_shape
    names = _SPATIAL[len(spatial)]
    dims = {"N": n, "C_in": c_in, "C_out": c_out, "one": 1, "dims": len(spatial), "g": max(1, c_in // c_group)}
    dims.update(zip(names, spatial, strict=True))
    dims.update(zip((f"O{axis}" for axis in names), out_sizes, strict=True))
    dims.update(zip((f"k{axis}" for axis in names), kernel, strict=True))
    if len(set(kernel)) == 1:
        dims["k"] = kernel[0]
    dims.update({"C_in/g": c_group, "kkC": math.prod(kernel) * c_group, "NOHOW": n * math.prod(out_sizes)})
    return dims


def _axes_text(axes: tuple[str, ...]) -> str:
    return f"({axes[0]},)" if len(axes) == 1 else f"({', '.join(axes)})"


def expected_shape(tensor: str, layout: Layout, dims: dict[str, int]) -> tuple[int, ...]:
    """The contract's shape of ``tensor`` (``x``, ``w``, ``b`` or ``out``; gradients share their tensor's)."""
    return tuple(dims[axis] for axis in _axes(layout, dims)[tensor])


def shape_problem(name: str, tensor: str, got: tuple[int, ...], layout: Layout, dims: dict[str, int]) -> str | None:
    """Why ``got`` is the wrong shape for ``tensor`` in ``layout``, or None when it is right.

    Args:
        name: what the message calls the array (``db``, ``forward's out``, …).
        tensor: which contract shape applies: ``x``, ``w``, ``b`` or ``out``.
        got: the shape the user's code returned.
        layout: the user's layout.
        dims: named sizes from ``layer_dims``.
    """
    axes = _axes(layout, dims)[tensor]
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
