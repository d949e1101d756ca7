"""The config loader: YAML in, validated and expanded CheckSpecs or located errors out, never a traceback.

Each file in tests/fixtures/bad_configs/ is one kind of bad config and carries its expected errors in header
comments, one per error, in the order the loader reports them (file order):

    # expect: LINE FIELD: MESSAGE (a substring of the message)
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
import re
import string
from enum import Enum
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from strategies import sweeps

from convcheck.config import ConfigError, ConfigLoad, load_configs, load_file, load_text
from convcheck.config.expand import MAX_CHECKS_PER_FILE
from convcheck.config.keys import CHECK_KEYS, SWEEP_TEXT, Kind, Target
from convcheck.config.tree import ConfigLoader
from convcheck.config.values import parse_memory
from convcheck.spec import Activation, CheckSpec, ConvShape, DType, ImplRef, Layout, Method, Signature

ROOT = Path(__file__).resolve().parent.parent
BAD = ROOT / "tests" / "fixtures" / "bad_configs"
CONFIGS = ROOT / "configs"
EXPECT = re.compile(r"^# expect: (\d+) (.+?): (.*)$", re.MULTILINE)

LAYER = "batch: 2\nin_height: 5\nin_width: 6\nin_depth: 3\nout_depth: 4\nfilter_size: 3\n"


def load(text: str, **kwargs: object) -> ConfigLoad:
    return load_text(text, file="test.yaml", **kwargs)  # type: ignore[arg-type]


def only_specs(text: str) -> list:
    result = load(text)
    assert result.errors == (), [str(error) for error in result.errors]
    return list(result.specs)


# --- one fixture per kind of bad config -----------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(BAD.glob("*.yaml")), ids=lambda path: path.stem)
def test_bad_config_reports_each_problem_with_line_and_field(path: Path) -> None:
    expected = EXPECT.findall(path.read_text(encoding="utf-8"))
    assert expected, f"{path.name} has no '# expect:' lines"
    result = load_file(path)
    got = [(error.line, error.field, error.message) for error in result.errors]
    assert len(got) == len(expected), "\n".join(str(error) for error in result.errors)
    for (line, field, message), error in zip(expected, result.errors, strict=True):
        assert (error.line, error.field) == (int(line), field), str(error)
        assert message in error.message, str(error)
        assert error.file == str(path) and error.column >= 1 and error.allowed
    assert result.specs == ()


def test_a_broken_file_does_not_stop_the_others() -> None:
    result = load_configs([BAD / "many_problems.yaml", CONFIGS / "textbook.yaml", BAD / "groups_not_dividing.yaml"])
    assert {error.file for error in result.errors} == {
        str(BAD / "many_problems.yaml"),
        str(BAD / "groups_not_dividing.yaml"),
    }
    assert [spec.name for spec in result.specs] == ["textbook-layer"]
    assert not result.ok


def test_error_is_one_line_in_compiler_format() -> None:
    error = ConfigError("c.yaml", 3, 7, "checks[2].stride", "must be at least 1, got 0", "an integer ≥ 1")
    assert str(error) == "c.yaml:3:7: checks[2].stride: must be at least 1, got 0; allowed: an integer ≥ 1"
    multiline = ConfigError("c.yaml", 1, 1, "name", "bad\nvalue", "x\ny")
    assert "\n" not in str(multiline)


# --- the shipped configs --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda path: path.stem)
def test_every_shipped_config_loads_cleanly(path: Path) -> None:
    result = load_file(path)
    assert result.errors == (), [str(error) for error in result.errors]
    assert result.specs
    for spec in result.specs:
        assert spec.shape.problems() == []
        json.dumps(spec.config)


def test_seed_config_is_the_seed_layer() -> None:
    (spec,) = load_file(CONFIGS / "textbook.yaml").specs
    assert spec.name == "textbook-layer"
    assert spec.shape.x_shape == (8, 32, 48, 16)
    assert spec.shape.w_shape == (3, 3, 16, 32)
    assert (spec.shape.stride, spec.shape.padding, spec.activation) == (1, 1, Activation.RELU)
    assert spec.shape.out_shape == (8, 32, 48, 32)
    assert spec.impl is None


def test_smoke_config_covers_small_geometries() -> None:
    specs = load_file(CONFIGS / "smoke.yaml").specs
    assert len(specs) >= 20
    shapes = [spec.shape for spec in specs]
    assert {shape.filter_size for shape in shapes} == {1, 2, 3, 5}
    assert {shape.stride for shape in shapes} == {1, 2, 3}
    for k in (1, 2, 3, 5):
        assert {shape.padding for shape in shapes if shape.filter_size == k} == set(range(k))
    for shape in shapes:
        assert shape.in_height != shape.in_width
        assert shape.batch > 1 and shape.in_depth > 1 and shape.out_depth > 1
        assert max(shape.in_height, shape.in_width) <= 9 and max(shape.in_depth, shape.out_depth) <= 3
    assert all(spec.method is Method.FULL for spec in specs)
    assert {spec.activation for spec in specs} == set(Activation)


def test_features_config_uses_every_key_except_impl_files() -> None:
    text = (CONFIGS / "features.yaml").read_text(encoding="utf-8")
    data = yaml.load(text, Loader=ConfigLoader)
    used = set(data["defaults"]) | {key for check in data["checks"] for key in check}
    assert used == set(CHECK_KEYS) - {"device"}  # a torch or JAX layer's key: docs/frameworks.md's configs use it
    assert {spec.dtype for spec in load_file(CONFIGS / "features.yaml").specs} == set(DType)


# --- sweeps ---------------------------------------------------------------------------------------------


def test_sweep_is_the_cartesian_product_in_key_order_named_after_its_values() -> None:
    specs = only_specs("name: textbook-layer\npadding: [0, 1]\n" + LAYER + "stride: [1, 2, 3]\n")
    assert [spec.name for spec in specs] == [
        f"textbook-layer[stride={s},padding={p}]" for s, p in itertools.product((1, 2, 3), (0, 1))
    ]
    assert [(spec.shape.stride, spec.shape.padding) for spec in specs] == list(itertools.product((1, 2, 3), (0, 1)))


def test_sweep_names_only_list_valued_keys_and_one_element_lists_count() -> None:
    specs = only_specs("name: n\n" + LAYER + "stride: 2\nactivation: [tanh]\nmethod: [full, sampled]\n")
    assert [spec.name for spec in specs] == ["n[activation=tanh,method=full]", "n[activation=tanh,method=sampled]"]


def test_sweep_expansion_count_is_the_product_of_list_lengths() -> None:
    text = LAYER.replace("batch: 2", "batch: [1, 2, 3]") + "seed: [0, 1, 2, 3]\ndtype: [float64, float32]\n"
    specs = only_specs(text)
    assert len(specs) == 3 * 4 * 2
    assert len({spec.name for spec in specs}) == len(specs)
    assert {spec.config["seed"] for spec in specs} == {0, 1, 2, 3}


def test_sweep_errors_name_the_combinations_and_valid_ones_are_not_reported() -> None:
    text = "name: g\nbatch: 1\nin_height: [4, 8]\nin_width: 8\nin_depth: 1\nout_depth: 1\nfilter_size: [3, 5]\n"
    result = load(text)
    (error,) = result.errors
    assert (error.line, error.field) == (7, "filter_size[1]")
    assert "in 1 of 4 expanded checks ('g[in_height=4,filter_size=5]')" in error.message


def test_sweep_cap_is_per_file() -> None:
    ten = "[" + ", ".join(str(i) for i in range(1, 11)) + "]"
    lines = [f"{key}: {ten}" for key in ("batch", "in_height", "in_width", "in_depth")] + ["filter_size: 1"]
    assert MAX_CHECKS_PER_FILE == 10**5
    (error,) = load("\n".join(lines) + "\nout_depth: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]\n").errors
    assert "expands to 110000 checks, bringing the file to 110000; at most 100000 are allowed" in error.message
    # 6 checks, then twice 100,000: each check within the cap, the second brings the file past it (and only the
    # second is reported). The file's count is the sum of each check's count, so the first needs no more than a
    # few checks (each one it has is expanded and validated, which is all this test's time).
    at_the_cap = ", ".join(lines) + ", out_depth: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"
    small = "batch: 1, in_height: 4, in_width: 4, in_depth: 1, filter_size: 1, out_depth: [1, 2, 3, 4, 5, 6]"
    checks = [f"  - {{name: c0, {small}}}"]
    checks += [f"  - {{name: c{i}, {at_the_cap}}}" for i in (1, 2)]
    (error,) = load("checks:\n" + "\n".join(checks) + "\n").errors  # 6 + 100,000 + 100,000 checks
    assert error.field == "checks[1]" and "expands to 100000 checks, bringing the file to 100006" in error.message
    assert len(only_specs("\n".join(lines) + "\nout_depth: 1\n")) == 10**4


# --- defaults and the two top-level forms ---------------------------------------------------------------


def test_defaults_apply_to_every_check_and_a_check_overrides_them() -> None:
    text = """
defaults:
  batch: 2
  in_depth: 3
  out_depth: 4
  seed: 9
  activation: tanh
checks:
  - {in_height: 5, in_width: 6, filter_size: 3}
  - {in_height: 5, in_width: 6, filter_size: 3, seed: 1, batch: 7}
"""
    first, second = only_specs(text)
    assert (first.seed, first.shape.batch, first.activation) == (9, 2, Activation.TANH)
    assert (second.seed, second.shape.batch, second.activation) == (1, 7, Activation.TANH)
    assert (first.name, second.name) == ("test-0", "test-1")


def test_a_list_in_defaults_sweeps_every_check_unless_the_check_sets_the_key() -> None:
    text = "defaults:\n  stride: [1, 2]\nchecks:\n  - {name: a, " + LAYER.replace("\n", ", ")[:-2] + "}\n"
    text += "  - {name: b, stride: 3, " + LAYER.replace("\n", ", ")[:-2] + "}\n"
    assert [spec.name for spec in only_specs(text)] == ["a[stride=1]", "a[stride=2]", "b"]


def test_null_defaults_are_no_defaults() -> None:
    assert (
        len(only_specs("defaults:\n  # all commented out\nchecks:\n  - {" + LAYER.replace("\n", ", ")[:-2] + "}")) == 1
    )


def test_both_top_level_forms_give_the_same_check() -> None:
    (single,) = only_specs(LAYER + "stride: 2\n")
    indented = "".join(f"    {line}\n" for line in (LAYER + "stride: 2").splitlines()).replace("    ", "  - ", 1)
    (listed,) = only_specs("checks:\n" + indented)
    assert single.name == "test" and listed.name == "test-0"
    assert (single.shape, single.config | {"name": 0}) == (listed.shape, listed.config | {"name": 0})


def test_merge_keys_and_anchors_work_like_defaults() -> None:
    text = """
defaults: &base {batch: 2, in_height: 5, in_width: 6, in_depth: 1, out_depth: 1}
checks:
  - {<<: *base, filter_size: 3, in_width: 9}
  - {<<: [{filter_size: 1}, *base], name: merged}
"""
    first, second = only_specs(text)
    assert first.shape.in_width == 9 and second.shape.filter_size == 1 and second.name == "merged"


# --- values ---------------------------------------------------------------------------------------------


def test_same_padding_resolves_to_half_the_filter_and_keeps_its_label() -> None:
    specs = only_specs(
        LAYER.replace("filter_size: 3", "filter_size: [1, 3, 5]").replace("5", "2", 1) + "padding: same\n"
    )
    assert [spec.shape.padding for spec in specs] == [0, 1, 2]
    assert all(spec.shape.out_height == spec.shape.in_height for spec in specs)
    (swept, fixed) = only_specs(LAYER + "padding: [same, 0]\n")
    assert swept.name.endswith("[padding=same]") and swept.config["padding"] == 1 and fixed.config["padding"] == 0


def test_out_height_and_out_width_are_accepted_when_they_match() -> None:
    (spec,) = only_specs(LAYER + "stride: 2\npadding: 1\nout_height: 3\nout_width: 3\n")
    assert spec.shape.out_shape == (2, 3, 3, 4)


def test_every_key_parses_to_the_spec_field() -> None:
    text = LAYER + (
        "stride: 2\npadding: 1\nactivation: leaky_relu\nmethod: directional\ndtype: float32\nseed: 5\n"
        "eps: 1e-4\nrtol: 0\natol: 1.5e-7\nlayout: nchw\ntimeout: 2.5\nmax_memory: 1.5GiB\nname: all\n"
        "impl: convcheck.layer\n"
    )
    (spec,) = only_specs(text)
    assert spec.activation is Activation.LEAKY_RELU and spec.method is Method.DIRECTIONAL
    assert spec.dtype is DType.FLOAT32 and spec.layout is Layout.NCHW
    assert (spec.seed, spec.eps, spec.rtol, spec.atol) == (5, 1e-4, 0.0, 1.5e-7)
    assert (spec.timeout, spec.max_memory) == (2.5, 3 * 2**29)
    assert spec.impl == ImplRef(module="convcheck.layer", base_dir=Path.cwd())
    assert spec.config["impl"] == "convcheck.layer" and spec.config["max_memory"] == 3 * 2**29


def test_absent_keys_take_the_documented_defaults() -> None:
    (spec,) = only_specs(LAYER)
    assert (spec.shape.stride, spec.shape.padding, spec.activation, spec.method) == (1, 0, Activation.RELU, Method.AUTO)
    assert (spec.dtype, spec.seed, spec.layout, spec.impl) == (DType.FLOAT64, 0, Layout.NHWC, None)
    assert (spec.eps, spec.rtol, spec.atol, spec.timeout, spec.max_memory) == (None,) * 5
    assert spec.config == {
        "name": "test", "batch": 2, "in_height": 5, "in_width": 6, "in_depth": 3, "out_depth": 4,
        "dims": 2, "in_frames": 1, "filter_size": 3, "stride": 1, "dilation": 1, "padding": 0, "groups": 1,
        "bias": True, "out_frames": 1, "out_height": 3, "out_width": 4, "activation": "relu",
        "method": "auto", "dtype": "float64", "seed": 0, "eps": None, "rtol": None, "atol": None,
        "impl": "builtin", "layout": "nhwc", "bias_shape": "flat", "device": None, "timeout": None,
        "max_memory": None, "strict": False,
        "expected_error": None,
    }  # fmt: skip


def test_integral_floats_are_integers_but_booleans_and_fractions_are_not() -> None:
    (spec,) = only_specs(LAYER.replace("batch: 2", "batch: 2.0"))
    assert spec.shape.batch == 2 and type(spec.shape.batch) is int
    for bad, message in (
        ("true", "got a boolean (true)"),
        ("yes", "'yes' is read as the boolean true by YAML 1.1 only"),
        ("2.5", "got the number 2.5"),
        (".nan", "got the number nan"),
    ):
        (error,) = load(LAYER.replace("batch: 2", f"batch: {bad}")).errors
        assert error.field == "batch" and message in error.message


def test_exponent_floats_without_a_dot_are_numbers() -> None:
    (spec,) = only_specs(LAYER + "eps: 1e-6\natol: 3E-9\n")
    assert (spec.eps, spec.atol) == (1e-6, 3e-9)


def test_dates_stay_strings() -> None:
    (spec,) = only_specs(LAYER + "name: 2024-01-01\n")
    assert spec.name == "2024-01-01"


def test_impl_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "layers").mkdir()
    (tmp_path / "layers" / "mine.py").write_text("")
    config = tmp_path / "check.yaml"
    config.write_text(
        "checks:\n  - {" + LAYER.replace("\n", ", ")[:-2] + ", impl: layers/mine.py}\n"
        "  - {" + LAYER.replace("\n", ", ")[:-2] + ", impl: {module: layers/mine.py, forward: conv_forward_naive,"
        " backward: conv_backward_naive, signature: cs231n}}\n"
        "  - {" + LAYER.replace("\n", ", ")[:-2] + ", impl: builtin}\n"
    )
    plain, cs231n, builtin = load_file(config).specs
    assert plain.impl == ImplRef(module="layers/mine.py", base_dir=tmp_path.resolve())
    assert cs231n.impl == ImplRef(
        "layers/mine.py", "conv_forward_naive", "conv_backward_naive", Signature.CS231N, tmp_path.resolve()
    )
    assert cs231n.config["impl"] == {
        "module": "layers/mine.py",
        "forward": "conv_forward_naive",
        "backward": "conv_backward_naive",
        "signature": "cs231n",
    }
    assert builtin.impl is None and builtin.config["impl"] == "builtin"


def test_source_points_at_the_check_item() -> None:
    text = "# header\ndefaults: {seed: 1}\nchecks:\n  - name: a\n" + "".join(
        f"    {line}\n" for line in LAYER.splitlines()
    )
    text += "  - {" + LAYER.replace("\n", ", ")[:-2] + "}\n"
    first, second = load_text(text, file="dir/c.yaml").specs
    assert (first.source.file, first.source.line, first.source.column) == ("dir/c.yaml", 4, 5)
    assert (second.source.line, second.source.column) == (11, 5)


@pytest.mark.parametrize(
    ("text", "size"),
    [("1", 1), ("2GB", 2 * 10**9), ("512MiB", 512 * 2**20), ("1.5 kb", 1500), ("3 B", 3), (".5KiB", 512)],
)
def test_parse_memory(text: str, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["", "GB", "2 GBs", "0.1B", "-1GB", "1e9", "2 gigabytes"])
def test_parse_memory_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_memory(text)


# --- unknown keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("strides", "stride"),
        ("Padding", "padding"),
        ("filtersize", "filter_size"),
        ("in_channels", "in_depth"),
        ("kernel_size", "filter_size"),
        ("batch_size", "batch"),
        ("activaton", "activation"),
        ("max_mem", "max_memory"),
    ],
)
def test_unknown_key_suggests_the_closest_key(key: str, hint: str) -> None:
    errors = [error for error in load(LAYER + f"{key}: 1\n").errors if error.field == key]
    assert len(errors) == 1 and f"(did you mean {hint!r}?)" in errors[0].message
    assert "stride" in errors[0].allowed


def test_unknown_key_without_a_close_match_has_no_hint() -> None:
    (error,) = load(LAYER + "colour: blue\n").errors
    assert error.message == "unknown key 'colour'"


# --- safety ---------------------------------------------------------------------------------------------


def test_python_tags_are_rejected_and_never_constructed(tmp_path: Path) -> None:
    marker = tmp_path / "constructed"
    payload = f'!!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path ["{marker}"]]'
    for text in (f"name: {payload}\n" + LAYER, f"checks:\n  - {payload}\n", payload, f"? {payload}\n: 1\n"):
        result = load(text)
        assert result.specs == ()
        assert any("Python object tag" in error.message for error in result.errors), result.errors
    assert not marker.exists()


def test_the_loader_class_is_a_safe_loader() -> None:
    assert issubclass(ConfigLoader, yaml.SafeLoader)
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.load("!!python/object/apply:os.getcwd []", Loader=ConfigLoader)


def test_malformed_yaml_gives_one_error_at_the_parser_position() -> None:
    (error,) = load("checks:\n  - batch: [1, 2\n    stride: 1\n").errors
    assert (error.line, error.field) == (3, "(yaml)")
    assert "began at line 2, column 12" in error.message


def test_aliases_are_converted_once() -> None:
    """A 'billion laughs' document stays cheap because every node is converted once."""
    lines = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]" for i in range(9)]
    result = load("\n".join(lines) + "\n")
    assert result.specs == () and any(error.message.startswith("unknown key 'a'") for error in result.errors)


def test_control_characters_and_non_utf8_files_are_errors(tmp_path: Path) -> None:
    (error,) = load("batch: 1\nname: \x07\n").errors
    assert (error.line, error.field) == (2, "(yaml)")
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    (error,) = load_file(path).errors
    assert (error.line, error.field) == (1, "(file)") and "UTF-8" in error.message


# --- files and folders ----------------------------------------------------------------------------------


def test_folders_are_searched_recursively_in_sorted_order(tmp_path: Path) -> None:
    one = "checks:\n  - {" + LAYER.replace("\n", ", ")[:-2] + "}\n"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.yml").write_text(one)
    (tmp_path / "b" / "a.yaml").write_text(one)
    (tmp_path / "a.yaml").write_text(one)
    (tmp_path / "notes.txt").write_text("not a config")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "x.yaml").write_text("not: a config")
    (tmp_path / ".hidden.yaml").write_text("not: a config")
    result = load_configs([tmp_path, tmp_path / "a.yaml"])
    assert result.errors == ()
    assert [Path(file).relative_to(tmp_path).as_posix() for file in result.files] == ["a.yaml", "b/a.yaml", "b/z.yml"]
    assert [spec.name for spec in result.specs] == ["a-0", "a-0", "z-0"]


def test_missing_paths_and_empty_folders_are_errors(tmp_path: Path) -> None:
    result = load_configs([tmp_path / "nope.yaml", tmp_path])
    assert [(error.field, error.message) for error in result.errors] == [
        ("(file)", "no such file or folder"),
        ("(file)", "the folder contains no *.yaml or *.yml files"),
    ]


# --- fuzzing: any document gives specs or errors --------------------------------------------------------

FRAGMENTS = [
    "checks:", "defaults:", "- ", "  ", "    ", "\n", ": ", ", ", "[", "]", "{", "}", "&a ", "*a", "<<: ", "? ",
    "!!python/object/apply:os.system ", "!!int ", "!!float ", "!!binary ", "!foo ", "'", '"', "#", "---", "...",
    "|", ">", "%YAML 1.1\n", "~", "same", "relu", "full", "2GB", "1e-6", ".inf", ".nan", "-1", "0", "1", "3",
    "1.5", "true", "x.py", "builtin", "\t", "\x00", "é",
] + [f"{key}: " for key in CHECK_KEYS]  # fmt: skip


def assert_well_formed(result: ConfigLoad) -> None:
    """The loader's promise: specs or errors, located, one line each, never an internal error."""
    assert isinstance(result, ConfigLoad)
    assert not (result.specs and result.errors)
    for error in result.errors:
        assert error.line >= 1 and error.column >= 1 and error.field and error.message and error.allowed
        assert "internal error" not in error.message, str(error)
        assert "\n" not in str(error)
    names = [spec.name for spec in result.specs]
    assert len(names) == len(set(names))
    for spec in result.specs:
        assert spec.shape.problems() == []
        json.dumps(spec.config)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(string.printable, max_size=3), max_size=40))
@example(["a: ", "&a ", "[", "*a", "]"])
@example(["<<: ", "&a ", "{", "<<: ", "*a", "}"])
@example(["checks:", "\n", "- ", "&a ", "{", "impl: ", "*a", "}"])
@example(["batch: ", "!!int ", "'x'"])
@example(["max_memory: ", "1" * 40, "GB"])
@example(["? ", "[", "]", ": ", "1"])
def test_fuzz_any_text_gives_specs_or_errors(parts: list[str]) -> None:
    assert_well_formed(load("".join(parts)))


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-3, 12)
    | st.integers()
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(["same", "relu", "tanh", "full", "float32", "nchw", "2GB", "0B", "builtin", "a.py", "os"])
)
VALUES = (
    SCALARS
    | st.lists(SCALARS, max_size=3)
    | st.lists(st.lists(SCALARS, max_size=2), max_size=2)
    | st.dictionaries(st.sampled_from(["module", "forward", "backward", "signature", "x"]), SCALARS, max_size=3)
)
KEYS = st.sampled_from([*CHECK_KEYS, "strides", "checks", "defaults", "", "1"])
CHECKS = st.dictionaries(KEYS, VALUES, max_size=8)


def small_valid_check() -> st.SearchStrategy[dict]:
    """Checks that are usually valid, so that expansion and geometry are exercised, not just rejection."""
    size = sweeps(st.integers(1, 6))
    return st.fixed_dictionaries(
        {key: size for key in ("batch", "in_height", "in_width", "in_depth", "out_depth", "filter_size")},
        optional={
            "stride": size,
            "padding": st.sampled_from([0, 1, 2, "same", [0, "same"]]),
            "activation": st.sampled_from([a.value for a in Activation]),
            "out_height": st.integers(1, 6),
            "seed": sweeps(st.integers(0, 3), max_size=2),
        },
    )


DOCUMENTS = (
    VALUES
    | CHECKS
    | small_valid_check()
    | st.fixed_dictionaries(
        {"checks": st.lists(CHECKS | small_valid_check() | SCALARS, max_size=3)},
        optional={"defaults": CHECKS | SCALARS},
    )
)


@settings(max_examples=300, deadline=None)
@given(DOCUMENTS, st.booleans())
@example({"checks": [{"stride": [1, [2]]}]}, False)
@example({"batch": float("nan")}, False)
@example({"max_memory": 10**400}, False)
@example({"eps": 10**400}, False)
@example({"name": "a\x85b"}, True)
def test_fuzz_any_values_give_specs_or_errors(document: object, flow: bool) -> None:
    text = yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True)
    result = load(text)
    assert_well_formed(result)
    if isinstance(document, dict) and "checks" not in document and result.ok:
        lists = [len(value) for value in document.values() if isinstance(value, list)]
        assert len(result.specs) == (1 if not lists else __import__("math").prod(lists))


def test_docs_reference_lists_exactly_the_accepted_keys_and_their_sweepability() -> None:
    text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \|.*\| (yes|no) \|$", text, flags=re.MULTILINE))
    assert rows == {key: "yes" if info.sweepable else "no" for key, info in CHECK_KEYS.items()}


def test_each_key_fills_the_field_of_its_name_and_shares_its_default() -> None:
    """The keys table alone drives building a spec: a key's value lands in the field of the same name."""
    fields = {
        # ConvShape stores its geometry normalized: its constructor's parameters are the keys' fields.
        Target.SHAPE: {
            name: SimpleNamespace(default=dataclasses.MISSING if p.default is p.empty else p.default)
            for name, p in inspect.signature(ConvShape).parameters.items()
        },
        Target.SPEC: {field.name: field for field in dataclasses.fields(CheckSpec)},
    }
    for key, info in CHECK_KEYS.items():
        if info.target is Target.NONE:
            continue
        field = fields[info.target][key]
        default = field.default.value if isinstance(field.default, Enum) else field.default
        if info.required:
            assert default is dataclasses.MISSING, key
        elif key == "impl":
            assert (info.default, default) == ("builtin", None)  # None is the built-in layer
        else:
            assert info.default == default, key


def test_every_kind_has_a_text_and_every_key_an_allowed_text_with_its_sweep_ending() -> None:
    for kind in Kind:
        assert any(info.kind is kind for info in CHECK_KEYS.values()), f"{kind} is used by no key"
    for info in CHECK_KEYS.values():
        assert info.value_text() and "sweep" not in info.value_text()
        assert info.allowed_text() == info.value_text() + (SWEEP_TEXT if info.sweepable else "")


@pytest.mark.parametrize(("in_height", "filter_size", "padding"), [(3, 4, 0), (3, 9, 2), (5, 8, 1)])
def test_the_config_and_the_checker_refuse_the_same_oversized_filters(
    in_height: int, filter_size: int, padding: int
) -> None:
    """One check (ConvShape.oversized_axes) behind two wordings: the loader's names the values it adds."""
    text = LAYER.replace("in_height: 5", f"in_height: {in_height}").replace(
        "filter_size: 3", f"filter_size: {filter_size}"
    )
    (error,) = load(text + f"padding: {padding}\n").errors
    padded = in_height + 2 * padding
    assert error.message == (
        f"filter_size {filter_size} is larger than the padded input height {padded} "
        f"(in_height {in_height} + 2·padding {padding})"
    )
    shape = ConvShape(2, in_height, 6, 3, 4, filter_size, padding=padding)
    assert shape.problems() == [
        f"filter_size {filter_size} is larger than the padded input height {padded} "
        "(in_height + 2·padding); the output would be empty"
    ]
