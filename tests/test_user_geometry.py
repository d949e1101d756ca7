"""User layers over the whole geometry: what forward is called with (each value in its simplest form, dilation and
groups as keywords, b=None without a bias), the channels-first and channels-last layouts for 1-3 axes, declared
bias shapes, and the contract failures a wrong db, or a missing keyword, is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convcheck.checker import run_check
from convcheck.config import load_file, load_text
from convcheck.results import Status
from convcheck.spec import CheckSpec, DType, Method
from convcheck.user.errors import ImplementationError
from convcheck.user.loader import load_layer

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


def spec_of(text: str, tmp_path: Path, module: str, name: str = "layer.py") -> CheckSpec:
    (tmp_path / name).write_text(module, encoding="utf-8")
    result = load_text(f"impl: {name}\nactivation: none\n" + text, file=str(tmp_path / "c.yaml"), base_dir=tmp_path)
    assert not result.errors, [str(e) for e in result.errors]
    (spec,) = result.specs
    return spec


def example(name: str) -> str:
    return (ROOT / "examples" / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("config", ["torch_style", "depthwise1d", "conv3d"])
@pytest.mark.parametrize("dtype", [DType.FLOAT64, DType.FLOAT32])
def test_the_shipped_geometry_examples_pass(config: str, dtype: DType) -> None:
    for spec in load_file(CONFIGS / f"{config}.yaml").specs:
        spec = spec.with_overrides(dtype=dtype)
        result = run_check(spec, layer=load_layer(spec))
        assert result.status is Status.PASS, (result.error, result.contract)


RECORDING = """
import numpy as np
SEEN = []
def forward(x, w, b, stride, padding, dilation=1, groups=1):
    SEEN.append((x.shape, w.shape, b, stride, padding, dilation, groups))
    raise RuntimeError("recorded")
def backward(dout, cache):
    raise RuntimeError("unused")
"""


def test_forward_gets_each_value_in_its_simplest_form(tmp_path: Path) -> None:
    text = (
        "batch: 1\nin_height: 7\nin_width: 9\nin_depth: 8\nout_depth: 4\nlayout: nchw\n"
        "filter_size: 3x5\nstride: 2x1\ndilation: 2\npadding: same\ngroups: 4\nbias: false\n"
    )
    spec = spec_of(text, tmp_path, RECORDING)
    layer = load_layer(spec)
    x, w = np.zeros(spec.shape.x_shape), np.zeros(spec.shape.w_shape)
    with pytest.raises(Exception, match="recorded"):
        layer.forward(x, w, np.zeros((0,)))
    module = layer.impl.module  # type: ignore[attr-defined]
    ((x_shape, w_shape, b, stride, padding, dilation, groups),) = module.SEEN
    assert (x_shape, w_shape, b) == ((1, 8, 7, 9), (4, 2, 3, 5), None)
    # same: 4 = ceil(7/2) rows need (4 − 1)·2 + 2·(3 − 1) + 1 − 7 = 4 padding rows, 2 on each side; 9 columns
    # need 8, 4 on each side: symmetric on each axis, so one number per axis.
    assert spec.shape.pads == ((2, 2), (4, 4))
    assert (stride, padding, dilation, groups) == ((2, 1), (2, 4), 2, 4)


@pytest.mark.parametrize(
    ("padding", "expected"), [("1", 1), ("1x2", (1, 2)), ("0-1x2-2", ((0, 1), (2, 2))), ("valid", 0)]
)
def test_padding_is_an_int_a_tuple_per_axis_or_pairs(tmp_path: Path, padding: str, expected: object) -> None:
    text = f"batch: 1\nin_height: 6\nin_width: 6\nin_depth: 1\nout_depth: 1\nfilter_size: 3\npadding: {padding}\n"
    spec = spec_of(text, tmp_path, RECORDING, name=f"rec_{abs(hash(padding))}.py")
    layer = load_layer(spec)
    with pytest.raises(Exception, match="recorded"):
        layer.forward(np.zeros(spec.shape.x_shape), np.zeros(spec.shape.w_shape), np.zeros(1))
    module = layer.impl.module  # type: ignore[attr-defined]
    assert module.SEEN[-1][4] == expected and module.SEEN[-1][3] == 1


NO_KEYWORDS = """
def forward(x, w, b, stride, padding):
    raise RuntimeError("never called")
def backward(dout, cache):
    raise RuntimeError("never called")
"""


@pytest.mark.parametrize(("extra", "word"), [("dilation: 2\n", "dilation=2"), ("groups: 2\n", "groups=2")])
def test_a_check_needing_a_keyword_the_forward_lacks_is_refused_saying_so(
    tmp_path: Path, extra: str, word: str
) -> None:
    text = "batch: 1\nin_height: 6\nin_width: 6\nin_depth: 2\nout_depth: 2\nfilter_size: 2\n" + extra
    spec = spec_of(text, tmp_path, NO_KEYWORDS)
    with pytest.raises(ImplementationError, match=f"needs {word}.*takes no"):
        load_layer(spec)


@pytest.mark.parametrize(("extra", "word"), [("dilation: 2\n", "dilation=2"), ("groups: 2\n", "groups=2")])
def test_the_isolated_run_and_validate_refuse_it_alike(tmp_path: Path, extra: str, word: str) -> None:
    from convcheck.isolation.check import isolated_check
    from convcheck.user.static import keyword_problems

    text = "batch: 1\nin_height: 6\nin_width: 6\nin_depth: 2\nout_depth: 2\nfilter_size: 2\n" + extra
    spec = spec_of(text, tmp_path, NO_KEYWORDS)
    assert spec.impl is not None
    result = isolated_check(spec)  # the forward would raise if it were called: it never is
    assert result.status is Status.ERROR and f"needs {word}, but forward(x, w, b, stride, padding)" in str(result.error)
    (problem,) = keyword_problems(spec.impl, spec.shape.window)
    assert problem.line == 2 and f"needs {word}, but forward(x, w, b, stride, padding)" in problem.message
    plain = spec_of(text.replace(extra, ""), tmp_path, NO_KEYWORDS)
    assert plain.impl is not None and keyword_problems(plain.impl, plain.shape.window) == []


def test_without_keywords_a_seed_geometry_still_runs(tmp_path: Path) -> None:
    text = "batch: 1\nin_height: 6\nin_width: 6\nin_depth: 2\nout_depth: 2\nfilter_size: 2\n"
    load_layer(spec_of(text, tmp_path, NO_KEYWORDS))  # nothing needed: no error


def _run(spec: CheckSpec):  # type: ignore[no-untyped-def]
    return run_check(spec, layer=load_layer(spec))


def test_db_of_a_bias_free_layer_must_be_none(tmp_path: Path) -> None:
    module = example("torch_style.py").replace(
        "db = None if b is None else dout.sum(axis=(0, *range(2, dout.ndim)))",
        "db = dout.sum(axis=(0, *range(2, dout.ndim)))",
    )
    text = "batch: 1\nin_height: 5\nin_width: 5\nin_depth: 2\nout_depth: 2\nfilter_size: 3\nlayout: nchw\nbias: false\n"
    result = _run(spec_of(text, tmp_path, module))
    assert result.status is not Status.PASS
    assert any("db must be None" in str(f) for f in result.contract) or "db must be None" in (result.error or "")
    good = spec_of(text, tmp_path, example("torch_style.py"), name="good.py")
    assert _run(good).status is Status.PASS


@pytest.mark.parametrize("shape", ["column", "row"])
def test_a_declared_bias_shape_passes_and_a_flat_db_is_a_contract_failure(tmp_path: Path, shape: str) -> None:
    module = example("torch_style.py").replace(
        "out += b.reshape(1, c_out, *([1] * dims))", "out += b.reshape(1, c_out, *([1] * dims))  # any 2-D bias"
    )
    keep = "db.reshape(b.shape)"
    good = module.replace("return dx, dwg.reshape(w.shape), db", f"return dx, dwg.reshape(w.shape), {keep}")
    text = "batch: 1\nin_height: 5\nin_width: 5\nin_depth: 2\nout_depth: 3\nfilter_size: 3\nlayout: nchw\n"
    text += f"bias_shape: {shape}\n"
    assert _run(spec_of(text, tmp_path, good, name=f"good_{shape}.py")).status is Status.PASS
    result = _run(spec_of(text, tmp_path, module, name=f"flat_{shape}.py"))
    assert result.status is not Status.PASS
    assert "bias_shape" in (result.error or "") + " ".join(str(f) for f in result.contract)


def test_cs231n_conv_param_carries_dilation_and_groups(tmp_path: Path) -> None:
    module = """
SEEN = []
def forward(x, w, b, conv_param):
    SEEN.append(dict(conv_param))
    raise RuntimeError("recorded")
def backward(dout, cache):
    raise RuntimeError("unused")
"""
    (tmp_path / "cs.py").write_text(module, encoding="utf-8")
    text = (
        "impl: {module: cs.py, signature: cs231n}\nbatch: 1\nin_height: 7\nin_width: 7\nin_depth: 4\n"
        "out_depth: 2\nfilter_size: 3\nstride: 2x1\ndilation: 2\ngroups: 2\npadding: 1\n"
    )
    (spec,) = load_text(text, file=str(tmp_path / "c.yaml"), base_dir=tmp_path).specs
    layer = load_layer(spec)
    with pytest.raises(Exception, match="recorded"):
        layer.forward(np.zeros(spec.shape.x_shape), np.zeros(spec.shape.w_shape), np.zeros(2))
    module_seen = layer.impl.module.SEEN  # type: ignore[attr-defined]
    assert module_seen == [{"stride": (2, 1), "pad": 1, "dilation": 2, "groups": 2}]


def test_tables_and_json_show_every_geometry_in_the_layout() -> None:
    from convcheck.render.json import check_json
    from convcheck.render.table import layer_cell, output_cell
    from convcheck.spec import ConvShape, Layout

    shape = ConvShape.nd(2, (5, 6, 7), 4, 2, (2, 3, 1), (1, 2, 1), ((0, 1), 1, 0), 1, 2, bias=False)
    spec = CheckSpec(name="g", shape=shape, layout=Layout.NCHW)
    assert layer_cell(spec).startswith("nchw 2×4×5×6×7 → 2, ") and "no bias" in layer_cell(spec)
    assert output_cell(spec) == "×".join(map(str, (2, 2, *shape.spatial_out)))
    config = check_json(run_check(spec.with_overrides(method=Method.FULL)))["config"]
    assert config["filter_size"] == [2, 3, 1] and config["padding"] == [[0, 1], [1, 1], [0, 0]]
    assert (config["dims"], config["groups"], config["bias"]) == (3, 2, False)
