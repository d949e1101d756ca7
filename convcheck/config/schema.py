"""A JSON Schema (draft-07) of the config format, for editors (completion, hover text, squiggles) and CI.

It is generated from :data:`convcheck.config.keys.CHECK_KEYS`, the same table the loader validates against, so the
schema and the loader cannot drift apart. Draft-07 because it is what yaml-language-server and most editors
support best. The schema checks each value on its own; what only the loader can check (the filter fits the
padded input, ``groups`` divides the channels, per-axis values match ``dims``, ``out_height`` matches, names
are unique, ``impl`` files exist) is left to ``convcheck validate``.

Usage in a config file (yaml-language-server)::

    # yaml-language-server: $schema=./convcheck.schema.json
"""

from __future__ import annotations

from typing import Any

from convcheck.config.frameworks import DEVICE_PATTERN
from convcheck.config.keys import (
    CHECK_KEYS,
    EXPECTED_ERROR_ALLOWED,
    MAX_NAME_LENGTH,
    MAX_TEXT_LENGTH,
    KeyInfo,
    Kind,
)
from convcheck.config.values import IDENTIFIER_PATTERN, MEMORY_PATTERN, PADDING_PATTERN, SIZE_PATTERN
from convcheck.spec import Framework, Signature

SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"


def config_schema() -> dict[str, Any]:
    """The JSON Schema of a convcheck config file: ``checks:`` with optional ``defaults:``, or one check.

    Returns:
        A fresh JSON-serializable dict (callers may modify it).
    """
    required = [key for key, info in CHECK_KEYS.items() if info.required and key != "in_height"]
    height = {"anyOf": [{"required": ["in_height"]}, {"properties": {"dims": {"enum": [1]}}, "required": ["dims"]}]}
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "convcheck config",
        "description": (
            "Convolution layers whose backward pass convcheck checks against finite differences. A list value "
            "for a sweepable key sweeps it: the check expands to the cartesian product of its list-valued keys."
        ),
        "anyOf": [
            {"$ref": "#/definitions/suite"},
            {"allOf": [{"$ref": "#/definitions/check"}, {"required": required}, height]},
        ],
        "definitions": {
            "suite": {
                "description": "A list of checks with optional shared defaults.",
                "type": "object",
                "properties": {
                    "defaults": {"$ref": "#/definitions/defaults"},
                    "checks": {
                        "description": "The checks (each may leave out keys given in defaults).",
                        "type": "array",
                        "minItems": 1,
                        "items": {"$ref": "#/definitions/check"},
                    },
                },
                "required": ["checks"],
                "additionalProperties": False,
            },
            "defaults": {
                "description": "Values for every check in checks: (a check's own value wins). Not name.",
                "type": ["object", "null"],
                "properties": {key: key_schema(info) for key, info in CHECK_KEYS.items() if key != "name"},
                "additionalProperties": False,
            },
            "check": {
                "description": "One convolution layer to check.",
                "type": "object",
                "properties": {key: key_schema(info) for key, info in CHECK_KEYS.items()},
                "additionalProperties": False,
            },
        },
    }


def key_schema(info: KeyInfo) -> dict[str, Any]:
    """The schema of one check key: its value, or for sweepable keys also a non-empty list of distinct values."""
    one = _value_schema(info)
    description = f"{info.description}. Allowed: {info.allowed_text()}."
    if info.default is not None:
        description += f" Default: {info.default}."
    if not info.sweepable:
        return {"description": description, **one}
    sweep = {"type": "array", "minItems": 1, "uniqueItems": True, "items": one}
    return {"description": description, "anyOf": [one, sweep]}


def _value_schema(info: KeyInfo) -> dict[str, Any]:
    """The schema of one value of ``info``'s key, by its kind (the loader's parser for that kind, in JSON)."""
    if info.kind is Kind.INT:
        return {"type": "integer", "minimum": int(info.minimum or 0), **_maximum(info)}
    if info.kind is Kind.NUMBER:
        bound = "exclusiveMinimum" if info.exclusive_minimum else "minimum"
        return {"type": "number", bound: info.minimum, **_maximum(info)}
    if info.kind is Kind.CHOICE:
        return {"type": "string", "enum": list(info.choices)}
    if info.kind is Kind.PADDING:
        number = {"type": "integer", "minimum": 0, **_maximum(info)}
        modes = {"type": "string", "enum": ["same", "valid"]}
        return {"anyOf": [number, modes, {"type": "string", "pattern": PADDING_PATTERN}]}
    if info.kind is Kind.SIZE:
        number = {"type": "integer", "minimum": 1, **_maximum(info)}
        return {"anyOf": [number, {"type": "string", "pattern": SIZE_PATTERN}]}
    if info.kind is Kind.DIMS:
        return {"type": "integer", "enum": [1, 2, 3]}
    if info.kind is Kind.TEXT:
        return {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH}
    if info.kind is Kind.DEVICE:
        return {"type": "string", "pattern": DEVICE_PATTERN}
    if info.kind is Kind.MEMORY:
        number = {"type": "integer", "minimum": 1, **_maximum(info)}
        return {"anyOf": [number, {"type": "string", "pattern": MEMORY_PATTERN}]}
    if info.kind is Kind.BOOL:
        return {"type": "boolean"}
    if info.kind is Kind.EXPECTED_ERROR:
        return _expected_error_schema()
    return _impl_schema()  # Kind.IMPL


def _expected_error_schema() -> dict[str, Any]:
    name = {"type": "string", "pattern": IDENTIFIER_PATTERN, "maxLength": MAX_TEXT_LENGTH}
    return {
        "anyOf": [
            name,
            {
                "type": "object",
                "properties": {
                    "type": {"description": EXPECTED_ERROR_ALLOWED["type"], **name},
                    "match": {
                        "description": EXPECTED_ERROR_ALLOWED["match"],
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_TEXT_LENGTH,
                    },
                },
                "additionalProperties": False,
            },
        ]
    }


def _maximum(info: KeyInfo) -> dict[str, float]:
    """The inclusive upper bound of a number key (JSON integers for integer bounds)."""
    if info.maximum is None:
        return {}
    return {"maximum": int(info.maximum) if float(info.maximum).is_integer() else info.maximum}


def _impl_schema() -> dict[str, Any]:
    names = {"type": "string", "pattern": IDENTIFIER_PATTERN, "maxLength": MAX_TEXT_LENGTH}
    return {
        "anyOf": [
            {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_LENGTH},
            {
                "type": "object",
                "properties": {
                    "module": {
                        "description": "a path to a .py file (relative to the config file) or a module name",
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_TEXT_LENGTH,
                    },
                    "forward": {"description": "name of the forward function", **names},
                    "backward": {"description": "name of the backward function", **names},
                    "signature": {
                        "description": "calling convention of the functions",
                        "type": "string",
                        "enum": [member.value for member in Signature],
                    },
                },
                "required": ["module"],
                "additionalProperties": False,
            },
            _framework_impl_schema(),
        ]
    }


def _framework_impl_schema() -> dict[str, Any]:
    named = {"type": "string", "pattern": r"^([^:]+:)?[A-Za-z_][A-Za-z0-9_]*$"}
    return {
        "description": "a torch or JAX layer: function: FILE.py:NAME, or module: FILE.py with function/class: NAME",
        "type": "object",
        "properties": {
            "framework": {"type": "string", "enum": [member.value for member in Framework]},
            "module": {"description": "a path to a .py file or a module name", "type": "string", "minLength": 1},
            "function": {"description": "a function or torch.autograd.Function", **named},
            "class": {"description": "a torch.nn.Module subclass (torch only)", **named},
        },
        "required": ["framework"],
        "anyOf": [{"required": ["function"]}, {"required": ["class"]}],
        "additionalProperties": False,
    }


__all__ = ["SCHEMA_DIALECT", "config_schema", "key_schema"]
