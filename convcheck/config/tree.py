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


class ConfigLoader(yaml.SafeLoader):
    """The YAML loader for configs: PyYAML's SafeLoader, with YAML 1.2 floats and without timestamps.

    PyYAML reads ``1e-6`` as a *string* (YAML 1.1 floats need a dot), which would make ``eps: 1e-6`` a type
    error; editors using the JSON Schema read it as a number, so we do too. Dates stay strings, so a name
    like ``2024-01-01`` is not a ``datetime``. The loader only composes; :func:`read_tree` builds values.
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
    loader: ConfigLoader | None = None
    try:
        loader = ConfigLoader(text)
        root = loader.get_single_node()
        if root is None:
            return None, [file_error(doc.file, "the file is empty", "a mapping with checks: or one check")]
        builder = _TreeBuilder(loader, doc)
        return builder.build(root, ""), builder.errors
    except yaml.MarkedYAMLError as exc:
        return None, [_syntax_error(exc, doc)]
    except yaml.reader.ReaderError as exc:
        line, column = position(text, exc.position)
        message = f"invalid character {exc.character!r} in the file: {exc.reason}"
        return None, [ConfigError(doc.file, line, column, "(yaml)", message, "printable characters")]
    except yaml.YAMLError as exc:
        return None, [ConfigError(doc.file, 1, 1, "(yaml)", f"invalid YAML: {exc}", "valid YAML")]
    finally:
        if loader is not None:
            loader.dispose()


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


def _tag_error(doc: Doc, at: Node, field: str, tag: str) -> ConfigError:
    shown = _short_tag(tag)
    if tag.startswith(_TAG + "python/"):
        message = f"the Python object tag {shown} is not allowed: convcheck only loads plain YAML"
    else:
        message = f"the YAML tag {shown} is not supported"
    return doc.error(at, field, message, "plain YAML values: strings, numbers, booleans, lists and mappings")


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


__all__ = ["REJECTED", "ConfigLoader", "Doc", "Entry", "Node", "Rejected", "read_tree"]
