"""Load YAML configs into validated, expanded :class:`~convcheck.spec.CheckSpec` lists.

The config format is a contract with users (DESIGN.md, "Config (contract)"; reference in docs/config.md), so
this module is strict and explains itself: every problem becomes a :class:`ConfigError` naming the file, line,
column and field and saying what is allowed, and all problems of a file are reported at once, not one per run.
Errors are values, never exceptions: the CLI decides what they mean (it exits 2 and runs nothing).

Loading is safe by construction. YAML is only *composed* into a node tree (which keeps line/column marks), and
plain values are built from scalar nodes whose tags are on a whitelist, so no tag (``!!python/object…`` or any
other) is ever constructed. Each YAML node is converted once, so aliases cost nothing extra ("billion laughs"
documents stay linear) and recursive aliases are reported instead of looping.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, cast

import yaml

from convcheck.spec import (
    Activation,
    CheckSpec,
    ConvShape,
    DType,
    ImplRef,
    Layout,
    Method,
    Signature,
    SourceLocation,
)

MAX_CHECKS_PER_FILE = 100_000  # a sweep that expands further is almost certainly a mistake
MAX_PROBLEMS_PER_CHECK = 20  # distinct invalid-combination messages reported for one swept check


# ---------------------------------------------------------------------------------------------------------
# Public values


@dataclass(frozen=True)
class ConfigError:
    """One problem in a config file, with everything needed to fix it.

    ``line``/``column`` are 1-based (from the YAML marks; problems with the file as a whole point at 1:1).
    ``field`` is a dotted path such as ``checks[2].stride``; ``(file)``, ``(yaml)`` and ``(top level)`` name
    problems with the file, its syntax and its overall structure.
    """

    file: str
    line: int
    column: int
    field: str
    message: str
    allowed: str

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}:{self.column}: {self.field}: {self.message}; allowed: {self.allowed}"
        return " ".join(text.splitlines())


@dataclass(frozen=True)
class ConfigLoad:
    """The outcome of loading configs. A file with any error contributes errors only, never specs."""

    specs: tuple[CheckSpec, ...] = ()
    errors: tuple[ConfigError, ...] = ()
    files: tuple[str, ...] = ()  # the config files that were read, in order

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class KeyInfo:
    """What one check key accepts. The loader, the JSON Schema and docs/config.md all derive from this table.

    ``kind`` is one of ``int``, ``number``, ``choice``, ``padding``, ``text``, ``impl``, ``memory``.
    ``default`` is the JSON value used when the key is absent (``None``: derived at run time).
    """

    name: str
    kind: str
    description: str
    required: bool = False
    default: object = None
    minimum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple[str, ...] = ()
    enum: type[Enum] | None = None
    sweepable: bool = True


def _choice(name: str, enum: type[Enum], default: str, description: str) -> KeyInfo:
    choices = tuple(str(member.value) for member in enum)
    return KeyInfo(name, "choice", description, default=default, choices=choices, enum=enum)


_SHAPE_KEYS = {
    "batch": "number of input examples N",
    "in_height": "input height H",
    "in_width": "input width W",
    "in_depth": "input channels C_in",
    "out_depth": "output channels C_out (number of filters)",
    "filter_size": "filter height and width k (square filters)",
}

CHECK_KEYS: Mapping[str, KeyInfo] = {
    info.name: info
    for info in (
        KeyInfo("name", "text", "name of the check; default: file stem and index", sweepable=False),
        *(KeyInfo(key, "int", text, required=True, minimum=1) for key, text in _SHAPE_KEYS.items()),
        KeyInfo("stride", "int", "step s between filter positions", default=1, minimum=1),
        KeyInfo(
            "padding",
            "padding",
            "zeros added on each side p; 'same' is (k-1)//2 for odd k",
            default=0,
            minimum=0,
        ),
        KeyInfo(
            "out_height",
            "int",
            "expected output height, checked against (H + 2p - k)//s + 1",
            minimum=1,
            sweepable=False,
        ),
        KeyInfo(
            "out_width",
            "int",
            "expected output width, checked against (W + 2p - k)//s + 1",
            minimum=1,
            sweepable=False,
        ),
        _choice("activation", Activation, "relu", "nonlinearity applied after conv(x, w) + b"),
        _choice("method", Method, "auto", "how numeric gradients are obtained"),
        _choice("dtype", DType, "float64", "floating-point type the layer runs in"),
        KeyInfo("seed", "int", "seed of the random inputs, weights and dout", default=0, minimum=0),
        KeyInfo("eps", "number", "finite-difference step; default: by dtype", minimum=0, exclusive_minimum=True),
        KeyInfo("rtol", "number", "relative tolerance; default: by dtype", minimum=0),
        KeyInfo("atol", "number", "absolute tolerance; default: by dtype", minimum=0),
        KeyInfo("impl", "impl", "implementation to check", default="builtin"),
        _choice("layout", Layout, "nhwc", "memory layout of the implementation's arrays"),
        KeyInfo(
            "timeout",
            "number",
            "seconds allowed for this check; default: the checker's",
            minimum=0,
            exclusive_minimum=True,
            sweepable=False,
        ),
        KeyInfo(
            "max_memory",
            "memory",
            "memory budget in bytes, or a string like '2GB'; default: by machine",
            minimum=1,
            sweepable=False,
        ),
    )
}

IMPL_KEYS = ("module", "forward", "backward", "signature")
SUITE_KEYS = ("defaults", "checks")
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
_MEMORY_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*$")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Words people reach for, mapped to our names: difflib cannot guess that kernel_size means filter_size.
_SYNONYMS = {
    "kernel": "filter_size",
    "kernel_size": "filter_size",
    "filter": "filter_size",
    "k": "filter_size",
    "pad": "padding",
    "in_channels": "in_depth",
    "out_channels": "out_depth",
    "channels": "in_depth",
    "filters": "out_depth",
    "num_filters": "out_depth",
    "batch_size": "batch",
    "n": "batch",
    "height": "in_height",
    "width": "in_width",
    "s": "stride",
    "p": "padding",
    "act": "activation",
    "implementation": "impl",
    "module": "impl",
    "check": "checks",
    "default": "defaults",
}


def allowed_text(info: KeyInfo) -> str:
    """What ``info``'s key accepts, as the ``allowed`` part of an error message (and the schema's text)."""
    if info.kind == "int":
        text = f"an integer ≥ {info.minimum:g}"
    elif info.kind == "number":
        text = f"a number {'>' if info.exclusive_minimum else '≥'} {info.minimum:g}"
    elif info.kind == "choice":
        text = "one of " + ", ".join(info.choices)
    elif info.kind == "padding":
        text = "an integer ≥ 0, or 'same' (odd filter_size only)"
    elif info.kind == "text":
        text = "a non-empty string"
    elif info.kind == "impl":
        text = (
            "'builtin', a path to a .py file (relative to the config file), an importable module name, "
            "or a mapping {module, forward, backward, signature: convcheck|cs231n}"
        )
    else:
        text = "a number of bytes (integer ≥ 1) or a string such as '2GB' or '512MiB'"
    return text + (", or a non-empty list of such values to sweep" if info.sweepable else "")


def parse_memory(text: str) -> int:
    """Bytes in a size such as ``"2GB"``, ``"512 MiB"`` or ``"1.5gb"`` (kB/MB/GB/TB are powers of 1000).

    Raises:
        ValueError: the text is not a size, its unit is unknown, or it is less than one byte.
    """
    match = _MEMORY_RE.match(text)
    if match is None or len(match.group(1)) > 30:
        raise ValueError(f"{_shorten(text)!r} is not a size such as '2GB' or '512MiB'")
    unit = match.group(2).lower() or "b"
    if unit not in MEMORY_UNITS:
        raise ValueError(
            f"unknown unit {_shorten(match.group(2))!r} in {_shorten(text)!r}{_hint(unit, tuple(MEMORY_UNITS))}"
        )
    size = int(Decimal(match.group(1)) * MEMORY_UNITS[unit])
    if size < 1:
        raise ValueError(f"{_shorten(text)!r} is less than one byte")
    return size


# ---------------------------------------------------------------------------------------------------------
# Loading files


def load_configs(paths: Sequence[str | Path]) -> ConfigLoad:
    """Load every config in ``paths`` (files, or folders searched recursively for ``*.yaml``/``*.yml``).

    Each file is loaded on its own: a broken file contributes its errors and the others still load.

    Args:
        paths: config files or folders; a file listed twice is read once.
    Returns:
        All specs (in file order, then check order, then sweep order) and all errors.
    """
    files, errors = _discover(paths)
    loads = [load_file(path) for path in files]
    return ConfigLoad(
        specs=tuple(spec for load in loads for spec in load.specs),
        errors=tuple(errors) + tuple(error for load in loads for error in load.errors),
        files=tuple(str(path) for path in files),
    )


def load_file(path: str | Path) -> ConfigLoad:
    """Load one config file. ``impl`` paths in it are relative to its folder."""
    path = Path(path)
    name = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return ConfigLoad(errors=(_file_error(name, f"cannot read the file: {exc.strerror or exc}"),), files=(name,))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, column = _position(data[: exc.start].decode("utf-8", "replace"), exc.start)
        error = ConfigError(name, line, column, "(file)", "the file is not UTF-8 text", "a UTF-8 YAML file")
        return ConfigLoad(errors=(error,), files=(name,))
    load = load_text(text, file=name, base_dir=path.resolve().parent)
    return ConfigLoad(specs=load.specs, errors=load.errors, files=(name,))


def load_text(text: str, file: str = "<string>", base_dir: Path | None = None) -> ConfigLoad:
    """Load a config from ``text``; ``file`` names it in messages, ``base_dir`` (None: cwd) anchors ``impl``.

    Never raises: any text at all gives specs or errors.
    """
    doc = _Doc(file, base_dir if base_dir is not None else Path.cwd())
    try:
        specs, errors = _load_document(text, doc)
    except RecursionError:
        errors = [_file_error(file, "the document is nested too deeply", "a config nested a few levels deep")]
    except Exception as exc:  # last resort: the loader must never show a traceback; tests assert this is unused
        errors = [_file_error(file, f"internal error while reading the config: {type(exc).__name__}: {exc}")]
    ordered = sorted(errors, key=lambda error: (error.line, error.column))  # stable: file order, then found order
    return ConfigLoad(specs=() if errors else tuple(specs), errors=tuple(ordered), files=(file,))


def _discover(paths: Sequence[str | Path]) -> tuple[list[Path], list[ConfigError]]:
    """Config files named by ``paths``, folders expanded recursively in sorted order, each file once."""
    files: list[Path] = []
    errors: list[ConfigError] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if _is_config(p, path))
            if not found:
                errors.append(_file_error(str(path), "the folder contains no *.yaml or *.yml files"))
        elif path.is_file():
            found = [path]
        else:
            found = []
            errors.append(_file_error(str(path), "no such file or folder"))
        for item in found:
            if item.resolve() not in seen:
                seen.add(item.resolve())
                files.append(item)
    return files, errors


def _is_config(path: Path, folder: Path) -> bool:
    """A YAML file of ``folder``, not inside a hidden folder (``.git``, ``.venv``…) nor hidden itself."""
    hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
    return path.suffix in (".yaml", ".yml") and not hidden and path.is_file()


def _file_error(file: str, message: str, allowed: str = "an existing YAML config file or folder") -> ConfigError:
    return ConfigError(file, 1, 1, "(file)", message, allowed)


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of ``offset`` in ``text``."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


# ---------------------------------------------------------------------------------------------------------
# YAML → located values


class ConfigLoader(yaml.SafeLoader):
    """The YAML loader for configs: PyYAML's SafeLoader, with YAML 1.2 floats and without timestamps.

    PyYAML reads ``1e-6`` as a *string* (YAML 1.1 floats need a dot), which would make ``eps: 1e-6`` a type
    error; editors using the JSON Schema read it as a number, so we do too. Dates stay strings, so a name
    like ``2024-01-01`` is not a ``datetime``. The loader only composes; :func:`load_text` builds values.
    """


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(_TAG + name for name in ("str", "int", "float", "bool", "null"))


class _Rejected:
    """The value of a node that was already reported (a forbidden tag, a recursive alias…)."""

    def __repr__(self) -> str:
        return "<rejected>"


_REJECTED = _Rejected()


@dataclass(frozen=True, eq=False)
class _Node:
    """A YAML value with its 1-based position: a scalar, ``tuple[_Node, ...]`` or ``dict[str, _Entry]``."""

    value: object
    line: int
    column: int


@dataclass(frozen=True, eq=False)
class _Entry:
    """A mapping value with the position of its key (unknown-key errors point at the key)."""

    line: int
    column: int
    node: _Node


@dataclass(frozen=True)
class _Doc:
    file: str
    base_dir: Path

    def error(self, at: _Node | _Entry, field: str, message: str, allowed: str) -> ConfigError:
        return ConfigError(self.file, at.line, at.column, field or "(top level)", message, allowed)


def _mark(mark: yaml.Mark | None) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _read_tree(text: str, doc: _Doc) -> tuple[_Node | None, list[ConfigError]]:
    """Compose ``text`` into located values; ``None`` when there is no usable document."""
    loader: ConfigLoader | None = None
    try:
        loader = ConfigLoader(text)
        root = loader.get_single_node()
        if root is None:
            return None, [_file_error(doc.file, "the file is empty", "a mapping with checks: or one check")]
        builder = _TreeBuilder(loader, doc)
        return builder.build(root, ""), builder.errors
    except yaml.MarkedYAMLError as exc:
        return None, [_syntax_error(exc, doc)]
    except yaml.reader.ReaderError as exc:
        line, column = _position(text, exc.position)
        message = f"invalid character {exc.character!r} in the file: {exc.reason}"
        return None, [ConfigError(doc.file, line, column, "(yaml)", message, "printable characters")]
    except yaml.YAMLError as exc:
        return None, [ConfigError(doc.file, 1, 1, "(yaml)", f"invalid YAML: {exc}", "valid YAML")]
    finally:
        if loader is not None:
            loader.dispose()


def _syntax_error(exc: yaml.MarkedYAMLError, doc: _Doc) -> ConfigError:
    """The parser's complaint at the place it noticed it, and where the construct it was reading began."""
    line, column = _mark(exc.problem_mark or exc.context_mark)
    message = f"invalid YAML: {exc.problem or exc.context or 'unreadable document'}"
    if exc.context and exc.problem and exc.problem.startswith("but "):  # "expected X" / "but found Y"
        message = f"invalid YAML: {exc.context}, {exc.problem}"
    elif exc.context and exc.problem and exc.context_mark is not None:
        where = _mark(exc.context_mark)
        message += f" ({exc.context} that began at line {where[0]}, column {where[1]})"
    return ConfigError(doc.file, line, column, "(yaml)", message, "valid YAML")


class _TreeBuilder:
    """Turns a composed YAML node graph into :class:`_Node` values, once per YAML node."""

    def __init__(self, loader: ConfigLoader, doc: _Doc) -> None:
        self.loader = loader
        self.doc = doc
        self.done: dict[int, _Node] = {}
        self.active: set[int] = set()
        self.errors: list[ConfigError] = []

    def build(self, node: yaml.Node, field: str) -> _Node:
        line, column = _mark(node.start_mark)
        key = id(node)  # the composed graph is alive for the whole build, so ids are stable
        if key in self.done:
            return self.done[key]
        if key in self.active:
            self.errors.append(
                self.doc.error(_Node(None, line, column), field, "recursive alias", "aliases to finished nodes")
            )
            return _Node(_REJECTED, line, column)
        self.active.add(key)
        try:
            result = _Node(self._value(node, field, line, column), line, column)
        finally:
            self.active.discard(key)
        self.done[key] = result
        return result

    def _value(self, node: yaml.Node, field: str, line: int, column: int) -> object:
        kind = {yaml.ScalarNode: "str", yaml.SequenceNode: "seq", yaml.MappingNode: "map"}.get(type(node), "")
        if node.tag not in _SCALAR_TAGS and node.tag != _TAG + kind:
            self.errors.append(_tag_error(self.doc, _Node(None, line, column), field, node.tag))
            return _REJECTED
        if isinstance(node, yaml.SequenceNode):
            return tuple(self.build(child, f"{field}[{i}]") for i, child in enumerate(node.value))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, field)
        if not isinstance(node, yaml.ScalarNode):
            return _REJECTED  # pragma: no cover - the composer makes only these three kinds
        try:
            return self.loader.construct_object(node, deep=True)
        except Exception as exc:  # an explicit tag on a value it cannot read, e.g. !!int abc
            message = f"cannot read {_shorten(node.value)!r} as {_short_tag(node.tag)}: {_shorten(str(exc))}"
            self.errors.append(self.doc.error(_Node(None, line, column), field, message, "a value of that type"))
            return _REJECTED

    def _mapping(self, node: yaml.MappingNode, field: str) -> dict[str, _Entry]:
        own: dict[str, _Entry] = {}
        merged: dict[str, _Entry] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                for source in self._merge_sources(value_node, field):
                    for name, entry in source.items():
                        merged.setdefault(name, entry)
                continue
            key = self.build(key_node, field)
            if key.value is _REJECTED:
                continue
            if not isinstance(key.value, str):
                message = f"mapping keys must be strings, got {_describe(key.value)}"
                self.errors.append(self.doc.error(key, field, message, "a key name such as 'stride'"))
                continue
            if key.value in own:
                first = own[key.value]
                message = f"duplicate key {_shorten(key.value)!r} (first at line {first.line})"
                self.errors.append(self.doc.error(key, _join(field, key.value), message, "each key once"))
                continue
            own[key.value] = _Entry(key.line, key.column, self.build(value_node, _join(field, key.value)))
        return {**{name: entry for name, entry in merged.items() if name not in own}, **own}

    def _merge_sources(self, value_node: yaml.Node, field: str) -> list[dict[str, _Entry]]:
        """The mappings a ``<<:`` key merges in, earliest first (YAML: the first one wins)."""
        value = self.build(value_node, field)
        if isinstance(value.value, dict):
            return [value.value]
        if isinstance(value.value, tuple) and all(isinstance(item.value, dict) for item in value.value):
            return [item.value for item in value.value]  # all() above checked they are dicts
        if value.value is not _REJECTED:
            message = f"'<<' merges a mapping or a list of mappings, got {_describe(value.value)}"
            self.errors.append(self.doc.error(value, field, message, "an alias to a mapping"))
        return []


def _tag_error(doc: _Doc, at: _Node, field: str, tag: str) -> ConfigError:
    shown = _short_tag(tag)
    if tag.startswith(_TAG + "python/"):
        message = f"the Python object tag {shown} is not allowed: convcheck only loads plain YAML"
    else:
        message = f"the YAML tag {shown} is not supported"
    return doc.error(at, field, message, "plain YAML values: strings, numbers, booleans, lists and mappings")


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _describe(value: object) -> str:
    """How a wrong value is shown in a message: its type and, for scalars, the value."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {_shorten(value)!r}"
    if isinstance(value, tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _shorten(text: str, limit: int = 40) -> str:
    """``text``, cut to ``limit`` characters: messages quote user values and must stay one readable line."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _hint(word: str, candidates: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the candidate closest to ``word``, or ``""``."""
    lowered = word.lower()
    by_lower = {candidate.lower(): candidate for candidate in candidates}
    if lowered in by_lower:
        match: str | None = by_lower[lowered]
    elif _SYNONYMS.get(lowered) in candidates:
        match = _SYNONYMS[lowered]
    else:
        close = difflib.get_close_matches(lowered[:100], list(by_lower), n=1, cutoff=0.6)
        match = by_lower[close[0]] if close else None
    return f" (did you mean {match!r}?)" if match is not None else ""


# ---------------------------------------------------------------------------------------------------------
# Located values → settings


@dataclass(frozen=True)
class _Setting:
    """One key of a check (or of defaults) after validation: one value, or the list of values it sweeps."""

    key: str
    values: tuple[object, ...]
    nodes: tuple[_Node, ...]  # where each value was written
    swept: bool
    field: str  # where it was written, e.g. checks[2].stride or defaults.stride

    def field_of(self, index: int) -> str:
        return f"{self.field}[{index}]" if self.swept else self.field


@dataclass(frozen=True)
class _Failed:
    """A value that could not be used; ``errors`` is empty when the problem was already reported."""

    errors: list[ConfigError]


def _parse_settings(
    mapping: Mapping[str, _Entry], prefix: str, doc: _Doc, *, in_defaults: bool, extra: tuple[str, ...] = ()
) -> tuple[dict[str, _Setting], list[ConfigError], bool]:
    """Validate every key of one check (or of ``defaults``): settings, errors, and whether all parsed."""
    settings: dict[str, _Setting] = {}
    errors: list[ConfigError] = []
    ok = True
    keys = tuple(key for key in CHECK_KEYS if not (in_defaults and key == "name"))
    for key, entry in mapping.items():
        field = _join(prefix, key)
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
    return settings, errors, ok


def _unknown_key(
    doc: _Doc,
    entry: _Entry,
    field: str,
    key: str,
    keys: tuple[str, ...],
    extra: tuple[str, ...],
    in_defaults: bool,
) -> ConfigError:
    if in_defaults and key == "name":
        return doc.error(entry, field, "name cannot be a default: each check has its own", "the other check keys")
    message = f"unknown key {_shorten(key)!r}{_hint(key, keys + extra)}"
    return doc.error(entry, field, message, ", ".join(keys))


def _parse_setting(info: KeyInfo, node: _Node, field: str, doc: _Doc) -> _Setting | _Failed:
    """One key's value: a single value, or (for sweepable keys) a non-empty list of distinct values."""
    if not isinstance(node.value, tuple):
        one = _parse_value(info, node, field, doc)
        return one if isinstance(one, _Failed) else _Setting(info.name, (one,), (node,), False, field)
    if not info.sweepable:
        message = f"{info.name} cannot be swept: give one value, not a list"
        return _Failed([doc.error(node, field, message, allowed_text(info))])
    if not node.value:
        return _Failed([doc.error(node, field, "an empty list sweeps nothing", allowed_text(info))])
    values: list[object] = []
    errors: list[ConfigError] = []
    failed = False
    for index, child in enumerate(node.value):
        value = _parse_value(info, child, f"{field}[{index}]", doc)
        if isinstance(value, _Failed):
            failed = True
            errors.extend(value.errors)
        elif value in values:
            failed = True
            message = f"{_label(value)} appears twice in the sweep"
            errors.append(doc.error(child, f"{field}[{index}]", message, "distinct values"))
        else:
            values.append(value)
    if failed:
        return _Failed(errors)
    nodes: tuple[_Node, ...] = node.value  # a sequence node holds _Nodes
    return _Setting(info.name, tuple(values), nodes, True, field)


def _parse_value(info: KeyInfo, node: _Node, field: str, doc: _Doc) -> object:
    """One value of ``info``'s key, or :class:`_Failed`."""
    raw = node.value
    if raw is _REJECTED:
        return _Failed([])
    if info.kind == "impl":
        return _parse_impl(node, field, doc)
    if isinstance(raw, tuple):
        problem: object = _Problem(f"expected {allowed_text(info).split(', or a')[0]}, got a list (sweeps cannot nest)")
    else:
        problem = _SCALAR_PARSERS[info.kind](info, raw)
    if isinstance(problem, _Problem):
        return _Failed([doc.error(node, field, problem.message, allowed_text(info))])
    return problem


@dataclass(frozen=True)
class _Problem:
    message: str


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
        return _Problem(f"expected an integer, got {_describe(raw)}{quoted}")
    if info.minimum is not None and value < info.minimum:
        return _Problem(f"must be at least {info.minimum:g}, got {value}")
    return value


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _number_value(info: KeyInfo, raw: object) -> object:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return _Problem(f"expected a number, got {_describe(raw)}")
    try:
        value = float(raw)
    except OverflowError:
        return _Problem(f"{raw} is too large")
    if not math.isfinite(value):
        return _Problem(f"must be finite, got {raw!r}")
    minimum = info.minimum if info.minimum is not None else -math.inf
    if value < minimum or (info.exclusive_minimum and value == minimum):
        relation = "greater than" if info.exclusive_minimum else "at least"
        return _Problem(f"must be {relation} {minimum:g}, got {raw!r}")
    return value


def _choice_value(info: KeyInfo, raw: object) -> object:
    if not isinstance(raw, str):
        return _Problem(f"expected one of {', '.join(info.choices)}, got {_describe(raw)}")
    if raw not in info.choices or info.enum is None:
        return _Problem(f"unknown {info.name} {_shorten(raw)!r}{_hint(raw, info.choices)}")
    return info.enum(raw)


def _padding_value(info: KeyInfo, raw: object) -> object:
    if raw == "same":
        return "same"
    if isinstance(raw, str):
        hint = " ('valid' is padding 0)" if raw.lower() == "valid" else _hint(raw, ("same",))
        return _Problem(f"unknown padding {_shorten(raw)!r}{hint}")
    return _int_value(info, raw)


def _text_value(info: KeyInfo, raw: object) -> object:
    if not isinstance(raw, str):
        return _Problem(f"expected a string, got {_describe(raw)} (quote it)")
    if not raw.strip() or not raw.isprintable():
        return _Problem(f"expected a non-empty, printable string, got {_shorten(raw)!r}")
    return raw


def _memory_value(info: KeyInfo, raw: object) -> object:
    if isinstance(raw, str):
        try:
            return parse_memory(raw)
        except ValueError as exc:
            return _Problem(str(exc))
    return _int_value(info, raw)


_SCALAR_PARSERS = {
    "int": _int_value,
    "number": _number_value,
    "choice": _choice_value,
    "padding": _padding_value,
    "text": _text_value,
    "memory": _memory_value,
}


def _parse_impl(node: _Node, field: str, doc: _Doc) -> object:
    """``builtin`` → None; a path or module name → ImplRef; a mapping → ImplRef with names and signature."""
    raw = node.value
    allowed = allowed_text(CHECK_KEYS["impl"]).split(", or a non-empty")[0]
    if isinstance(raw, str):
        if raw == "builtin":
            return None
        problem = _module_problem(raw, doc.base_dir)
        if problem is not None:
            return _Failed([doc.error(node, field, problem, allowed)])
        return ImplRef(module=raw, base_dir=doc.base_dir)
    if not isinstance(raw, dict):
        return _Failed([doc.error(node, field, f"expected an implementation, got {_describe(raw)}", allowed)])
    errors: list[ConfigError] = []
    names: dict[str, str] = {}
    for key, entry in raw.items():
        sub = _join(field, key)
        if key not in IMPL_KEYS:
            message = f"unknown key {_shorten(key)!r}{_hint(key, IMPL_KEYS)}"
            errors.append(doc.error(entry, sub, message, ", ".join(IMPL_KEYS)))
        elif entry.node.value is _REJECTED:
            errors.append(doc.error(entry, sub, "unusable value (see above)", "a string"))
        elif not isinstance(entry.node.value, str):
            message = f"expected a string, got {_describe(entry.node.value)}"
            errors.append(doc.error(entry.node, sub, message, _IMPL_ALLOWED[key]))
        else:
            problem = _impl_field_problem(key, entry.node.value, doc.base_dir)
            if problem is not None:
                errors.append(doc.error(entry.node, sub, problem, _IMPL_ALLOWED[key]))
            names[key] = entry.node.value
    if "module" not in raw:
        errors.append(doc.error(node, _join(field, "module"), "missing required key 'module'", _IMPL_ALLOWED["module"]))
    if errors:
        return _Failed(errors)
    return ImplRef(
        module=names["module"],
        forward=names.get("forward", "forward"),
        backward=names.get("backward", "backward"),
        signature=Signature(names.get("signature", Signature.CONVCHECK.value)),
        base_dir=doc.base_dir,
    )


_IMPL_ALLOWED = {
    "module": "a path to a .py file (relative to the config file) or an importable module name",
    "forward": "a Python function name",
    "backward": "a Python function name",
    "signature": ", ".join(member.value for member in Signature),
}


def _impl_field_problem(key: str, value: str, base_dir: Path) -> str | None:
    if key == "module":
        return _module_problem(value, base_dir)
    if key == "signature":
        choices = tuple(member.value for member in Signature)
        return None if value in choices else f"unknown signature {_shorten(value)!r}{_hint(value, choices)}"
    return None if _IDENTIFIER_RE.match(value) else f"{_shorten(value)!r} is not a Python function name"


def _module_problem(text: str, base_dir: Path) -> str | None:
    """Why ``text`` names no implementation: a ``.py`` path that does not exist, or an invalid module name."""
    if text.endswith(".py") or "/" in text or "\\" in text:
        if not text.endswith(".py"):
            return f"{_shorten(text)!r} looks like a path but does not end in .py"
        try:
            found = (base_dir / text).is_file()
        except (OSError, ValueError):
            found = False
        return None if found else f"no file {_shorten(text)!r} next to the config (looked for {base_dir / text})"
    if text == "builtin" or _MODULE_RE.match(text):
        return None if text != "builtin" else "'builtin' is not a module: write impl: builtin"
    return f"{_shorten(text)!r} is neither a path to a .py file nor a module name"


# ---------------------------------------------------------------------------------------------------------
# Settings → specs


@dataclass(frozen=True)
class _CheckNode:
    node: _Node  # the check's mapping
    prefix: str  # field prefix: checks[2], or "" for a file that is one check
    default_name: str


def _load_document(text: str, doc: _Doc) -> tuple[list[CheckSpec], list[ConfigError]]:
    root, errors = _read_tree(text, doc)
    if root is None:
        return [], errors
    defaults_map, checks, split_errors = _split(root, doc)
    errors += split_errors
    defaults, defaults_errors, defaults_ok = _parse_settings(defaults_map, "defaults", doc, in_defaults=True)
    errors += defaults_errors
    specs: list[CheckSpec] = []
    owners: list[_CheckNode] = []
    total: int | None = 0  # checks this file expands to so far; None once past the cap (reported once)
    for check in checks:
        extra = SUITE_KEYS if not check.prefix else ()
        mapping = cast("Mapping[str, _Entry]", check.node.value)  # checks were filtered to mappings above
        own, own_errors, ok = _parse_settings(mapping, check.prefix, doc, in_defaults=False, extra=extra)
        errors += own_errors
        settings = {**defaults, **own}
        given = defaults_map.keys() | check.node.value.keys()  # type: ignore[attr-defined]  # a check is a mapping
        missing = [key for key, info in CHECK_KEYS.items() if info.required and key not in given]
        for key in missing:
            where = "in this check or in defaults" if check.prefix else "in the file"
            message = f"missing required key {key!r} (set it {where})"
            errors.append(doc.error(check.node, _join(check.prefix, key), message, allowed_text(CHECK_KEYS[key])))
        if not (ok and defaults_ok) or missing:
            continue
        size = math.prod(len(setting.values) for setting in settings.values())
        if total is None:
            continue
        if total + size > MAX_CHECKS_PER_FILE:
            message = (
                f"this check expands to {size} checks, bringing the file to {total + size}; "
                f"at most {MAX_CHECKS_PER_FILE} are allowed per file"
            )
            errors.append(doc.error(check.node, check.prefix or "(top level)", message, "smaller sweeps"))
            total = None
            continue
        total += size
        expanded, expand_errors = _expand(check, settings, doc)
        errors += expand_errors
        specs += expanded
        owners += [check] * len(expanded)
    errors += _duplicate_names(specs, owners, doc)
    return specs, errors


def _split(root: _Node, doc: _Doc) -> tuple[dict[str, _Entry], list[_CheckNode], list[ConfigError]]:
    """The defaults and the checks of a document, in either top-level form."""
    stem = Path(doc.file).stem
    if root.value is _REJECTED:
        return {}, [], []
    if not isinstance(root.value, dict):
        message = (
            "expected a mapping (checks: and optional defaults:, or the keys of one check), "
            f"got {_describe(root.value)}"
        )
        return {}, [], [doc.error(root, "(top level)", message, "a mapping")]
    mapping: dict[str, _Entry] = root.value
    if "checks" not in mapping:
        errors = []
        if "defaults" in mapping:
            message = "defaults: applies to the checks in checks:, which is missing"
            errors.append(doc.error(mapping["defaults"], "defaults", message, "defaults: together with checks:"))
        single = _Node({key: entry for key, entry in mapping.items() if key != "defaults"}, root.line, root.column)
        return {}, [_CheckNode(single, "", stem)], errors
    errors = []
    for key, entry in mapping.items():
        if key not in SUITE_KEYS:
            message = f"unknown top-level key {_shorten(key)!r}{_hint(key, SUITE_KEYS)}"
            if key in CHECK_KEYS:
                message += "; check keys go under defaults: or inside each check"
            errors.append(doc.error(entry, key, message, "defaults, checks"))
    defaults = _defaults_mapping(mapping.get("defaults"), doc, errors)
    return defaults, _check_nodes(mapping["checks"], stem, doc, errors), errors


def _defaults_mapping(entry: _Entry | None, doc: _Doc, errors: list[ConfigError]) -> dict[str, _Entry]:
    """The ``defaults:`` mapping; empty when absent or null (every default commented out)."""
    if entry is None or entry.node.value is None or entry.node.value is _REJECTED:
        return {}
    if not isinstance(entry.node.value, dict):
        message = f"defaults must be a mapping of check keys, got {_describe(entry.node.value)}"
        errors.append(doc.error(entry.node, "defaults", message, "a mapping such as {seed: 0}"))
        return {}
    return entry.node.value


def _check_nodes(entry: _Entry, stem: str, doc: _Doc, errors: list[ConfigError]) -> list[_CheckNode]:
    value = entry.node.value
    if value is _REJECTED:
        return []
    if not isinstance(value, tuple) or not value:
        got = "an empty list" if value == () else _describe(value)
        message = f"checks must be a non-empty list of checks, got {got}"
        errors.append(doc.error(entry.node, "checks", message, "a list of mappings, each one check"))
        return []
    checks = []
    for index, item in enumerate(value):
        if isinstance(item.value, dict):
            checks.append(_CheckNode(item, f"checks[{index}]", f"{stem}-{index}"))
        elif item.value is not _REJECTED:
            message = f"expected a mapping (one check), got {_describe(item.value)}"
            errors.append(doc.error(item, f"checks[{index}]", message, "a mapping of check keys"))
    return checks


def _expand(check: _CheckNode, settings: dict[str, _Setting], doc: _Doc) -> tuple[list[CheckSpec], list[ConfigError]]:
    """The checks of a sweep: the cartesian product of the list-valued keys, in table order, last fastest.

    Each combination is validated on its own (a filter can fit one input size of a sweep and not another);
    identical problems from different combinations are reported once, naming the combinations.
    """
    swept = [settings[key] for key in CHECK_KEYS if key in settings and settings[key].swept]
    fixed = {key: setting.values[0] for key, setting in settings.items() if not setting.swept}
    base = str(fixed.pop("name", check.default_name))
    source = SourceLocation(doc.file, check.node.line, check.node.column)
    specs = []
    problems: dict[tuple[str, int, str, str], list[str]] = {}
    for combo in itertools.product(*(range(len(setting.values)) for setting in swept)):
        values = dict(fixed)
        values.update((setting.key, setting.values[i]) for setting, i in zip(swept, combo, strict=True))
        name = base + _brackets(swept, combo)
        found = geometry_problems(values)
        chosen = {setting.key: i for setting, i in zip(swept, combo, strict=True)}
        for key, message, allowed in found:
            problems.setdefault((key, chosen.get(key, 0), message, allowed), []).append(name)
        if not found:
            specs.append(_build_spec(name, values, source))
    total = math.prod(len(setting.values) for setting in swept)
    return specs, _combination_errors(problems, settings, check, total, doc)


def _brackets(swept: list[_Setting], combo: tuple[int, ...]) -> str:
    if not swept:
        return ""
    return "[" + ",".join(f"{s.key}={_label(s.values[i])}" for s, i in zip(swept, combo, strict=True)) + "]"


def _label(value: object) -> str:
    """How a swept value appears in a check name."""
    if value is None:
        return "builtin"
    if isinstance(value, ImplRef):
        return value.describe()
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def _combination_errors(
    problems: dict[tuple[str, int, str, str], list[str]],
    settings: dict[str, _Setting],
    check: _CheckNode,
    total: int,
    doc: _Doc,
) -> list[ConfigError]:
    errors = []
    for (key, index, message, allowed), names in list(problems.items())[:MAX_PROBLEMS_PER_CHECK]:
        setting = settings.get(key)
        at = setting.nodes[index] if setting is not None else check.node
        field = setting.field_of(index) if setting is not None else _join(check.prefix, key)
        if total > 1:
            shown = ", ".join(repr(name) for name in names[:2]) + (", …" if len(names) > 2 else "")
            message = f"{message}, in {len(names)} of {total} expanded checks ({shown})"
        errors.append(doc.error(at, field, message, allowed))
    if len(problems) > MAX_PROBLEMS_PER_CHECK:
        last = errors[-1]  # listed right after the problems it continues, also once errors are sorted
        message = f"and {len(problems) - MAX_PROBLEMS_PER_CHECK} more invalid combinations in this sweep"
        errors.append(ConfigError(doc.file, last.line, last.column, last.field, message, "valid geometries"))
    return errors


def geometry_problems(values: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Why a layer with these (validated) values is impossible, as ``(key, message, allowed)`` triples.

    The output height is ``(H + 2p - k) // s + 1``, which is at least 1 exactly when ``k ≤ H + 2p``; a larger
    filter fits nowhere in the padded input. ``same`` padding keeps ``OH = H`` at stride 1 only for odd ``k``.
    """
    k = int(values["filter_size"])
    stride = int(values.get("stride", 1))
    padding = values.get("padding", 0)
    if padding == "same":
        if k % 2 == 0:
            message = f"padding 'same' needs an odd filter_size, got filter_size {k}"
            return [("padding", message, "'same' with an odd filter_size, or an integer padding ≥ 0")]
        padding = (k - 1) // 2
    p = int(padding)
    found = []
    for axis in ("height", "width"):
        size = int(values[f"in_{axis}"])
        if k > size + 2 * p:
            message = (
                f"filter_size {k} is larger than the padded input {axis} {size + 2 * p} "
                f"(in_{axis} {size} + 2·padding {p})"
            )
            found.append(("filter_size", message, f"filter_size ≤ in_{axis} + 2·padding"))
            continue
        out = (size + 2 * p - k) // stride + 1
        given = values.get(f"out_{axis}")
        if given is not None and given != out:
            message = (
                f"out_{axis} {given} does not match the layer: "
                f"(in_{axis} + 2·padding − filter_size) // stride + 1 = "
                f"({size} + 2·{p} − {k}) // {stride} + 1 = {out}"
            )
            found.append((f"out_{axis}", message, f"{out}, or leave out_{axis} out"))
    return found


def _build_spec(name: str, values: Mapping[str, Any], source: SourceLocation) -> CheckSpec:
    """The spec of one valid combination; keys absent from ``values`` take CheckSpec's defaults."""
    k: int = values["filter_size"]
    padding = values.get("padding", 0)
    shape = ConvShape(
        batch=values["batch"],
        in_height=values["in_height"],
        in_width=values["in_width"],
        in_depth=values["in_depth"],
        out_depth=values["out_depth"],
        filter_size=k,
        stride=values.get("stride", 1),
        padding=(k - 1) // 2 if padding == "same" else padding,
    )
    return CheckSpec(
        name=name,
        shape=shape,
        activation=values.get("activation", Activation.RELU),
        method=values.get("method", Method.AUTO),
        dtype=values.get("dtype", DType.FLOAT64),
        seed=values.get("seed", 0),
        eps=values.get("eps"),
        rtol=values.get("rtol"),
        atol=values.get("atol"),
        impl=values.get("impl"),
        layout=values.get("layout", Layout.NHWC),
        timeout=values.get("timeout"),
        max_memory=values.get("max_memory"),
        source=source,
        config=_config_dict(name, shape, values),
    )


def _config_dict(name: str, shape: ConvShape, values: Mapping[str, object]) -> dict[str, object]:
    """The check's resolved values as JSON scalars: every key, defaults filled in, padding as an integer."""
    config: dict[str, object] = {"name": name}
    for key, info in CHECK_KEYS.items():
        if key != "name":
            config[key] = _json_value(values[key]) if key in values else info.default
    config.update(padding=shape.padding, out_height=shape.out_height, out_width=shape.out_width)
    if "impl" in values:
        config["impl"] = _impl_json(values["impl"])
    return config


def _json_value(value: object) -> object:
    return value.value if isinstance(value, Enum) else value


def _impl_json(ref: object) -> object:
    if not isinstance(ref, ImplRef):
        return "builtin"
    if (ref.forward, ref.backward, ref.signature) == ("forward", "backward", Signature.CONVCHECK):
        return ref.module
    return {
        "module": ref.module,
        "forward": ref.forward,
        "backward": ref.backward,
        "signature": ref.signature.value,
    }


def _duplicate_names(specs: list[CheckSpec], owners: list[_CheckNode], doc: _Doc) -> list[ConfigError]:
    """Names must be unique within a file: results, JUnit test cases and annotations are keyed by them."""
    first: dict[str, _CheckNode] = {}
    reported: set[int] = set()
    errors = []
    for spec, owner in zip(specs, owners, strict=True):
        if spec.name not in first:
            first[spec.name] = owner
            continue
        if id(owner) in reported or first[spec.name] is owner:
            continue
        reported.add(id(owner))
        other = first[spec.name]
        entry = owner.node.value.get("name") if isinstance(owner.node.value, dict) else None
        at = entry.node if entry is not None else owner.node
        message = (
            f"duplicate check name {_shorten(spec.name)!r} (also {other.prefix or 'the file'}, line {other.node.line})"
        )
        errors.append(doc.error(at, _join(owner.prefix, "name"), message, "a name used by one check only"))
    return errors


__all__ = [
    "CHECK_KEYS",
    "MAX_CHECKS_PER_FILE",
    "ConfigError",
    "ConfigLoad",
    "ConfigLoader",
    "KeyInfo",
    "allowed_text",
    "geometry_problems",
    "load_configs",
    "load_file",
    "load_text",
    "parse_memory",
]
