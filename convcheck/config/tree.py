"""YAML text → a tree of plain values that keep their line and column (:class:`Node`, :class:`Entry`).

Loading is safe by construction. YAML is only *composed* into a node tree (which keeps line/column marks), and
plain values are built from scalar nodes whose tags are on a whitelist, so no tag (``!!python/object…`` or any
other) is ever constructed. Each YAML node is converted once, so aliases cost nothing extra ("billion laughs"
documents stay linear) and recursive aliases are reported instead of looping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from convcheck.config.errors import ConfigError, describe, file_error, join, position, shorten
from convcheck.config.keys import CHECK_KEYS


class ConfigLoader(yaml.SafeLoader):
    """The YAML loader for configs: PyYAML's SafeLoader, with YAML 1.2 floats and without timestamps.

    PyYAML reads ``1e-6`` as a *string* (YAML 1.1 floats need a dot), which would make ``eps: 1e-6`` a type
    error; editors using the JSON Schema read it as a number, so we do too. Dates stay strings, so a name
    like ``2024-01-01`` is not a ``datetime``. The loader only composes; :func:`read_tree` builds values.
    The other YAML 1.1 surprises (``yes``/``on`` as booleans, ``0755`` as octal, ``1:30`` as base 60) are
    refused by :func:`read_tree`, with the field named.
    """


_RESOLVERS = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.yaml_implicit_resolvers = _RESOLVERS
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)

# libyaml's parser (when PyYAML was built with it) composes many times faster than the pure-Python one, with
# the same marks and the same resolvers; a document it cannot parse is parsed again by the pure-Python one,
# whose messages are clearer (and which the tests pin). Values are built by the Python constructor either way.
_CSafeLoader: type[yaml.SafeLoader] | None = getattr(yaml, "CSafeLoader", None)
if _CSafeLoader is not None:

    class FastConfigLoader(_CSafeLoader):  # type: ignore[valid-type,misc]  # exists only with libyaml
        """:class:`ConfigLoader` on libyaml."""

    FastConfigLoader.yaml_implicit_resolvers = ConfigLoader.yaml_implicit_resolvers
    _LOADERS: tuple[type[yaml.SafeLoader], ...] = (FastConfigLoader, ConfigLoader)
else:  # pragma: no cover - PyYAML without libyaml
    _LOADERS = (ConfigLoader,)

# YAML 1.1 readings of plain scalars that YAML 1.2 (and every reader of the JSON Schema) reads otherwise.
_BOOLEAN_WORDS = frozenset(("true", "false"))
_LEADING_ZERO = re.compile(r"^[-+]?0[0-9_]+$")
_HEX = re.compile(r"^[-+]?0x[0-9a-fA-F_]+$")

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(_TAG + name for name in ("str", "int", "float", "bool", "null"))


class Rejected:
    """The value of a node that was already reported (a forbidden tag, a recursive alias…)."""

    def __repr__(self) -> str:
        return "<rejected>"


REJECTED = Rejected()  # the one Rejected value; later stages skip it without a second message


@dataclass(frozen=True, eq=False)
class Node:
    """A YAML value with its 1-based position: a scalar, ``tuple[Node, ...]`` or ``dict[str, Entry]``."""

    value: object
    line: int
    column: int


@dataclass(frozen=True, eq=False)
class Entry:
    """A mapping value with the position of its key (unknown-key errors point at the key)."""

    line: int
    column: int
    node: Node


@dataclass(frozen=True)
class Doc:
    """The document being loaded: its name in messages and the folder its ``impl`` paths are relative to."""

    file: str
    base_dir: Path

    def error(self, at: Node | Entry, field: str, message: str, allowed: str) -> ConfigError:
        """A problem at ``at``'s position; an empty ``field`` names the top level."""
        return ConfigError(self.file, at.line, at.column, field or "(top level)", message, allowed)


def _mark(mark: yaml.Mark | None) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def read_tree(text: str, doc: Doc) -> tuple[Node | None, list[ConfigError]]:
    """Compose ``text`` into located values; ``None`` when there is no usable document."""
    for loader_class in _LOADERS[:-1]:
        try:
            return _read_tree(text, doc, loader_class)
        except yaml.YAMLError:
            continue  # the last loader (pure Python) says what is wrong
    return _read_tree(text, doc, _LOADERS[-1])


def _read_tree(text: str, doc: Doc, loader_class: type[yaml.SafeLoader]) -> tuple[Node | None, list[ConfigError]]:
    """``read_tree`` with one loader; YAML errors escape when it is not the last one (to be parsed again)."""
    last = loader_class is _LOADERS[-1]
    loader: yaml.SafeLoader | None = None
    try:
        loader = loader_class(text)
        root = loader.get_single_node()
        if root is None:
            return None, [file_error(doc.file, "the file is empty", "a mapping with checks: or one check")]
        builder = _TreeBuilder(loader, doc)
        return builder.build(root, ""), builder.errors
    except yaml.YAMLError as exc:
        if not last:
            raise
        return None, [_yaml_error(exc, text, doc)]
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_error(exc: yaml.YAMLError, text: str, doc: Doc) -> ConfigError:
    """What the pure-Python loader said was wrong with the document."""
    if isinstance(exc, yaml.MarkedYAMLError):
        return _syntax_error(exc, doc)
    if isinstance(exc, yaml.reader.ReaderError):
        line, column = position(text, exc.position)
        message = f"invalid character {exc.character!r} in the file: {exc.reason}"
        return ConfigError(doc.file, line, column, "(yaml)", message, "printable characters")
    return ConfigError(doc.file, 1, 1, "(yaml)", f"invalid YAML: {exc}", "valid YAML")


def _syntax_error(exc: yaml.MarkedYAMLError, doc: Doc) -> ConfigError:
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
    """Turns a composed YAML node graph into :class:`Node` values, once per YAML node."""

    def __init__(self, loader: ConfigLoader, doc: Doc) -> None:
        self.loader = loader
        self.doc = doc
        self.done: dict[int, Node] = {}
        self.active: set[int] = set()
        self.errors: list[ConfigError] = []

    def build(self, node: yaml.Node, field: str) -> Node:
        line, column = _mark(node.start_mark)
        key = id(node)  # the composed graph is alive for the whole build, so ids are stable
        if key in self.done:
            return self.done[key]
        if key in self.active:
            self.errors.append(
                self.doc.error(Node(None, line, column), field, "recursive alias", "aliases to finished nodes")
            )
            return Node(REJECTED, line, column)
        self.active.add(key)
        try:
            result = Node(self._value(node, field, line, column), line, column)
        finally:
            self.active.discard(key)
        self.done[key] = result
        return result

    def _value(self, node: yaml.Node, field: str, line: int, column: int) -> object:
        kind = {yaml.ScalarNode: "str", yaml.SequenceNode: "seq", yaml.MappingNode: "map"}.get(type(node), "")
        if node.tag not in _SCALAR_TAGS and node.tag != _TAG + kind:
            self.errors.append(_tag_error(self.doc, Node(None, line, column), field, node.tag))
            return REJECTED
        if isinstance(node, yaml.SequenceNode):
            return tuple(self.build(child, f"{field}[{i}]") for i, child in enumerate(node.value))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, field)
        if not isinstance(node, yaml.ScalarNode):
            return REJECTED  # pragma: no cover - the composer makes only these three kinds
        surprise = yaml11_surprise(node)
        if surprise is not None:
            allowed = _allowed_for(field)
            self.errors.append(self.doc.error(Node(None, line, column), field or "(top level)", surprise, allowed))
            return REJECTED
        try:
            return self.loader.construct_object(node, deep=True)
        except Exception as exc:  # an explicit tag on a value it cannot read, e.g. !!int abc
            message = f"cannot read {shorten(node.value)!r} as {_short_tag(node.tag)}: {shorten(str(exc))}"
            self.errors.append(self.doc.error(Node(None, line, column), field, message, "a value of that type"))
            return REJECTED

    def _mapping(self, node: yaml.MappingNode, field: str) -> dict[str, Entry]:
        own: dict[str, Entry] = {}
        merged: dict[str, Entry] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                for source in self._merge_sources(value_node, field):
                    for name, entry in source.items():
                        merged.setdefault(name, entry)
                continue
            key = self.build(key_node, field)
            if key.value is REJECTED:
                continue
            if not isinstance(key.value, str):
                message = f"mapping keys must be strings, got {describe(key.value)}"
                self.errors.append(self.doc.error(key, field, message, "a key name such as 'stride'"))
                continue
            if key.value in own:
                first = own[key.value]
                message = f"duplicate key {shorten(key.value)!r} (first at line {first.line})"
                self.errors.append(self.doc.error(key, join(field, key.value), message, "each key once"))
                continue
            own[key.value] = Entry(key.line, key.column, self.build(value_node, join(field, key.value)))
        return {**{name: entry for name, entry in merged.items() if name not in own}, **own}

    def _merge_sources(self, value_node: yaml.Node, field: str) -> list[dict[str, Entry]]:
        """The mappings a ``<<:`` key merges in, earliest first (YAML: the first one wins)."""
        value = self.build(value_node, field)
        if isinstance(value.value, dict):
            return [value.value]
        if isinstance(value.value, tuple) and all(isinstance(item.value, dict) for item in value.value):
            return [item.value for item in value.value]  # all() above checked they are dicts
        if value.value is not REJECTED:
            message = f"'<<' merges a mapping or a list of mappings, got {describe(value.value)}"
            self.errors.append(self.doc.error(value, field, message, "an alias to a mapping"))
        return []


def yaml11_surprise(node: yaml.ScalarNode) -> str | None:
    """Why a plain scalar means something else in YAML 1.1 (PyYAML) than in YAML 1.2 and JSON, or None.

    ``yes``/``no``/``on``/``off`` are booleans, ``0755`` is octal (493) and ``1:30`` is base 60 (90) in YAML 1.1
    only; an editor using the JSON Schema, and most people, read them otherwise, so they are refused.
    """
    if node.style not in (None, ""):
        return None  # quoted: a string, as everyone reads it
    text = node.value
    if node.tag == _TAG + "bool" and text.lower() not in _BOOLEAN_WORDS:
        meaning = text.lower() in ("yes", "y", "on")
        return (
            f"{shorten(text)!r} is read as the boolean {str(meaning).lower()} by YAML 1.1 only; "
            f"write {str(meaning).lower()}, or quote it if you mean the text"
        )
    if node.tag in (_TAG + "int", _TAG + "float") and ":" in text:
        return (
            f"{shorten(text)!r} is read as a base-60 number by YAML 1.1 (1:30 is 90); "
            "write the number itself, or quote it if you mean the text"
        )
    if node.tag == _TAG + "int" and _HEX.match(text):  # 0x1 looks like per-axis padding (0 rows, 1 column)
        return (
            f"{shorten(text)!r} is read as the hexadecimal number {int(text.replace('_', ''), 16)} by YAML; "
            f"quote it ('{shorten(text)}') for one value per axis, or write the number itself"
        )
    if node.tag == _TAG + "int" and _LEADING_ZERO.match(text):
        return (
            f"{shorten(text)!r} is read as an octal number by YAML 1.1 (0755 is 493); "
            "write it without the leading zero, or quote it if you mean the text"
        )
    return None


def _tag_error(doc: Doc, at: Node, field: str, tag: str) -> ConfigError:
    shown = _short_tag(tag)
    if tag.startswith(_TAG + "python/"):
        message = f"the Python object tag {shown} is not allowed: convcheck only loads plain YAML"
    else:
        message = f"the YAML tag {shown} is not supported"
    return doc.error(at, field, message, "plain YAML values: strings, numbers, booleans, lists and mappings")


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


__all__ = ["REJECTED", "ConfigLoader", "Doc", "Entry", "Node", "Rejected", "read_tree", "yaml11_surprise"]


def _allowed_for(field: str) -> str:
    """What the key a YAML 1.1 surprise was written for accepts (``checks[2].stride[1]`` → stride's text).

    The tree is built before any key is parsed, so the key is read back from the field path; a value outside
    any known key gets the forms YAML itself reads unambiguously.
    """
    key = re.sub(r"\[\d+\]", "", field).rsplit(".", 1)[-1]
    info = CHECK_KEYS.get(key)
    return info.allowed_text() if info is not None else "true or false, a decimal number, or a quoted string"
