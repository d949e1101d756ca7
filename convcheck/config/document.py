"""The top level of a config: ``checks:`` with optional ``defaults:``, or a file that is one check.

This stage only finds the mappings; their keys are parsed by :mod:`convcheck.config.values`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from convcheck.config.errors import ConfigError, describe, hint, shorten
from convcheck.config.keys import CHECK_KEYS, SUITE_KEYS
from convcheck.config.tree import REJECTED, Doc, Entry, Node


@dataclass(frozen=True)
class CheckNode:
    """One check as written: its mapping node, where it is, and the name it gets when it has none."""

    node: Node  # the check's mapping
    prefix: str  # field prefix: checks[2], or "" for a file that is one check
    default_name: str

    @property
    def mapping(self) -> Mapping[str, Entry]:
        return cast("Mapping[str, Entry]", self.node.value)  # only mappings become checks


@dataclass(frozen=True)
class Document:
    """The defaults and the checks of one file, and what was wrong with its top level."""

    defaults: dict[str, Entry] = field(default_factory=dict)
    checks: list[CheckNode] = field(default_factory=list)
    errors: list[ConfigError] = field(default_factory=list)


def split_document(root: Node, doc: Doc) -> Document:
    """The defaults and the checks of a document, in either top-level form."""
    stem = Path(doc.file).stem
    if root.value is REJECTED:
        return Document()
    if not isinstance(root.value, dict):
        message = (
            f"expected a mapping (checks: and optional defaults:, or the keys of one check), got {describe(root.value)}"
        )
        return Document(errors=[doc.error(root, "(top level)", message, "a mapping")])
    mapping: dict[str, Entry] = root.value
    errors = []
    if "checks" not in mapping:
        if "defaults" in mapping:
            message = "defaults: applies to the checks in checks:, which is missing"
            errors.append(doc.error(mapping["defaults"], "defaults", message, "defaults: together with checks:"))
        single = Node({key: entry for key, entry in mapping.items() if key != "defaults"}, root.line, root.column)
        return Document(checks=[CheckNode(single, "", stem)], errors=errors)
    for key, entry in mapping.items():
        if key not in SUITE_KEYS:
            message = f"unknown top-level key {shorten(key)!r}{hint(key, SUITE_KEYS)}"
            if key in CHECK_KEYS:
                message += "; check keys go under defaults: or inside each check"
            errors.append(doc.error(entry, key, message, "defaults, checks"))
    defaults = _defaults_mapping(mapping.get("defaults"), doc, errors)
    return Document(defaults, _check_nodes(mapping["checks"], stem, doc, errors), errors)


def _defaults_mapping(entry: Entry | None, doc: Doc, errors: list[ConfigError]) -> dict[str, Entry]:
    """The ``defaults:`` mapping; empty when absent or null (every default commented out)."""
    if entry is None or entry.node.value is None or entry.node.value is REJECTED:
        return {}
    if not isinstance(entry.node.value, dict):
        message = f"defaults must be a mapping of check keys, got {describe(entry.node.value)}"
        errors.append(doc.error(entry.node, "defaults", message, "a mapping such as {seed: 0}"))
        return {}
    return entry.node.value


def _check_nodes(entry: Entry, stem: str, doc: Doc, errors: list[ConfigError]) -> list[CheckNode]:
    value = entry.node.value
    if value is REJECTED:
        return []
    if not isinstance(value, tuple) or not value:
        got = "an empty list" if value == () else describe(value)
        message = f"checks must be a non-empty list of checks, got {got}"
        errors.append(doc.error(entry.node, "checks", message, "a list of mappings, each one check"))
        return []
    checks = []
    for index, item in enumerate(value):
        if isinstance(item.value, dict):
            checks.append(CheckNode(item, f"checks[{index}]", f"{stem}-{index}"))
        elif item.value is not REJECTED:
            message = f"expected a mapping (one check), got {describe(item.value)}"
            errors.append(doc.error(item, f"checks[{index}]", message, "a mapping of check keys"))
    return checks


__all__ = ["CheckNode", "Document", "split_document"]
