"""Located values → settings: each key of a check (or of ``defaults:``) parsed by its :class:`~.keys.Kind`.

A setting is one value, or the distinct values a list sweeps. A bad value becomes a :class:`ConfigError` with
the key's ``allowed`` text; every bad value of a check is reported, not only the first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from pathlib import Path

from convcheck.config.document import CheckNode
from convcheck.config.errors import ConfigError, describe, hint, join, shorten
from convcheck.config.frameworks import FRAMEWORK_ONLY_KEYS, device_problem, framework_impl
from convcheck.config.keys import (
    CHECK_KEYS,
    EXPECTED_ERROR_ALLOWED,
    IMPL_ALLOWED,
    IMPL_KEYS,
    MAX_CHECKS_PER_FILE,
    MAX_NAME_LENGTH,
    MAX_TEXT_LENGTH,
    SUITE_KEYS,
    KeyInfo,
    Kind,
)
from convcheck.config.tree import REJECTED, Doc, Entry, Node
from convcheck.spec import ExpectedError, ImplRef, Signature

MEMORY_UNITS: Mapping[str, int] = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
MEMORY_PATTERN = r"^\s*([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*([kKmMgGtT][iI]?[bB]|[bB])?\s*$"  # for the schema
# Looser than MEMORY_PATTERN on purpose: any unit is read, so an unknown one gets a "did you mean".
_MEMORY_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*$")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"  # a function name in an impl: mapping (also in the schema)
_IDENTIFIER_RE = re.compile(IDENTIFIER_PATTERN)


@dataclass(frozen=True)
class Setting:
    """One key of a check (or of defaults) after validation: one value, or the list of values it sweeps."""

    key: str
    values: tuple[object, ...]
    nodes: tuple[Node, ...]  # where each value was written
    swept: bool
    field: str  # where it was written, e.g. checks[2].stride or defaults.stride

    def field_of(self, index: int) -> str:
        """The field of value ``index``: ``checks[2].stride[1]`` for a sweep, else the key's field."""
        return f"{self.field}[{index}]" if self.swept else self.field


@dataclass(frozen=True)
class Settings:
    """The parsed keys of one mapping; ``ok`` is False when any key failed (its errors are in ``errors``)."""

    settings: dict[str, Setting]
    errors: list[ConfigError]
    ok: bool


@dataclass(frozen=True)
class _Failed:
    """A value that could not be used; ``errors`` is empty when the problem was already reported."""

    errors: list[ConfigError]


@dataclass(frozen=True)
class _Problem:
    """Why a scalar is not a value of its key; the caller adds the position and the allowed text."""

    message: str


def parse_settings(
    mapping: Mapping[str, Entry], prefix: str, doc: Doc, *, in_defaults: bool, extra: tuple[str, ...] = ()
) -> Settings:
    """Validate every key of one check (or of ``defaults``); ``extra`` are other names a typo may mean."""
    settings: dict[str, Setting] = {}
    errors: list[ConfigError] = []
    ok = True
    keys = tuple(key for key in CHECK_KEYS if not (in_defaults and key == "name"))
    for key, entry in mapping.items():
        field = join(prefix, key)
        if key not in keys:
            ok = False
            errors.append(_unknown_key(doc, entry, field, key, keys, extra, in_defaults))
            continue
        result = _parse_setting(CHECK_KEYS[key], entry.node, field, doc)
        if isinstance(result, _Failed):
            ok = False
            errors.extend(result.errors)
        else:
            settings[key] = result
    return Settings(settings, errors, ok)


def check_settings(
    check: CheckNode, given_defaults: Mapping[str, Entry], defaults: Settings, doc: Doc
) -> tuple[dict[str, Setting] | None, list[ConfigError]]:
    """The settings of one check, defaults filled in; ``None`` when it or the defaults cannot be used.

    Args:
        check: the check as written.
        given_defaults: the ``defaults:`` mapping as written (a key given there counts even if invalid).
        defaults: the parsed ``defaults:``.
        doc: the document, for messages.
    """
    extra = SUITE_KEYS if not check.prefix else ()
    own = parse_settings(check.mapping, check.prefix, doc, in_defaults=False, extra=extra)
    errors = list(own.errors)
    given = given_defaults.keys() | check.mapping.keys()
    missing = [key for key, info in CHECK_KEYS.items() if info.required and key not in given]
    dims = own.settings.get("dims") or defaults.settings.get("dims")
    if dims is not None and set(dims.values) == {1}:
        missing = [key for key in missing if key != "in_height"]  # a 1-D layer has the width only
    for key in missing:
        where = "in this check or in defaults" if check.prefix else "in the file"
        message = f"missing required key {key!r} (set it {where})"
        errors.append(doc.error(check.node, join(check.prefix, key), message, CHECK_KEYS[key].allowed_text()))
    if not (own.ok and defaults.ok) or missing:
        return None, errors
    return {**defaults.settings, **own.settings}, errors


def _unknown_key(
    doc: Doc, entry: Entry, field: str, key: str, keys: tuple[str, ...], extra: tuple[str, ...], in_defaults: bool
) -> ConfigError:
    """``key`` is not one of ``keys`` (the check keys allowed here); ``extra`` are other names it may mean."""
    if in_defaults and key == "name":
        return doc.error(entry, field, "name cannot be a default: each check has its own", "the other check keys")
    message = f"unknown key {shorten(key)!r}{hint(key, keys + extra)}"
    return doc.error(entry, field, message, ", ".join(keys))


def label(value: object) -> str:
    """How a parsed value appears in a check name and in messages about sweeps."""
    if value is None:
        return "builtin"
    if isinstance(value, ImplRef):
        return value.describe()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, tuple):
        return axes_text(value)
    return str(value)


def axes_text(value: tuple[object, ...]) -> str:
    """A per-axis value as the config writes it: ``3x5``, pairs as ``1-2x0-1``."""
    return "x".join("-".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in value)


def _parse_setting(info: KeyInfo, node: Node, field: str, doc: Doc) -> Setting | _Failed:
    """One key's value: a single value, or (for sweepable keys) a non-empty list of distinct values."""
    if not isinstance(node.value, tuple):
        one = _parse_value(info, node, field, doc)
        return one if isinstance(one, _Failed) else Setting(info.name, (one,), (node,), False, field)
    if not info.sweepable:
        message = f"{info.name} cannot be swept: give one value, not a list"
        return _Failed([doc.error(node, field, message, info.allowed_text())])
    if not node.value:
        return _Failed([doc.error(node, field, "an empty list sweeps nothing", info.allowed_text())])
    if len(node.value) > MAX_CHECKS_PER_FILE:
        message = f"a sweep of {len(node.value)} values; a file may expand to at most {MAX_CHECKS_PER_FILE} checks"
        return _Failed([doc.error(node, field, message, info.allowed_text())])
    values: list[object] = []
    seen: set[object] = set()  # the values so far (all hashable), so that a long sweep costs linear time
    errors: list[ConfigError] = []
    failed = False
    for index, child in enumerate(node.value):
        value = _parse_value(info, child, f"{field}[{index}]", doc)
        if isinstance(value, _Failed):
            failed = True
            errors.extend(value.errors)
        elif value in seen:
            failed = True
            message = f"{label(value)} appears twice in the sweep"
            errors.append(doc.error(child, f"{field}[{index}]", message, "distinct values"))
        else:
            values.append(value)
            seen.add(value)
    if failed:
        return _Failed(errors)
    nodes: tuple[Node, ...] = node.value  # a sequence node holds Nodes
    return Setting(info.name, tuple(values), nodes, True, field)


def _parse_value(info: KeyInfo, node: Node, field: str, doc: Doc) -> object:
    """One value of ``info``'s key, or :class:`_Failed`."""
    raw = node.value
    if raw is REJECTED:
        return _Failed([])
    if info.kind is Kind.IMPL:
        return _parse_impl(info, node, field, doc)
    if info.kind is Kind.EXPECTED_ERROR:
        return _parse_expected_error(info, node, field, doc)
    if isinstance(raw, tuple):
        per_axis = info.kind in (Kind.SIZE, Kind.PADDING)
        text = f"an integer ≥ {info.minimum:g}{info.maximum_text()}" if per_axis else info.value_text()
        tip = "; one value per axis is written '3x5'" if per_axis else ""
        problem: object = _Problem(f"expected {text}, got a list (sweeps cannot nest){tip}")
    else:
        problem = _SCALAR_PARSERS[info.kind](info, raw)
    if isinstance(problem, _Problem):
        return _Failed([doc.error(node, field, problem.message, info.allowed_text())])
    return problem


# ---------------------------------------------------------------------------------------------------------
# One parser per scalar kind: the value, or the _Problem with it


def _as_int(raw: object) -> int | None:
    """``raw`` as an int: ints and floats with no fraction (``1.0``, as in JSON Schema), not bools."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and math.isfinite(raw) and raw.is_integer():
        return int(raw)
    return None


def _int_value(info: KeyInfo, raw: object) -> object:
    value = _as_int(raw)
    if value is None:
        quoted = " (remove the quotes)" if isinstance(raw, str) and _as_int(_number(raw)) is not None else ""
        return _Problem(f"expected an integer, got {describe(raw)}{quoted}")
    if info.minimum is not None and value < info.minimum:
        return _Problem(f"must be at least {info.minimum:g}, got {_shown(value)}")
    if info.maximum is not None and value > info.maximum:
        return _Problem(f"must be at most {int(info.maximum)}, got {_shown(value)}")
    return value


def _shown(value: int) -> str:
    """An integer as a message quotes it: in full, or by its number of digits when it would flood the line."""
    digits = len(str(abs(value))) if abs(value) < 10**4000 else None
    if digits is not None and digits <= 20:
        return str(value)
    return f"a {digits}-digit integer" if digits is not None else "an integer of more than 4000 digits"


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _number_value(info: KeyInfo, raw: object) -> object:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return _Problem(f"expected a number, got {describe(raw)}")
    try:
        value = float(raw)
    except OverflowError:
        return _Problem(f"{_shown(int(raw))} is too large")
    if not math.isfinite(value):
        return _Problem(f"must be finite, got {raw!r}")
    minimum = info.minimum if info.minimum is not None else -math.inf
    if value < minimum or (info.exclusive_minimum and value == minimum):
        relation = "greater than" if info.exclusive_minimum else "at least"
        return _Problem(f"must be {relation} {minimum:g}, got {value:g}")
    if info.maximum is not None and value > info.maximum:
        return _Problem(f"must be at most {info.maximum:g}, got {value:g}")
    return value


def _choice_value(info: KeyInfo, raw: object) -> object:
    if not isinstance(raw, str):
        return _Problem(f"expected one of {', '.join(info.choices)}, got {describe(raw)}")
    if raw not in info.choices or info.enum is None:
        return _Problem(f"unknown {info.name} {shorten(raw)!r}{hint(raw, info.choices)}")
    return info.enum(raw)


# Per-axis values: 1 to 3 numbers joined by x, frames first (the JSON Schema uses these patterns too).
_N = "(0|[1-9][0-9]*)"
SIZE_PATTERN = r"^[1-9][0-9]*(x[1-9][0-9]*){1,2}$"
PADDING_PATTERN = rf"^(?![0-9]+$){_N}(-{_N})?(x{_N}(-{_N})?){{0,2}}$"  # per axis p or before-after, not one int
_SIZE_RE, _PADDING_RE = re.compile(SIZE_PATTERN), re.compile(PADDING_PATTERN)


def _size_value(info: KeyInfo, raw: object) -> object:
    """An int for every axis, or ``'3x5'`` → ``(3, 5)``."""
    if not isinstance(raw, str):
        return _int_value(info, raw)
    if not _SIZE_RE.match(raw):
        return _Problem(f"{shorten(raw)!r} is not one integer ≥ 1 per axis joined by x, such as '3x5'")
    return _bounded(info, raw, tuple(int(part) for part in raw.split("x")))


def _bounded(info: KeyInfo, raw: str, value: tuple[object, ...]) -> object:
    """``value`` (per-axis numbers, or pairs of them) unless a number in it exceeds the key's maximum."""
    numbers = [n for v in value for n in (v if isinstance(v, tuple) else (v,))]
    if info.maximum is not None and max(numbers) > info.maximum:
        return _Problem(f"{shorten(raw)!r}: every number must be at most {int(info.maximum)}")
    return value


def _padding_value(info: KeyInfo, raw: object) -> object:
    """An int, ``same``, ``valid``, ``'1x2'`` → ``(1, 2)``, ``'1-2x0-1'`` → ``((1, 2), (0, 1))`` (mixed allowed)."""
    if raw in ("same", "valid"):
        return raw
    if not isinstance(raw, str):
        return _int_value(info, raw)
    if not _PADDING_RE.match(raw):
        extra = hint(raw, ("same", "valid"))
        return _Problem(
            f"unknown padding {shorten(raw)!r}{extra}: per axis give p or before-after, joined by x, such as '1-2x0'"
        )
    sides = [tuple(int(p) for p in part.split("-")) for part in raw.split("x")]
    return _bounded(info, raw, tuple(pair if len(pair) == 2 else pair[0] for pair in sides))


def _dims_value(info: KeyInfo, raw: object) -> object:
    value = _int_value(info, raw)
    if isinstance(value, int) and value not in (1, 2, 3):
        return _Problem(f"a layer has 1, 2 or 3 spatial axes, got {value}")
    return value


def _text_value(info: KeyInfo, raw: object) -> object:
    if not isinstance(raw, str):
        return _Problem(f"expected a string, got {describe(raw)} (quote it)")
    if len(raw) > MAX_NAME_LENGTH:
        return _Problem(f"is {len(raw)} characters long; at most {MAX_NAME_LENGTH} are allowed")
    if not raw.strip() or not raw.isprintable():
        return _Problem(f"expected a non-empty, printable string, got {shorten(raw)!r}")
    return raw


def _device_value(info: KeyInfo, raw: object) -> object:
    problem = device_problem(raw)
    return raw if problem is None else _Problem(problem)


def _bool_value(info: KeyInfo, raw: object) -> object:
    if not isinstance(raw, bool):
        return _Problem(f"expected true or false, got {describe(raw)}")
    return raw


def _memory_value(info: KeyInfo, raw: object) -> object:
    if isinstance(raw, str):
        try:
            size = parse_memory(raw)
        except ValueError as exc:
            return _Problem(str(exc))
        if info.maximum is not None and size > info.maximum:
            return _Problem(f"{shorten(raw)!r} is {_shown(size)} bytes; at most {int(info.maximum)} are allowed")
        return size
    return _int_value(info, raw)


def parse_memory(text: str) -> int:
    """Bytes in a size such as ``"2GB"``, ``"512 MiB"`` or ``"1.5gb"`` (kB/MB/GB/TB are powers of 1000).

    Raises:
        ValueError: the text is not a size, its unit is unknown, or it is less than one byte.
    """
    match = _MEMORY_RE.match(text)
    if match is None or len(match.group(1)) > 30:
        raise ValueError(f"{shorten(text)!r} is not a size such as '2GB' or '512MiB'")
    unit = match.group(2).lower() or "b"
    if unit not in MEMORY_UNITS:
        raise ValueError(
            f"unknown unit {shorten(match.group(2))!r} in {shorten(text)!r}{hint(unit, tuple(MEMORY_UNITS))}"
        )
    size = int(Decimal(match.group(1)) * MEMORY_UNITS[unit])
    if size < 1:
        raise ValueError(f"{shorten(text)!r} is less than one byte")
    return size


_SCALAR_PARSERS: Mapping[Kind, Callable[[KeyInfo, object], object]] = {
    Kind.INT: _int_value,
    Kind.NUMBER: _number_value,
    Kind.CHOICE: _choice_value,
    Kind.PADDING: _padding_value,
    Kind.SIZE: _size_value,
    Kind.DIMS: _dims_value,
    Kind.TEXT: _text_value,
    Kind.MEMORY: _memory_value,
    Kind.DEVICE: _device_value,
    Kind.BOOL: _bool_value,
}  # Kind.IMPL and Kind.EXPECTED_ERROR are a mapping or a string and have their own parsers


# ---------------------------------------------------------------------------------------------------------
# The impl key


def _parse_impl(info: KeyInfo, node: Node, field: str, doc: Doc) -> object:
    """``builtin`` → None; a path or module name → ImplRef; a mapping → ImplRef with names and signature."""
    raw = node.value
    allowed = info.value_text()
    if isinstance(raw, str):
        if raw == "builtin":
            return None
        problem = _module_problem(raw, doc.base_dir)
        if problem is not None:
            return _Failed([doc.error(node, field, problem, allowed)])
        return ImplRef(module=raw, base_dir=doc.base_dir)
    if not isinstance(raw, dict):
        return _Failed([doc.error(node, field, f"expected an implementation, got {describe(raw)}", allowed)])
    errors: list[ConfigError] = []
    names: dict[str, str] = {}
    for key, entry in raw.items():
        sub = join(field, key)
        if key not in IMPL_KEYS:
            message = f"unknown key {shorten(key)!r}{hint(key, IMPL_KEYS)}"
            errors.append(doc.error(entry, sub, message, ", ".join(IMPL_KEYS)))
        elif entry.node.value is REJECTED:
            errors.append(doc.error(entry, sub, "unusable value (see above)", "a string"))
        elif not isinstance(entry.node.value, str):
            message = f"expected a string, got {describe(entry.node.value)}"
            errors.append(doc.error(entry.node, sub, message, IMPL_ALLOWED[key]))
        else:
            problem = _impl_field_problem(key, entry.node.value, doc.base_dir)
            if problem is not None:
                errors.append(doc.error(entry.node, sub, problem, IMPL_ALLOWED[key]))
            names[key] = entry.node.value
    if errors:
        return _Failed(errors)
    if any(key in raw for key in FRAMEWORK_ONLY_KEYS):
        return _framework_ref(framework_impl(names, raw, node, field, doc), node, field, doc)
    if "module" not in raw:
        return _Failed(
            [doc.error(node, join(field, "module"), "missing required key 'module'", IMPL_ALLOWED["module"])]
        )
    return ImplRef(
        module=names["module"],
        forward=names.get("forward", "forward"),
        backward=names.get("backward", "backward"),
        signature=Signature(names.get("signature", Signature.CONVCHECK.value)),
        base_dir=doc.base_dir,
    )


def _framework_ref(parsed: ImplRef | list[ConfigError], node: Node, field: str, doc: Doc) -> object:
    """A framework ``ImplRef`` whose module exists, or :class:`_Failed`."""
    if not isinstance(parsed, ImplRef):
        return _Failed(parsed)
    problem = _module_problem(parsed.module, doc.base_dir)
    if problem is not None:
        return _Failed([doc.error(node, field, problem, IMPL_ALLOWED["module"])])
    return parsed


def _parse_expected_error(info: KeyInfo, node: Node, field: str, doc: Doc) -> object:
    """A class name → ExpectedError(type); a mapping of ``EXPECTED_ERROR_ALLOWED`` → ExpectedError(type, match)."""
    raw = node.value
    allowed = info.value_text()
    if isinstance(raw, str):
        problem = _expected_field_problem("type", raw)
        return _Failed([doc.error(node, field, problem, allowed)]) if problem else ExpectedError(type=raw)
    if not isinstance(raw, dict) or not raw:
        return _Failed([doc.error(node, field, f"expected an error to expect, got {describe(raw)}", allowed)])
    errors: list[ConfigError] = []
    given: dict[str, str] = {}
    keys = tuple(EXPECTED_ERROR_ALLOWED)
    for key, entry in raw.items():
        sub = join(field, key)
        if key not in EXPECTED_ERROR_ALLOWED:
            errors.append(doc.error(entry, sub, f"unknown key {shorten(key)!r}{hint(key, keys)}", ", ".join(keys)))
        elif not isinstance(entry.node.value, str):
            message = f"expected a string, got {describe(entry.node.value)}"
            errors.append(doc.error(entry.node, sub, message, EXPECTED_ERROR_ALLOWED[key]))
        else:
            problem = _expected_field_problem(key, entry.node.value)
            if problem is not None:
                errors.append(doc.error(entry.node, sub, problem, EXPECTED_ERROR_ALLOWED[key]))
            given[key] = entry.node.value
    if errors:
        return _Failed(errors)
    return ExpectedError(type=given.get("type"), match=given.get("match"))


def _expected_field_problem(key: str, value: str) -> str | None:
    if len(value) > MAX_TEXT_LENGTH:
        return f"is {len(value)} characters long; at most {MAX_TEXT_LENGTH} are allowed"
    if key == "type":
        return None if _IDENTIFIER_RE.match(value) else f"{shorten(value)!r} is not an exception class name"
    try:
        re.compile(value)
    except re.error as exc:
        return f"{shorten(value)!r} is not a regular expression ({exc})"
    return None


def _impl_field_problem(key: str, value: str, base_dir: Path) -> str | None:
    if len(value) > MAX_TEXT_LENGTH:
        return f"is {len(value)} characters long; at most {MAX_TEXT_LENGTH} are allowed"
    if key in FRAMEWORK_ONLY_KEYS:
        return None  # checked together, by convcheck.config.frameworks
    if key == "module":
        return _module_problem(value, base_dir)
    if key == "signature":
        choices = tuple(member.value for member in Signature)
        return None if value in choices else f"unknown signature {shorten(value)!r}{hint(value, choices)}"
    return None if _IDENTIFIER_RE.match(value) else f"{shorten(value)!r} is not a Python function name"


def _module_problem(text: str, base_dir: Path) -> str | None:
    """Why ``text`` names no implementation: a ``.py`` path that does not exist, or an invalid module name."""
    if len(text) > MAX_TEXT_LENGTH:
        return f"is {len(text)} characters long; at most {MAX_TEXT_LENGTH} are allowed"
    if text.endswith(".py") or "/" in text or "\\" in text:
        if not text.endswith(".py"):
            return f"{shorten(text)!r} looks like a path but does not end in .py"
        try:
            found = (base_dir / text).is_file()
        except (OSError, ValueError):
            found = False
        return None if found else f"no file {shorten(text)!r} next to the config (looked for {base_dir / text})"
    if text == "builtin" or _MODULE_RE.match(text):
        return None if text != "builtin" else "'builtin' is not a module: write impl: builtin"
    return f"{shorten(text)!r} is neither a path to a .py file nor a module name"


__all__ = [
    "IDENTIFIER_PATTERN",
    "MEMORY_PATTERN",
    "MEMORY_UNITS",
    "PADDING_PATTERN",
    "SIZE_PATTERN",
    "Setting",
    "Settings",
    "axes_text",
    "check_settings",
    "label",
    "parse_memory",
    "parse_settings",
]
