"""What the torch and JAX adapters share: finding the named object, and which keywords a signature takes."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

from convcheck.spec import ImplRef
from convcheck.user.errors import ImplementationError
from convcheck.user.frameworks import FrameworkCall

__all__ = ["fetch", "keywords_for"]


def fetch(module: ModuleType, name: str, ref: ImplRef, origin: str) -> object:
    """The object ``name`` of the user's module.

    Raises:
        ImplementationError: it does not exist; the message lists the public names the module does define.
    """
    if hasattr(module, name):
        return getattr(module, name)
    defined = sorted(key for key, value in vars(module).items() if not key.startswith("_") and callable(value))
    listing = ", ".join(defined[:12]) + (", …" if len(defined) > 12 else "") or "none"
    role = "class" if ref.class_name is not None else "function"
    raise ImplementationError(
        f"implementation {origin} has no {name!r} (named as the {role}). What it defines: {listing}.",
        file=getattr(module, "__file__", None),
    )


def keywords_for(fn: Callable[..., Any], call: FrameworkCall, what: str) -> dict[str, object]:
    """The keywords of ``call`` that ``fn``'s signature accepts (all of them for ``**kwargs``).

    Raises:
        ImplementationError: a keyword whose value is not its default (the check needs it) is not accepted; a
            needed hyperparameter is never silently dropped.
    """
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature: pass only what the check needs
        return {key: value for key, value in call.keywords.items() if value != call.defaults.get(key)}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    accepted = {
        key: value
        for key, value in call.keywords.items()
        if takes_any or (key in parameters and parameters[key].kind is not inspect.Parameter.POSITIONAL_ONLY)
    }
    needed = [key for key, value in call.keywords.items() if key not in accepted and value != call.defaults.get(key)]
    if needed:
        wanted = ", ".join(f"{key}={call.keywords[key]!r}" for key in needed)
        raise ImplementationError(
            f"{what} takes no {' or '.join(needed)} parameter, but this check needs {wanted}: add the parameter "
            "(as torch.nn.functional.conv2d names it) or leave the hyperparameter at its default"
        )
    return accepted
