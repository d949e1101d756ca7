"""The hyperparameters a user's forward is called with, each in the simplest form that represents it.

``stride`` and ``dilation``: an int when every axis has the same, else a tuple per axis (array order: frames,
height, width). ``padding``: an int when every axis and side has the same, else a tuple per axis when each axis
is symmetric, else a tuple of ``(before, after)`` pairs per axis (``same`` is resolved to its numbers for the
input's sizes). ``dilation`` and ``groups`` are keyword arguments, passed to a forward whose signature names
them (or takes ``**kwargs``); a check that needs one (a dilation or groups other than 1) of a forward that takes
neither is refused before it runs. The CS231n convention puts them into ``conv_param`` when they are not 1.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from convcheck.geometry import Window
from convcheck.spec import BiasShape, Layout, Signature

__all__ = [
    "accepted_keywords",
    "bias_shape",
    "call_values",
    "keyword_arguments",
    "needed_keywords",
    "refused_keywords",
]

_KEYWORDS = ("dilation", "groups")


def simplest(values: Sequence[int]) -> int | tuple[int, ...]:
    """One int when every axis has it, else the tuple."""
    return values[0] if len(set(values)) == 1 else tuple(values)


def call_values(
    window: Window, spatial: Sequence[int], kernel: Sequence[int]
) -> tuple[int | tuple[int, ...], int | tuple[Any, ...]]:
    """``(stride, padding)`` as the user's forward gets them for inputs of ``spatial`` sizes."""
    pads = window.resolve_pads(spatial, kernel)
    if len({p for pair in pads for p in pair}) == 1:
        padding: int | tuple[Any, ...] = pads[0][0]
    elif all(before == after for before, after in pads):
        padding = tuple(before for before, _ in pads)
    else:
        padding = tuple(pads)
    return simplest(window.strides), padding


def _values(window: Window) -> dict[str, int | tuple[int, ...]]:
    return {"dilation": simplest(window.dilations), "groups": window.groups}


def _needed(window: Window) -> list[str]:
    return [name for name, value in _values(window).items() if value != 1]


def _accepts(forward: Callable[..., Any]) -> set[str] | None:
    """The keywords of ``_KEYWORDS`` the function takes (all with ``**kwargs``); None without a signature."""
    try:
        parameters = inspect.signature(forward).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return set(_KEYWORDS)
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in parameters if p.name in _KEYWORDS and p.kind in keyword}


def window_keywords(window: Window) -> dict[str, int | tuple[int, ...]]:
    """The values of the keywords a forward may take (``dilation``, ``groups``), for a process that has the
    function (a remote layer sends these, and its child applies ``keywords_for``)."""
    return _values(window)


def keywords_for(forward: Callable[..., Any], values: dict[str, Any], signature: Signature) -> dict[str, Any]:
    """``keyword_arguments`` from the keywords' values (``window_keywords``) instead of the window."""
    accepted = _accepts(forward) if signature is Signature.CONVCHECK else None
    if accepted is None:
        return {name: value for name, value in values.items() if value != 1}
    return {name: value for name, value in values.items() if name in accepted}


def keyword_arguments(forward: Callable[..., Any], window: Window, signature: Signature) -> dict[str, Any]:
    """What the call adds: for the convcheck signature the keywords the forward takes (every one it names, even
    when 1), for CS231n the ``conv_param`` entries that are not 1."""
    values = _values(window)
    accepted = _accepts(forward) if signature is Signature.CONVCHECK else None
    if accepted is None:
        return {name: values[name] for name in _needed(window)}
    return {name: value for name, value in values.items() if name in accepted}


def accepted_keywords(forward: Callable[..., Any], signature: Signature) -> tuple[list[str] | None, str]:
    """What a forward takes of ``dilation``/``groups`` (None: any, or its signature cannot be read) and its
    signature as text, for a process that does not have the function (``refused_keywords``)."""
    accepted = _accepts(forward) if signature is Signature.CONVCHECK else None
    try:
        shown = str(inspect.signature(forward))
    except (TypeError, ValueError):
        shown = "(...)"
    return (None if accepted is None else sorted(accepted)), shown


def refused_keywords(accepted: Sequence[str] | None, shown: str, window: Window) -> str | None:
    """Why a forward that takes ``accepted`` of the keywords (None: any) cannot run a check with ``window`` (it
    takes no ``dilation``/``groups`` the check needs), or None. ``shown``: its signature, e.g. ``(x, w, b, s, p)``."""
    missing = [name for name in _needed(window) if accepted is not None and name not in accepted]
    if not missing:
        return None
    values = _values(window)
    wanted = ", ".join(f"{name}={values[name]}" for name in missing)
    names = " and ".join(missing)
    return (
        f"this check needs {wanted}, but forward{shown} takes no {names} keyword: add "
        f"{', '.join(f'{name}=1' for name in missing)} to its parameters (convcheck passes {names} as keyword "
        f"arguments), or check it with {' and '.join(f'{name}: 1' for name in missing)}"
    )


def needed_keywords(forward: Callable[..., Any], window: Window, signature: Signature) -> str | None:
    """Why the forward cannot run this check (it takes no ``dilation``/``groups`` the check needs), or None."""
    return refused_keywords(*accepted_keywords(forward, signature), window)


def bias_shape(kind: BiasShape, layout: Layout, ndim: int, c_out: int) -> tuple[int, ...]:
    """The user's ``b`` (and ``db``) shape for arrays of ``ndim`` axes (x's) with ``c_out`` filters."""
    if kind is BiasShape.COLUMN:
        return (c_out, 1)
    if kind is BiasShape.ROW:
        return (1, c_out)
    if kind is BiasShape.BROADCAST:
        ones = (1,) * (ndim - 2)
        return (1, *ones, c_out) if layout is Layout.NHWC else (1, c_out, *ones)
    return (c_out,)
