"""The framework forms of ``impl:`` and the ``device`` key: torch and JAX layers.

::

    impl: {framework: torch, function: layers.py:ConvFn}          # torch.autograd.Function or a function
    impl: {framework: torch, module: layers.py, class: Conv}       # torch.nn.Module subclass
    impl: {framework: jax, function: layers.py:conv}               # e.g. with jax.custom_vjp
    device: cuda:1                                                 # optional; default: the framework's

``module:`` and ``NAME`` may be given apart or as ``FILE.py:NAME`` (or ``package.module:NAME``). A framework this
Python cannot import refuses the config (nothing runs) with the command that installs it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from convcheck.config.errors import ConfigError, hint, join, shorten
from convcheck.config.tree import Doc, Entry, Node
from convcheck.spec import Framework, ImplRef
from convcheck.user.frameworks import install_hint, missing

__all__ = ["DEVICE_PATTERN", "FRAMEWORK_ONLY_KEYS", "device_problem", "framework_impl"]

DEVICE_PATTERN = r"^(cpu|cuda|gpu|tpu|mps|rocm)(:[0-9]+)?$"  # also in the schema
_DEVICE_RE = re.compile(DEVICE_PATTERN)
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FRAMEWORK_ONLY_KEYS = ("framework", "function", "class")
_NUMPY_ONLY_KEYS = ("forward", "backward", "signature")


def device_problem(raw: object) -> str | None:
    """Why ``raw`` is not a device name (None when it is one)."""
    if isinstance(raw, str) and _DEVICE_RE.match(raw):
        return None
    return f"{shorten(str(raw))!r} is not a device such as cpu, cuda or cuda:1"


def framework_impl(
    names: dict[str, str], nodes: Mapping[str, Entry], node: Node, field: str, doc: Doc
) -> ImplRef | list[ConfigError]:
    """An ``ImplRef`` for a validated-as-strings framework mapping, or the list of its ``ConfigError``s."""
    errors: list[ConfigError] = []

    def error(at: Node | Entry, key: str, message: str, allowed: str) -> None:
        errors.append(doc.error(at, join(field, key), message, allowed))

    framework = _framework(names, nodes, node, error)
    for key in _NUMPY_ONLY_KEYS:
        if key in names:
            error(nodes[key], key, f"{key} is for numpy layers; a framework layer is one object", "function or class")
    chosen = [key for key in ("function", "class") if key in names]
    if len(chosen) != 1:
        message = "give one of function or class" if not chosen else "give function or class, not both"
        error(node, chosen[-1] if chosen else "function", message, "function: FILE.py:NAME, or class: NAME")
    module, name = _split(names, chosen[0] if chosen else "", nodes, error)
    if framework is Framework.JAX and "class" in names:
        error(nodes["class"], "class", "class is for torch.nn.Module layers", "function: FILE.py:NAME for jax")
    if errors or framework is None or module is None or name is None:
        return errors
    return ImplRef(
        module=module,
        base_dir=doc.base_dir,
        framework=framework,
        function=name if "function" in names else None,
        class_name=name if "class" in names else None,
    )


def _framework(
    names: dict[str, str], nodes: Mapping[str, Entry], node: Node, error: Callable[..., None]
) -> Framework | None:
    choices = tuple(member.value for member in Framework)
    if "framework" not in names:
        error(node, "framework", "function and class need a framework", ", ".join(choices))
        return None
    text = names["framework"]
    if text not in choices:
        error(
            nodes["framework"].node,
            "framework",
            f"unknown framework {shorten(text)!r}{hint(text, choices)}",
            ", ".join(choices),
        )
        return None
    framework = Framework(text)
    absent = missing(framework)
    if absent:
        error(
            nodes["framework"].node,
            "framework",
            f"{framework.value} is not installed for this Python (no {', '.join(absent)}): {install_hint(framework)}",
            "an installed framework",
        )
        return None
    return framework


def _split(
    names: dict[str, str], key: str, nodes: Mapping[str, Entry], error: Callable[..., None]
) -> tuple[str | None, str | None]:
    """``(module, name)`` from ``module:`` and ``function:``/``class:`` (``NAME`` or ``FILE.py:NAME``)."""
    if not key:
        return None, None
    text = names[key]
    module, colon, name = text.rpartition(":")
    if not colon:
        module, name = names.get("module", ""), text
    elif "module" in names:
        error(nodes[key].node, key, f"{shorten(text)!r} names its module, and module: is given too", "one of them")
        return None, None
    if not module:
        error(nodes[key].node, key, f"{shorten(text)!r} names no module", "FILE.py:NAME, or module: FILE.py with NAME")
        return None, None
    if not _NAME_RE.match(name):
        error(nodes[key].node, key, f"{shorten(name)!r} is not a Python name", "FILE.py:NAME")
        return None, None
    return module, name
