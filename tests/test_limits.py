"""Bounded, honest input handling: limits refused early, special paths named, YAML 1.1 surprises refused,
user text shown as plain text, meaningless tolerances warned about.

Each test is one reproducer of a report: a 50 MB config, 50 MB of comments, ``timeout: 1e308``, a 101-digit
stride, ``batch: 10**100``, a 50-million-character name, an error on line 100 shown as an emoji, a symlink loop
or a FIFO called "no such file", ``1:30`` read as 90, ``rtol: 1e300`` passing a buggy layer without a word.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from convcheck import activation as act
from convcheck import reference
from convcheck.cli import app
from convcheck.config import ConfigError, ConfigWarning, load_configs, load_file, load_text, tree
from convcheck.config.keys import CHECK_KEYS, MAX_CHECKS_PER_FILE, MAX_NAME_LENGTH, Kind
from convcheck.config.paths import MAX_CONFIG_BYTES
from convcheck.config.sanity import input_gradient_scale
from convcheck.data import make_data
from convcheck.exitcodes import ExitCode
from convcheck.spec import Activation, CheckSpec, ConvShape

LAYER = "batch: 2\nin_height: 5\nin_width: 6\nin_depth: 3\nout_depth: 4\nfilter_size: 3\n"
ENV = {"NO_COLOR": "1", "COLUMNS": "200", "GITHUB_ACTIONS": "false"}


def with_value(line: str) -> str:
    """LAYER with ``line`` (``key: value``) replacing the key's line, or added."""
    key = line.split(":")[0]
    return "".join(row for row in LAYER.splitlines(keepends=True) if not row.startswith(key + ":")) + line + "\n"


def errors_of(text: str) -> list[ConfigError]:
    return list(load_text(text, file="c.yaml").errors)


def one_error(text: str) -> ConfigError:
    errors = errors_of(text)
    assert len(errors) == 1, [str(error) for error in errors]
    return errors[0]


def never_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise AssertionError("the file was parsed")

    monkeypatch.setattr(tree, "read_tree", refuse)
    monkeypatch.setattr("convcheck.config.loader.read_tree", refuse)


# --- size: refused from the file's size, before a byte is parsed --------------------------------------------


@pytest.mark.parametrize("content", ["checks", "comments"])
def test_a_50_mb_config_is_refused_from_its_size_without_parsing(tmp_path, monkeypatch, content) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("w") as handle:
        if content == "comments":
            handle.write(("# " + "x" * 98 + "\n") * 500_000 + LAYER)  # 50 MB of comments and one valid check
        else:
            handle.write("checks:\n" + "  - {name: c, batch: 1, in_height: 4, in_width: 4}\n" * 1_000_000)
    assert path.stat().st_size > 45 * 2**20
    never_parsed(monkeypatch)
    (error,) = load_file(path).errors
    assert (
        error.field == "(file)"
        and "MiB" in error.message
        and f"at most {MAX_CONFIG_BYTES // 2**20} MiB" in error.message
    )


def test_a_file_at_the_limit_is_read_and_one_byte_more_is_not(tmp_path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(LAYER + "#" * (MAX_CONFIG_BYTES - len(LAYER) - 1) + "\n")
    assert path.stat().st_size == MAX_CONFIG_BYTES and load_file(path).ok
    path.write_text(LAYER + "#" * (MAX_CONFIG_BYTES - len(LAYER)) + "\n")
    assert "at most" in load_file(path).errors[0].message


# --- every number and name is bounded, and refused at validate time with its field --------------------------


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("timeout: 1e308", "timeout"),
        ("stride: 1" + "0" * 100, "stride"),
        ("seed: 1" + "0" * 100, "seed"),
        ("rtol: 1e300", "rtol"),
    ],
    ids=["timeout-1e308", "stride-101-digits", "seed-101-digits", "rtol-1e300"],
)
def test_numbers_that_overflow_at_run_time_are_refused_when_loading(line: str, field: str) -> None:
    error = one_error(LAYER + line + "\n")
    assert error.field == field and "must be at most" in error.message
    assert len(error.message) < 200  # a 101-digit number is described, not quoted


def test_batch_10_to_the_100_is_refused_by_validate_with_the_field(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(LAYER.replace("batch: 2", "batch: " + str(10**100)))
    result = CliRunner().invoke(app, ["validate", str(config)], env=ENV)
    assert result.exit_code == ExitCode.INVALID
    assert "batch: must be at most 1000000, got a 101-digit integer" in result.stderr
    assert "GiB" not in result.stdout + result.stderr


NUMBER_KEYS = [info for info in CHECK_KEYS.values() if info.kind in (Kind.INT, Kind.NUMBER, Kind.PADDING)]


@pytest.mark.parametrize("info", NUMBER_KEYS, ids=lambda info: info.name)
def test_every_number_key_has_a_maximum_and_refuses_what_is_above_it(info) -> None:
    assert info.maximum is not None
    above = int(info.maximum) + 1 if info.kind is not Kind.NUMBER else info.maximum * 2
    errors = errors_of(with_value(f"{info.name}: {above}"))
    assert [error.field for error in errors] == [info.name], [str(error) for error in errors]
    assert "must be at most" in errors[0].message and "≤" in errors[0].allowed


def test_max_memory_is_bounded_as_a_number_and_as_a_size() -> None:
    for value in ("max_memory: 10000000000000000000000", "max_memory: '999999TB'"):
        (error,) = errors_of(LAYER + value + "\n")
        assert error.field == "max_memory" and "at most" in error.message


def test_names_are_bounded_and_a_huge_one_is_refused_without_quoting_it() -> None:
    assert load_text(LAYER + f"name: {'n' * MAX_NAME_LENGTH}\n").ok
    error = one_error(LAYER + f"name: {'n' * 1_000_000}\n")
    assert error.field == "name" and f"at most {MAX_NAME_LENGTH}" in error.message and len(str(error)) < 300


def test_a_huge_sweep_is_refused_in_linear_time() -> None:
    """Distinct values are found with a set: a sweep of one value more than a file may expand to (the fewest that
    are refused) costs what parsing its 100,001 values costs, not 10¹⁰ compares."""
    error = one_error(LAYER + "seed: [" + ", ".join(map(str, range(MAX_CHECKS_PER_FILE + 1))) + "]\n")
    assert error.field == "seed" and "at most 100000" in error.message


# --- special paths are named for what they are ----------------------------------------------------------------


def file_problem(path: str | Path) -> str:
    (error,) = load_configs([path]).errors
    assert error.field == "(file)"
    return error.message


def test_special_paths_are_named_for_what_they_are(tmp_path: Path) -> None:
    (tmp_path / "loop.yaml").symlink_to("loop2.yaml")
    (tmp_path / "loop2.yaml").symlink_to("loop.yaml")
    (tmp_path / "dangling.yaml").symlink_to("gone.yaml")
    os.mkfifo(tmp_path / "fifo.yaml")
    assert "symlink loop" in file_problem(tmp_path / "loop.yaml")
    assert "symlink to a missing file (gone.yaml)" in file_problem(tmp_path / "dangling.yaml")
    assert "FIFO" in file_problem(tmp_path / "fifo.yaml")
    assert "standard input" in file_problem("-")
    assert "no such file or folder" in file_problem(tmp_path / "absent.yaml")
    if stat.S_ISCHR(os.stat("/dev/zero").st_mode):
        assert "character device" in file_problem("/dev/zero")


def test_load_file_never_reads_a_fifo_or_a_device_nor_blocks_on_one(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)  # nobody writes: a read would block forever
    assert "FIFO" in load_file(fifo).errors[0].message
    assert "character device" in load_file("/dev/zero").errors[0].message
    assert "is a folder" in load_file(tmp_path).errors[0].message


# --- YAML 1.1 surprises are refused, with the field -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "field", "words"),
    [
        ("in_height: 1:30", "in_height", "base-60"),
        ("timeout: 1:30", "timeout", "base-60"),
        ("in_width: 0755", "in_width", "octal"),
        ("activation: on", "activation", "boolean true"),
        ("activation: off", "activation", "boolean false"),
        ("name: yes", "name", "boolean true"),
        ("name: No", "name", "boolean false"),
    ],
)
def test_yaml_1_1_surprises_are_refused_with_the_field(value: str, field: str, words: str) -> None:
    error = one_error(with_value(value))
    assert error.field == field and words in error.message and "YAML 1.1" in error.message


def test_a_surprise_says_what_its_own_key_accepts() -> None:
    from convcheck.config.keys import CHECK_KEYS

    for value, key in (("stride: yes", "stride"), ("activation: on", "activation"), ("in_height: 1:30", "in_height")):
        assert one_error(with_value(value)).allowed == CHECK_KEYS[key].allowed_text()
    sweep = one_error(with_value("padding: [1, off]"))
    assert sweep.field == "padding[1]" and sweep.allowed == CHECK_KEYS["padding"].allowed_text()


def test_quoted_they_are_the_text_they_look_like() -> None:
    (spec,) = load_text(LAYER + "name: '1:30'\n").specs
    assert spec.name == "1:30"
    (spec,) = load_text(LAYER + 'name: "yes"\n').specs
    assert spec.name == "yes"
    assert load_text(LAYER + "name: x\nseed: 0\n").ok  # a lone zero is not octal


# --- user text is plain text ------------------------------------------------------------------------------------


def test_an_error_on_line_100_is_not_an_emoji_and_markup_is_shown_as_written(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("#\n" * 99 + "batch: '[bold]x[/bold] :smile:'\n" + LAYER.split("\n", 1)[1])
    result = CliRunner().invoke(app, ["validate", str(config)], env=ENV)
    assert result.exit_code == ExitCode.INVALID
    assert f"{config}:100:8: batch" in result.stderr and "💯" not in result.stderr
    assert "'[bold]x[/bold] :smile:'" in result.stderr and "😄" not in result.stderr


def test_control_characters_in_a_message_are_escaped() -> None:
    error = ConfigError("evil\x1b[31m.yaml", 1, 1, "(file)", "bad\x07", "ok")
    assert "\x1b" not in str(error) and "\\x1b[31m" in str(error) and "\\x07" in str(error)


# --- tolerances that make a check meaningless are warned about ----------------------------------------------------


def warnings_of(text: str) -> list[ConfigWarning]:
    load = load_text(text, file="c.yaml")
    assert load.ok, [str(error) for error in load.errors]
    return list(load.warnings)


def test_rtol_of_1_or_more_is_warned_about_at_its_value() -> None:
    (warning,) = warnings_of(LAYER + "rtol: [1e-6, 1000]\n")
    assert warning.field == "rtol[1]" and warning.line == 7 and "factor of 2" in warning.message
    assert warnings_of(LAYER + "rtol: 0.5\n") == [] and warnings_of(LAYER) == []


def test_a_tolerance_in_defaults_is_warned_about_once() -> None:
    checks = "".join(f"  - {{name: c{i}, {LAYER.strip().replace(chr(10), ', ')}}}\n" for i in range(3))
    (warning,) = warnings_of("defaults:\n  rtol: 2\nchecks:\n" + checks)
    assert warning.field == "defaults.rtol"


def test_atol_above_a_typical_input_gradient_entry_is_warned_about() -> None:
    spec = load_text(LAYER).specs[0]
    scale = input_gradient_scale(spec)
    (warning,) = warnings_of(LAYER + f"atol: {2 * scale}\n")
    assert warning.field == "atol" and "atol" in warning.message
    assert warnings_of(LAYER + f"atol: {scale / 2}\n") == []


def test_the_cli_prints_tolerance_warnings_and_still_runs(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(LAYER + "rtol: 5\n")
    result = CliRunner().invoke(app, ["validate", str(config)], env=ENV)
    assert result.exit_code == ExitCode.OK and "warning: rtol 5 is at least 1" in result.stderr


def input_gradient(spec: CheckSpec) -> np.ndarray:
    """dx by scattering each output's gradient back over its window: an independent transposed convolution."""
    data, shape = make_data(spec), spec.shape
    k, s, p = shape.filter_size, shape.stride, shape.padding
    z = reference.convolve(data.x, data.w, data.b, shape.window)
    derivative = act.derivative(spec.activation, z, act.apply(spec.activation, z.copy()))
    g = data.dout * (derivative if derivative is not None else 1.0)
    padded = np.zeros((shape.batch, shape.in_height + 2 * p, shape.in_width + 2 * p, shape.in_depth))
    for oh in range(g.shape[1]):
        for ow in range(g.shape[2]):
            padded[:, oh * s : oh * s + k, ow * s : ow * s + k, :] += np.einsum("no,ijco->nijc", g[:, oh, ow], data.w)
    return padded[:, p : p + shape.in_height, p : p + shape.in_width, :]


def test_the_warned_atol_lets_most_input_gradient_entries_be_off_by_a_factor_of_2() -> None:
    """The warning's claim: with atol at the estimate, |2g − g| = |g| ≤ atol holds for most entries g of dx."""
    rng = np.random.default_rng(7)
    for seed in range(60):
        k = int(rng.integers(1, 6))
        stride, padding = int(rng.integers(1, min(k, 3) + 1)), int(rng.integers(0, k))
        size = int(rng.integers(max(4, k - 2 * padding), 10))
        channels = rng.integers(1, 9, size=2)
        activation = list(Activation)[seed % len(Activation)]
        shape = ConvShape(4, size, size + 1, int(channels[0]), int(channels[1]), k, stride, padding)
        spec = CheckSpec(name="x", shape=shape, activation=activation, seed=seed)
        dx = input_gradient(spec)
        assert np.median(np.abs(dx)) <= input_gradient_scale(spec), spec
