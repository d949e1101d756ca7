"""The JSON Schema of the config format: well-formed, in step with the loader, and true of the shipped configs.

No new dependency: a small validator below covers exactly the JSON Schema keywords the schema uses (a test
fails if the schema starts using another one). When ``jsonschema`` happens to be installed, it is used too.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import sweeps

from convcheck.config import load_text
from convcheck.config.keys import CHECK_KEYS, IMPL_KEYS
from convcheck.config.schema import SCHEMA_DIALECT, config_schema
from convcheck.config.tree import ConfigLoader
from convcheck.spec import Activation, DType, Layout, Method, Signature

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
BAD = ROOT / "tests" / "fixtures" / "bad_configs"

ANNOTATIONS = {"$schema", "title", "description"}
KEYWORDS = {
    "$ref", "definitions", "type", "enum", "minimum", "exclusiveMinimum", "maximum", "minLength", "maxLength",
    "pattern", "properties",
    "additionalProperties", "required", "items", "minItems", "uniqueItems", "anyOf", "allOf",
}  # fmt: skip
TYPES = {"object", "array", "string", "integer", "number", "boolean", "null"}


# --- a validator for the subset of draft-07 the schema uses ---------------------------------------------


def is_type(value: object, name: str) -> bool:
    """JSON types of a YAML-loaded value; ``integer`` includes 1.0, as in draft-07."""
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float))
    return isinstance(value, {"string": str, "object": dict, "array": list}[name])


def json_equal(a: object, b: object) -> bool:
    """Equality as JSON sees it: ``true`` is not ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[key], b[key]) for key in a)
    return a == b


def resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/"), ref
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def validate(instance: object, schema: dict[str, Any], root: dict[str, Any], path: str = "$") -> list[str]:
    """Every way ``instance`` breaks ``schema``, as ``path: problem`` strings (empty when valid)."""
    if "$ref" in schema:
        return validate(instance, resolve(root, schema["$ref"]), root, path)
    errors: list[str] = []

    def fail(message: str) -> None:
        errors.append(f"{path}: {message}")

    types = schema.get("type")
    if types is not None and not any(
        is_type(instance, name) for name in ([types] if isinstance(types, str) else types)
    ):
        fail(f"not of type {types}")
        return errors
    if "enum" in schema and not any(json_equal(instance, option) for option in schema["enum"]):
        fail(f"{instance!r} not in {schema['enum']}")
    if is_type(instance, "number"):
        if "minimum" in schema and instance < schema["minimum"]:  # type: ignore[operator]
            fail(f"{instance} < {schema['minimum']}")
        if "exclusiveMinimum" in schema and instance <= schema["exclusiveMinimum"]:  # type: ignore[operator]
            fail(f"{instance} <= {schema['exclusiveMinimum']}")
        if "maximum" in schema and instance > schema["maximum"]:  # type: ignore[operator]
            fail(f"{instance} > {schema['maximum']}")
    if isinstance(instance, str):
        if len(instance) < schema.get("minLength", 0):
            fail("too short")
        if len(instance) > schema.get("maxLength", math.inf):
            fail("too long")
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            fail(f"{instance!r} does not match {schema['pattern']}")
    if isinstance(instance, dict):
        properties = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in instance:
                fail(f"missing {key}")
        for key, value in instance.items():
            if key in properties:
                errors += validate(value, properties[key], root, f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                fail(f"unexpected key {key!r}")
    if isinstance(instance, list):
        if len(instance) < schema.get("minItems", 0):
            fail("too few items")
        if schema.get("uniqueItems") and any(
            json_equal(a, b) for i, a in enumerate(instance) for b in instance[i + 1 :]
        ):
            fail("items not unique")
        if "items" in schema:
            for index, item in enumerate(instance):
                errors += validate(item, schema["items"], root, f"{path}[{index}]")
    if "anyOf" in schema and all(validate(instance, sub, root, path) for sub in schema["anyOf"]):
        fail("matches none of anyOf")
    for sub in schema.get("allOf", []):
        errors += validate(instance, sub, root, path)
    return errors


def schema_errors(instance: object) -> list[str]:
    schema = config_schema()
    return validate(instance, schema, schema)


def read(text: str) -> object:
    """YAML as the loader reads it (so ``1e-6`` is a number, as in YAML 1.2 editors)."""
    return yaml.load(text, Loader=ConfigLoader)


# --- the schema is well-formed ----------------------------------------------------------------------------


def walk(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Every subschema, following the keywords that hold schemas."""
    found = [schema]
    for key, value in schema.items():
        if key in ("properties", "definitions"):
            for sub in value.values():
                found += walk(sub)
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            found += walk(value)
        elif key in ("anyOf", "allOf"):
            for sub in value:
                found += walk(sub)
    return found


def test_schema_is_json_and_draft_07() -> None:
    schema = config_schema()
    assert json.loads(json.dumps(schema)) == schema
    assert schema["$schema"] == SCHEMA_DIALECT == "http://json-schema.org/draft-07/schema#"
    assert config_schema() is not config_schema()


def test_schema_uses_only_keywords_the_validator_knows_and_refs_resolve() -> None:
    schema = config_schema()
    for sub in walk(schema):
        assert set(sub) <= KEYWORDS | ANNOTATIONS, set(sub) - KEYWORDS - ANNOTATIONS
        if "$ref" in sub:
            assert set(sub) == {"$ref"}, "draft-07 ignores siblings of $ref"
            assert isinstance(resolve(schema, sub["$ref"]), dict)
        types = sub.get("type", "object")
        assert set([types] if isinstance(types, str) else types) <= TYPES
        if "pattern" in sub:
            re.compile(sub["pattern"])
        assert all(isinstance(key, str) for key in sub.get("required", []))


# --- the schema and the loader agree on the keys ----------------------------------------------------------


def test_schema_keys_equal_the_keys_the_loader_accepts() -> None:
    definitions = config_schema()["definitions"]
    check_keys = set(definitions["check"]["properties"])
    assert check_keys == set(CHECK_KEYS)
    assert set(definitions["defaults"]["properties"]) == set(CHECK_KEYS) - {"name"}
    assert set(definitions["suite"]["properties"]) == {"defaults", "checks"}
    forms = definitions["check"]["properties"]["impl"]["anyOf"][0]["anyOf"][1:]  # numpy, then framework
    assert {key for form in forms for key in form["properties"]} == set(IMPL_KEYS)
    for key in check_keys:
        errors = load_text(f"{key}: 1\n").errors
        assert not any(error.message.startswith("unknown key") for error in errors), key
    assert any(error.message.startswith("unknown key") for error in load_text("stride_: 1\n").errors)


def test_schema_enums_and_sweeps_match_the_loader() -> None:
    properties = config_schema()["definitions"]["check"]["properties"]
    enums = {"activation": Activation, "method": Method, "dtype": DType, "layout": Layout}
    for key, enum in enums.items():
        assert properties[key]["anyOf"][0]["enum"] == [member.value for member in enum]
    assert {
        key for key, prop in properties.items() if "anyOf" in prop and prop["anyOf"][-1].get("type") == "array"
    } == {key for key, info in CHECK_KEYS.items() if info.sweepable}
    signature = properties["impl"]["anyOf"][0]["anyOf"][1]["properties"]["signature"]
    assert signature["enum"] == [member.value for member in Signature]
    assert all(prop.get("description") for prop in properties.values())


# --- the schema says the right things about real configs ---------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_shipped_configs_satisfy_the_schema(path: Path) -> None:
    assert schema_errors(read(path.read_text(encoding="utf-8"))) == []


@pytest.mark.parametrize(
    "name",
    [
        "unknown_key", "bool_for_int", "float_for_int", "negative_and_zero", "float_bounds", "top_level_list",
        "checks_not_list", "check_not_mapping", "empty_sweep", "duplicate_sweep_value",
        "unknown_choice", "not_sweepable", "bad_memory", "defaults_problems", "name_not_string",
    ],
)  # fmt: skip
def test_the_schema_rejects_bad_values(name: str) -> None:
    text = (BAD / f"{name}.yaml").read_text(encoding="utf-8").replace("!!int many", "many")
    assert schema_errors(read(text))


@pytest.mark.parametrize(
    "name",
    [
        "filter_too_large",
        "groups_not_dividing",
        "out_shape_mismatch",
        "duplicate_names",
        "sweep_combination",
        "missing_required",
    ],
)
def test_what_only_the_loader_can_check_passes_the_schema(name: str) -> None:
    """Geometry, uniqueness and required keys given in defaults span several places: left to the loader."""
    assert schema_errors(read((BAD / f"{name}.yaml").read_text(encoding="utf-8"))) == []
    assert load_text((BAD / f"{name}.yaml").read_text(encoding="utf-8")).errors


def test_the_validator_is_not_vacuous() -> None:
    layer = {"batch": 1, "in_height": 4, "in_width": 4, "in_depth": 1, "out_depth": 1, "filter_size": 3}
    assert schema_errors(layer) == []
    assert schema_errors({**layer, "stride": True})
    assert schema_errors({**layer, "stride": [1, 1.0]})
    assert schema_errors({**layer, "padding": "sane"})
    assert schema_errors({**layer, "filter_size": "3x"})
    assert schema_errors({**layer, "max_memory": "2 GBs"})
    assert schema_errors({"checks": []})
    assert schema_errors({"checks": [layer], "defaults": {"name": "x"}})
    assert schema_errors({"defaults": {}, **layer})
    assert schema_errors({"checks": [{**layer, "impl": {"forward": "f"}}]})


# --- property: whatever the loader accepts, the schema accepts --------------------------------------------


# Valid values, with the edge cases of valid (1.0 for an integer, "1e-6", "same", "1.5 kb", an impl mapping):
# the property is about the loader never accepting what an editor would flag.
SIZE = sweeps(st.sampled_from([3, 4, 5, 6, 4.0]))
OPTIONAL = {
    "name": st.text("abc-[]=,", min_size=1, max_size=4),
    "stride": sweeps(st.sampled_from([1, 2, 3, 1.0])),
    "padding": sweeps(st.sampled_from([0, 1, "same", 2.0])),
    "activation": sweeps(st.sampled_from([a.value for a in Activation])),
    "method": sweeps(st.sampled_from([m.value for m in Method])),
    "dtype": sweeps(st.sampled_from([d.value for d in DType])),
    "seed": sweeps(st.integers(0, 2**70)),
    "eps": sweeps(st.sampled_from(["1e-6", 1e-6, 1, 0.5, "2E-3"])),
    "rtol": sweeps(st.floats(0, 1)),
    "atol": sweeps(st.floats(0, 1e-3) | st.just(0)),
    "layout": sweeps(st.sampled_from([x.value for x in Layout])),
    "timeout": st.sampled_from([1, 0.5, 30, 1e-3]),
    "max_memory": st.sampled_from([1, 2.0, "2GB", "512MiB", "1.5 kb", ".5KiB", " 7 B ", 10**12]),
    "impl": sweeps(
        st.sampled_from(
            [
                "builtin",
                "convcheck.layer",
                {"module": "convcheck.layer", "signature": "cs231n"},
                {"module": "json", "forward": "loads", "backward": "dumps", "signature": "convcheck"},
            ]
        )
    ),
}
CHECK = st.fixed_dictionaries(
    {key: SIZE for key in ("batch", "in_height", "in_width", "in_depth", "out_depth")}
    | {"filter_size": sweeps(st.sampled_from([1, 2, 3]))},
    optional=OPTIONAL,
)
DOCUMENT = CHECK | st.fixed_dictionaries(
    {"checks": st.lists(CHECK, min_size=1, max_size=2)},
    optional={"defaults": st.fixed_dictionaries({}, optional={k: v for k, v in OPTIONAL.items() if k != "name"})},
)


@settings(max_examples=200, deadline=None)
@given(DOCUMENT)
def test_every_config_the_loader_accepts_satisfies_the_schema(document: dict[str, Any]) -> None:
    text = yaml.safe_dump(document)
    result = load_text(text)
    if result.ok:
        assert schema_errors(read(text)) == []
    elif not schema_errors(read(text)):  # then the problem is one the schema cannot see: geometry, names
        assert all(error.field.split(".")[-1].split("[")[0] in GEOMETRY for error in result.errors), result.errors


GEOMETRY = {"filter_size", "padding", "out_height", "out_width", "name"}


def test_jsonschema_agrees_when_installed() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = config_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    for path in CONFIGS:
        jsonschema.validate(read(path.read_text(encoding="utf-8")), schema, cls=jsonschema.Draft7Validator)
