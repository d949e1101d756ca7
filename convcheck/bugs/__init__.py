"""A catalogue of planted bugs: realistic mistakes in the matrix convolution layer, each a small diff from it.

A gradient checker is only worth running if a fail means "wrong"; the way to prove that is to feed it layers
that are wrong in the ways people actually get them wrong, and show every one is caught, in the right tensor.
Each entry is such a layer. They all start from ``StepwiseLayer``, the built-in ``MatrixConvLayer``
with its backward split into the seed's steps (dout → matrix, activation mask, ``dW``, ``db``, ``dM``, col2im
and crop); a bug overrides exactly the step it gets wrong, so its class body *is* the mistake.

Every entry also records

- ``tensors``: what the mistake corrupts — ``"forward"`` (the output itself), ``"input"`` (dx),
  ``"weights"`` (dw), ``"bias"`` (db) — on the layers that expose it;
- ``hint``: the keyword the diagnosis rules (issue 6) should name for it;
- ``exposed_by`` / ``exposes(shape, activation)``: which geometry makes the bug visible, in words and as a
  predicate (``col2im-assign`` is harmless when windows never overlap, ``padding-crop-unguarded`` only bites at
  ``padding = 0``, …). Tests prove the predicate: a bug changes its tensors exactly on the layers it names.

Shapes follow ``convcheck.spec``: ``x: (N, H, W, C_in)``, ``w: (k, k, C_in, C_out)``, ``b: (C_out,)``,
``out: (N, OH, OW, C_out)``; the im2col matrix ``M`` is ``(R, k·k·C_in)`` with ``R = N·OH·OW`` rows.

The package is one module per family of mistakes (``activation``, ``input_grad``, ``param_grads``,
``forward`` in the seed's 2-D layer; ``window`` and ``grouped`` for the hyperparameters of the whole N-d space:
dilation, per-axis kernels and strides, per-side and ``same`` padding, groups, no bias), each holding its layers
and its ``BUGS`` entries; ``stepwise`` is the correct layer they start from, ``planted`` the entry type,
``col2im``, ``row_order`` and ``fold`` the wrong formulas the diagnosis hypotheses share. An entry with
``any_geometry`` is built with ``make_for(shape, …)`` and its ``exposes`` reads only per-axis values; the others
are the seed's layers (``make(stride, padding, …)``); those whose mistake means the same on any layer (col2im
assigning, ignoring the stride, reading rows in another order, dropping the last window, the crop one row
early, the flipped kernel, the bias reductions, the batch scaling, dW's layout without groups) also run on any
geometry through ``make_for``, their ``exposes`` still describing the seed's layers. A new bug goes into its
family's module; ``CATALOGUE`` below lists the families in the order the selftest shows.
"""

from __future__ import annotations

from convcheck.bugs import activation, forward, grouped, input_grad, param_grads, window
from convcheck.bugs.input_grad import CHUNK_ROWS
from convcheck.bugs.planted import TENSOR_ORDER, Exposure, PlantedBug
from convcheck.bugs.stepwise import StepwiseLayer

__all__ = ["CATALOGUE", "CHUNK_ROWS", "HINTS", "TENSOR_ORDER", "Exposure", "PlantedBug", "StepwiseLayer", "get", "ids"]

#: Every planted bug, family by family.
CATALOGUE: tuple[PlantedBug, ...] = (
    *activation.BUGS,
    *input_grad.BUGS,
    *param_grads.BUGS,
    *forward.BUGS,
    *window.BUGS,
    *grouped.BUGS,
)

#: The diagnosis keywords the catalogue expects (issue 6: each bug's failure should name its ``hint``).
HINTS: tuple[str, ...] = tuple(sorted({bug.hint for bug in CATALOGUE}))


_BY_ID = {bug.id: bug for bug in CATALOGUE}

if len(_BY_ID) != len(CATALOGUE):  # pragma: no cover - a duplicate id is a programming error
    raise RuntimeError("duplicate planted-bug ids")


def get(bug_id: str) -> PlantedBug:
    """The catalogue entry with this id.

    Raises:
        KeyError: no such bug; the message lists the known ids.
    """
    try:
        return _BY_ID[bug_id]
    except KeyError:
        raise KeyError(f"unknown planted bug {bug_id!r}; known: {', '.join(_BY_ID)}") from None


def ids() -> tuple[str, ...]:
    """Every bug id, in catalogue order."""
    return tuple(bug.id for bug in CATALOGUE)
