"""The config's geometry keys: dims, per-axis filter_size/stride/dilation (``3x5``), per-axis and per-side padding,
``same``/``valid``, groups and bias. Each form builds the ConvShape written directly, sweeps mix forms, every
impossible combination is an error at the value's line naming the key, and the schema agrees with the loader."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from test_schema import schema_errors

from convcheck.config import ConfigLoad, load_text
from convcheck.spec import ConvShape

LAYER = "batch: 2\nin_height: 7\nin_width: 9\nin_depth: 8\nout_depth: 4\n"
LINE = "batch: 2\nin_width: 9\nin_depth: 4\nout_depth: 4\ndims: 1\n"
VOLUME = "dims: 3\nbatch: 1\nin_frames: 4\nin_height: 5\nin_width: 6\nin_depth: 2\nout_depth: 3\n"


def load(text: str) -> ConfigLoad:
    return load_text(text, file="test.yaml")


def shapes(text: str) -> list[ConvShape]:
    result = load(text)
    assert result.errors == (), [str(error) for error in result.errors]
    return [spec.shape for spec in result.specs]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            LAYER + "filter_size: 3x5\nstride: 2x1\ndilation: 2\npadding: same\ngroups: 4\nbias: false\n",
            ConvShape(2, 7, 9, 8, 4, (3, 5), (2, 1), "same", dilation=2, groups=4, bias=False),
        ),
        (LAYER + "filter_size: 3\npadding: 1x2\n", ConvShape(2, 7, 9, 8, 4, 3, 1, (1, 2))),
        (LAYER + "filter_size: 3\npadding: 0-1x2-3\n", ConvShape(2, 7, 9, 8, 4, 3, 1, ((0, 1), (2, 3)))),
        (LAYER + "filter_size: 3\npadding: 1x0-1\n", ConvShape(2, 7, 9, 8, 4, 3, 1, ((1, 1), (0, 1)))),
        (LAYER + "filter_size: 3\npadding: valid\n", ConvShape(2, 7, 9, 8, 4, 3, 1, "valid")),
        (LAYER + "filter_size: 2\ndilation: 1x3\n", ConvShape(2, 7, 9, 8, 4, 2, 1, 0, dilation=(1, 3))),
        (LINE + "filter_size: 3\ngroups: 4\npadding: 1-2\n", ConvShape.nd(2, (9,), 4, 4, 3, 1, ((1, 2),), 1, 4)),
        (
            VOLUME + "filter_size: 2x3x3\npadding: 0-1x1x1\n",
            ConvShape.nd(1, (4, 5, 6), 2, 3, (2, 3, 3), 1, ((0, 1), 1, 1)),
        ),
    ],
)
def test_each_form_builds_the_shape_written_directly(text: str, expected: ConvShape) -> None:
    assert shapes(text) == [expected]
    assert schema_errors(yaml.safe_load(text)) == []


def test_a_sweep_mixes_one_value_and_per_axis_values_and_names_them_as_written() -> None:
    result = load(LAYER + "filter_size: [3, 3x5]\npadding: [same, 0-1x2-2]\n")
    assert [spec.name for spec in result.specs] == [
        f"test[filter_size={k},padding={p}]" for k in ("3", "3x5") for p in ("same", "0-1x2-2")
    ]
    assert [spec.shape.kernel for spec in result.specs] == [(3, 3), (3, 3), (3, 5), (3, 5)]
    assert result.specs[3].config["padding"] == [[0, 1], [2, 2]] and result.specs[3].config["filter_size"] == [3, 5]


def test_the_seed_geometry_keeps_its_json() -> None:
    (spec,) = load(LAYER + "filter_size: 3\npadding: same\n").specs
    assert (spec.config["padding"], spec.config["filter_size"], spec.config["stride"]) == (1, 3, 1)
    assert spec.shape.is_basic


def test_same_gives_ceil_in_over_stride_outputs_for_any_filter() -> None:
    for shape in shapes(LAYER + "filter_size: [2, 4x3]\nstride: [1, 2, 3x2]\ndilation: [1, 2]\npadding: same\n"):
        assert shape.spatial_out == tuple(-(-n // s) for n, s in zip(shape.spatial_in, shape.strides, strict=True))


def test_a_one_d_layer_needs_no_height_and_a_three_d_one_reports_its_frames() -> None:
    (shape,) = shapes(LINE + "filter_size: 3\n")
    assert (shape.dims, shape.x_shape, shape.w_shape) == (1, (2, 9, 4), (3, 4, 4))
    (spec,) = load(VOLUME + "filter_size: 3\nout_frames: 2\n").specs
    assert spec.shape.out_shape == (1, 2, 3, 4, 3) and spec.config["out_frames"] == 2


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [
        (LAYER + "filter_size: 3\ngroups: 3\n", 7, "groups", "groups 3 does not divide in_depth 8"),
        (LAYER + "filter_size: 3x5x5\n", 6, "filter_size", "filter_size 3x5x5 gives 3 axes, a 2-D layer has 2"),
        (LAYER + "filter_size: 3\nstride: 2x1\ndims: 1\n", 2, "in_height", "a 1-D layer has no height"),
        (LINE + "filter_size: 3\nstride: 2x1\n", 7, "stride", "stride 2x1 gives 2 axes, a 1-D layer has 1 (width)"),
        (VOLUME.replace("in_frames: 4\n", "") + "filter_size: 3\n", 1, "in_frames", "missing required key"),
        (LAYER + "filter_size: 3\nin_frames: 2\n", 7, "in_frames", "a 2-D layer has no frames"),
        (LAYER.replace("in_height: 7\n", "") + "filter_size: 3\n", 1, "in_height", "missing required key"),
        (LAYER + "filter_size: 3\ndilation: 1x5\n", 6, "filter_size", "the filter along width spans 11 rows"),
        (LAYER + "filter_size: 3\npadding: 0-1x0\nout_height: 5\n", 8, "out_height", "= 6"),
        (LAYER + "filter_size: 3x\n", 6, "filter_size", "not one integer ≥ 1 per axis"),
        (LAYER + "filter_size: 3\npadding: 1-\n", 7, "padding", "unknown padding '1-'"),
        (LAYER + "filter_size: 3\ndims: 4\n", 7, "dims", "1, 2 or 3 spatial axes"),
        (LAYER + "filter_size: 3\nbias: 1\n", 7, "bias", "expected true or false"),
        (LAYER + "filter_size: [3, [3, 5]]\n", 6, "filter_size[1]", "sweeps cannot nest); one value per axis"),
    ],
)
def test_each_impossible_geometry_is_an_error_at_its_line_naming_the_key(
    text: str, line: int, field: str, message: str
) -> None:
    errors = load(text).errors
    assert errors, text
    assert (errors[0].line, errors[0].field) == (line, field), str(errors[0])
    assert message in errors[0].message and errors[0].allowed, str(errors[0])


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([1, 2, 3]),
    st.lists(st.integers(1, 4), min_size=3, max_size=3),
    st.lists(st.integers(0, 2), min_size=6, max_size=6),
    st.integers(1, 2),
    st.sampled_from([1, 2, 4]),
    st.booleans(),
)
def test_config_and_direct_shape_agree_on_every_geometry(
    dims: int, kernel: list[int], pads: list[int], dilation: int, groups: int, bias: bool
) -> None:
    """Any per-axis kernel and per-side padding written in the config is the shape built directly, or an error
    exactly when ConvShape.problems() refuses it."""
    k = kernel[:dims]
    pairs = tuple((pads[2 * i], pads[2 * i + 1]) for i in range(dims))
    sizes = {"frames": 3, "height": 4, "width": 5}
    names = ("frames", "height", "width")[3 - dims :]
    text = f"dims: {dims}\nbatch: 1\nin_depth: 4\nout_depth: 4\ngroups: {groups}\nbias: {str(bias).lower()}\n"
    text += "".join(f"in_{axis}: {sizes[axis]}\n" for axis in names)
    text += "filter_size: " + ("x".join(map(str, k)) if dims > 1 else str(k[0])) + "\n"
    text += f"dilation: {dilation}\npadding: " + "x".join(f"{b}-{a}" for b, a in pairs) + "\n"
    direct = ConvShape.nd(1, tuple(sizes[axis] for axis in names), 4, 4, tuple(k), 1, pairs, dilation, groups, bias)
    result = load(text)
    if direct.problems():
        assert result.errors and not result.specs
    else:
        assert [spec.shape for spec in result.specs] == [direct], [str(e) for e in result.errors]


def test_a_per_axis_value_yaml_reads_as_hexadecimal_is_refused_and_works_quoted() -> None:
    (error,) = load(LAYER + "filter_size: 3\npadding: 0x1\n").errors
    assert (error.line, error.field) == (7, "padding") and "hexadecimal number 1" in error.message
    assert shapes(LAYER + "filter_size: 3\npadding: '0x1'\n")[0].pads == ((0, 0), (1, 1))
