"""torch and JAX layers: configs, the adapters' boundary, correct layers pass and planted bugs are caught.

The layers (tests/fixtures/frameworks/) compute relu(conv(x, w) + b) with hand-written backwards: a
``torch.autograd.Function`` (also called through a plain function and an ``nn.Module``) and a ``jax.custom_vjp``
function. Their gradients come from ``torch.autograd.grad`` and ``jax.vjp``; convcheck's finite differences, the
reference forward and the contract judge them. Tests skip, with the install command, when a framework is absent;
the CUDA test skips when torch sees no GPU.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from test_checker import integer_data
from typer.testing import CliRunner

from convcheck.checker import run_check
from convcheck.cli import app
from convcheck.config import load_text
from convcheck.exitcodes import ExitCode
from convcheck.results import CheckResult, FindingKind, Status
from convcheck.spec import CheckSpec, ConvShape, DType, Framework, ImplRef, Layout
from convcheck.user.errors import ImplementationError
from convcheck.user.frameworks import FrameworkCall
from convcheck.user.frameworks.common import keywords_for
from convcheck.user.loader import load_framework_impl

FIXTURES = Path(__file__).parent / "fixtures" / "frameworks"
TORCH_FILE, JAX_FILE = str(FIXTURES / "torch_layers.py"), str(FIXTURES / "jax_layers.py")

needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="torch is not installed: pip install 'convcheck[torch]'"
)
needs_jax = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="JAX is not installed: pip install 'convcheck[jax]'"
)

# Geometries that vary every hyperparameter main's config space has: kernel 1/2/3/5, stride 1-3, padding 0-2,
# H ≠ W, batch and channels 1-3, and an H + 2p − k that stride does not divide (the fold's cropped tail).
SHAPES = [
    ConvShape(2, 7, 6, 3, 4, 3, 1, 1),
    ConvShape(1, 5, 8, 2, 3, 3, 2, 0),
    ConvShape(3, 6, 5, 1, 2, 1, 1, 0),
    ConvShape(2, 9, 7, 2, 2, 5, 3, 2),
    ConvShape(2, 6, 6, 3, 1, 2, 2, 1),
    ConvShape(1, 4, 6, 2, 3, 3, 1, 2),
]


def torch_ref(name: str, kind: str = "function") -> ImplRef:
    names = {"class_name": name} if kind == "class" else {"function": name}
    return ImplRef(module=TORCH_FILE, framework=Framework.TORCH, **names)


def jax_ref(name: str) -> ImplRef:
    return ImplRef(module=JAX_FILE, framework=Framework.JAX, function=name)


def spec_of(ref: ImplRef, shape: ConvShape = SHAPES[0], dtype: DType = DType.FLOAT64, **changes: object) -> CheckSpec:
    layout = ref.framework.default_layout if ref.framework is not None else Layout.NHWC
    spec = CheckSpec(name="t", shape=shape, dtype=dtype, impl=ref, layout=layout)
    return spec.with_overrides(**changes)


def failing(result: CheckResult) -> set[str]:
    return {g.name for g in result.gradients if not g.passed}


def kinds(result: CheckResult) -> set[FindingKind]:
    return {finding.kind for finding in result.contract}


def describe(result: CheckResult) -> str:
    return f"{result.status}: {result.error} {failing(result)} {[str(f) for f in result.contract]}"


# -- config ------------------------------------------------------------------------------------------------------

CONFIG = "batch: 1\nin_height: 4\nin_width: 4\nin_depth: 1\nout_depth: 1\nfilter_size: 3\n"


def one_spec(text: str) -> CheckSpec:
    loaded = load_text(CONFIG + text, base_dir=FIXTURES)
    assert not loaded.errors, [str(e) for e in loaded.errors]
    (spec,) = loaded.specs
    return spec


def errors_of(text: str) -> list[str]:
    return [str(error) for error in load_text(CONFIG + text, base_dir=FIXTURES).errors]


@needs_torch
def test_the_framework_forms_of_impl_name_one_object_and_default_to_the_frameworks_layout() -> None:
    spec = one_spec("impl: {framework: torch, function: torch_layers.py:ConvReLU}\n")
    assert spec.impl is not None and (spec.impl.framework, spec.impl.function) == (Framework.TORCH, "ConvReLU")
    assert spec.impl.module == "torch_layers.py" and spec.layout is Layout.NCHW and spec.device is None
    assert spec.config["layout"] == "nchw"
    spec = one_spec("impl: {framework: torch, module: torch_layers.py, class: Conv}\nlayout: nhwc\ndevice: cpu\n")
    assert spec.impl is not None and (spec.impl.class_name, spec.impl.function) == ("Conv", None)
    assert (spec.layout, spec.device) == (Layout.NHWC, "cpu")  # layout: overrides the framework's
    assert spec.config["impl"] == {"framework": "torch", "module": "torch_layers.py", "class": "Conv"}


@needs_jax
def test_a_jax_layer_is_channels_last_by_default() -> None:
    spec = one_spec("impl: {framework: jax, function: jax_layers.py:conv_relu}\n")
    assert spec.impl is not None and spec.impl.framework is Framework.JAX and spec.layout is Layout.NHWC


@needs_torch
@pytest.mark.parametrize(
    ("impl", "expected"),
    [
        ("{framework: torch, function: torch_layers.py:ConvReLU, class: Conv}", "not both"),
        ("{framework: torch, module: torch_layers.py}", "give one of function or class"),
        ("{function: torch_layers.py:ConvReLU}", "need a framework"),
        ("{framework: tensorflow, function: torch_layers.py:ConvReLU}", "unknown framework"),
        ("{framework: torch, function: torch_layers.py:ConvReLU, forward: f}", "forward is for numpy layers"),
        ("{framework: torch, function: nowhere.py:ConvReLU}", "no file 'nowhere.py'"),
        ("{framework: torch, function: ConvReLU}", "names no module"),
        ("{framework: torch, module: torch_layers.py, function: torch_layers.py:ConvReLU}", "module: is given too"),
        ("{framework: jax, module: jax_layers.py, class: Conv}", "class is for torch.nn.Module"),
    ],
)
def test_a_wrong_framework_impl_is_a_config_error_naming_the_field(impl: str, expected: str) -> None:
    errors = errors_of(f"impl: {impl}\n")
    assert any(expected in error and ":7:" in error for error in errors), errors


def test_device_is_refused_for_numpy_layers_and_must_look_like_a_device() -> None:
    assert any("device applies to torch and jax layers only" in e for e in errors_of("device: cuda\n"))
    assert any("not a device" in e for e in errors_of("device: gpu0\n"))


def test_a_config_that_needs_a_missing_framework_is_refused_with_the_install_command(monkeypatch) -> None:
    from convcheck.config import frameworks

    monkeypatch.setattr(frameworks, "missing", lambda framework: (framework.value,))
    path = FIXTURES / "needs_torch.yaml"
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == ExitCode.INVALID
    assert "pip install 'convcheck[torch]'" in result.output and "needs_torch.yaml:2" in result.output


# -- the boundary ------------------------------------------------------------------------------------------------


@needs_torch
@pytest.mark.parametrize("dtype", list(DType))
def test_torch_gets_the_arrays_without_a_copy_in_the_checks_dtype(dtype: DType) -> None:

    shape = SHAPES[0]
    impl = load_framework_impl(spec_of(torch_ref("Probe"), shape, dtype))
    t = np.dtype(dtype.value)
    x = np.ones((shape.batch, shape.in_depth, shape.in_height, shape.in_width), t)
    w = np.ones((shape.out_depth, shape.in_depth, 3, 3), t)
    out, _ = impl.forward(x, w, np.zeros(shape.out_depth, t), shape.stride, shape.padding)
    seen = impl.module.SEEN[-1]
    assert seen[0] == x.ctypes.data and str(seen[1]) == f"torch.{dtype.value}" and seen[2] == "cpu"
    assert out.dtype == t


def test_a_needed_hyperparameter_the_layer_cannot_take_is_an_error_never_dropped() -> None:
    def conv(x, w, b, stride, padding):  # takes no dilation
        return x

    def dilated(x, w, b, stride, padding, dilation=1, groups=1):
        return x

    call = FrameworkCall(1, 0, {"dilation": 2, "groups": 1}, {"dilation": 1, "groups": 1})
    with pytest.raises(ImplementationError, match="takes no dilation parameter, but this check needs dilation=2"):
        keywords_for(conv, call, "layers.py:conv")
    assert keywords_for(dilated, call, "layers.py:dilated") == {"dilation": 2, "groups": 1}
    default = FrameworkCall(1, 0, {"dilation": 1, "groups": 1}, {"dilation": 1, "groups": 1})
    assert keywords_for(conv, default, "layers.py:conv") == {}


# -- correct layers pass -----------------------------------------------------------------------------------------


@needs_torch
@pytest.mark.parametrize("dtype", list(DType))
@pytest.mark.parametrize(
    "ref", [torch_ref("ConvReLU"), torch_ref("conv_relu"), torch_ref("Conv", "class")], ids=["Function", "fn", "Module"]
)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.describe())
def test_correct_torch_layers_pass(shape: ConvShape, ref: ImplRef, dtype: DType) -> None:
    result = run_check(spec_of(ref, shape, dtype))
    assert result.status is Status.PASS, describe(result)
    assert all(g.checked == g.total for g in result.gradients)  # every entry


@needs_torch
@pytest.mark.parametrize("dtype", list(DType))
@pytest.mark.parametrize("shape", SHAPES[:4], ids=lambda s: s.describe())
def test_a_correct_torch_layer_passes_at_exact_kinks(shape: ConvShape, dtype: DType) -> None:
    spec = spec_of(torch_ref("ConvReLU"), shape, dtype)
    result = run_check(spec, data=integer_data(shape, 1, dtype))
    assert result.status is Status.PASS, describe(result)


@needs_torch
def test_kinks_are_reached_and_counted_for_a_torch_layer() -> None:
    result = run_check(spec_of(torch_ref("ConvReLU")), data=integer_data(SHAPES[0], 1, DType.FLOAT64))
    assert result.status is Status.PASS and any(g.kinks > 0 for g in result.gradients)


@needs_jax
@pytest.mark.parametrize("dtype", list(DType))
@pytest.mark.parametrize("shape", [*SHAPES[:3], SHAPES[4]], ids=lambda s: s.describe())
def test_a_correct_jax_layer_passes_also_at_exact_kinks(shape: ConvShape, dtype: DType) -> None:
    spec = spec_of(jax_ref("conv_relu"), shape, dtype)
    result = run_check(spec)
    assert result.status is Status.PASS, describe(result)
    result = run_check(spec, data=integer_data(shape, 2, dtype))
    assert result.status is Status.PASS, describe(result)


@needs_torch
def test_a_bias_gradient_torch_reduces_is_judged_as_training_gets_it() -> None:
    result = run_check(spec_of(torch_ref("DbPerExample")))  # (N, C_out): torch sums it over N, as in training
    assert result.status is Status.PASS, describe(result)


# -- planted bugs are caught -------------------------------------------------------------------------------------

# (name, kind, dtype, status, failing gradients (None: not asserted), a contract finding kind or error text)
TORCH_BUGS = [
    ("BugNoMask", "function", DType.FLOAT64, Status.FAIL, {"input", "weights", "bias"}, None),
    ("BugModuleNoMask", "class", DType.FLOAT64, Status.FAIL, {"input", "weights", "bias"}, None),
    ("BugDwOrder", "function", DType.FLOAT64, Status.FAIL, {"weights"}, None),
    ("BugDbFirstItem", "function", DType.FLOAT64, Status.FAIL, {"bias"}, None),
    ("BugFloat32", "function", DType.FLOAT64, Status.FAIL, None, None),
    ("BugDbKeepdims", "function", DType.FLOAT64, Status.ERROR, None, "got [1, 4, 1] but expected shape compatible"),
    # dout overwritten in place cannot change this check's gradients: a warning (--strict fails it)
    ("BugMaskInPlace", "function", DType.FLOAT64, Status.PASS, None, FindingKind.MODIFIED_ARGUMENT),
    ("BugAccumulates", "function", DType.FLOAT64, Status.FAIL, None, FindingKind.REPEAT_ACCUMULATES),
    ("BugNaN", "function", DType.FLOAT64, Status.FAIL, None, FindingKind.NOT_FINITE),
    ("BugInputInPlace", "function", DType.FLOAT64, Status.FAIL, None, FindingKind.MODIFIED_ARGUMENT),
    ("BugFloat64Out", "function", DType.FLOAT32, Status.FAIL, None, FindingKind.DTYPE),
    ("BugDetached", "class", DType.FLOAT64, Status.ERROR, None, "does not require grad"),
    ("not_a_layer", "function", DType.FLOAT64, Status.ERROR, None, "is a int, not a function"),
    ("Conv", "function", DType.FLOAT64, Status.ERROR, None, "is an nn.Module: name it with class: Conv"),
    ("ConvReLU", "class", DType.FLOAT64, Status.ERROR, None, "is not a torch.nn.Module subclass"),
    ("Missing", "function", DType.FLOAT64, Status.ERROR, None, "has no 'Missing' (named as the function)"),
]


def assert_caught(result: CheckResult, status: Status, gradients: set[str] | None, evidence: object) -> None:
    assert result.status is status, describe(result)
    if gradients is not None:
        assert failing(result) == gradients, describe(result)
    if isinstance(evidence, FindingKind):
        assert evidence in kinds(result), describe(result)
    elif isinstance(evidence, str):
        assert result.error is not None and evidence in result.error, describe(result)


@needs_torch
@pytest.mark.parametrize(("name", "kind", "dtype", "status", "gradients", "evidence"), TORCH_BUGS, ids=lambda v: v)
def test_planted_torch_bugs_are_caught(
    name: str, kind: str, dtype: DType, status: Status, gradients: set[str] | None, evidence: object
) -> None:
    assert_caught(run_check(spec_of(torch_ref(name, kind), SHAPES[0], dtype)), status, gradients, evidence)


@needs_torch
def test_the_float32_backward_is_caught_also_in_float64_at_every_geometry() -> None:
    for shape in SHAPES:
        result = run_check(spec_of(torch_ref("BugFloat32"), shape))
        assert result.status is Status.FAIL, (shape, describe(result))


JAX_BUGS = [
    ("bug_no_mask", Status.FAIL, {"input", "weights", "bias"}, None),
    ("bug_dw_flipped", Status.FAIL, {"weights"}, None),
    ("bug_float32", Status.FAIL, None, None),
    ("bug_db_per_example", Status.ERROR, None, "float64[2,4] corresponding to an input of type float64[4]"),
]


@needs_jax
@pytest.mark.parametrize(("name", "status", "gradients", "evidence"), JAX_BUGS, ids=lambda v: v)
def test_planted_jax_bugs_are_caught(name: str, status: Status, gradients: set[str] | None, evidence: object) -> None:
    assert_caught(run_check(spec_of(jax_ref(name))), status, gradients, evidence)


# -- devices -----------------------------------------------------------------------------------------------------


@needs_torch
def test_a_cuda_device_on_a_machine_without_one_is_an_error_row_that_says_so() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the CUDA path runs in test_a_torch_layer_passes_on_cuda")
    result = run_check(spec_of(torch_ref("ConvReLU"), device="cuda"))
    assert result.status is Status.ERROR and "torch.cuda.is_available() is False" in (result.error or "")


@needs_torch
@pytest.mark.parametrize("dtype", list(DType))
def test_a_torch_layer_passes_on_cuda(dtype: DType) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here (torch.cuda.is_available() is False); docs/frameworks.md says how to run it")
    result = run_check(spec_of(torch_ref("ConvReLU"), dtype=dtype, device="cuda"))
    assert result.status is Status.PASS, describe(result)
    result = run_check(spec_of(torch_ref("BugNoMask"), dtype=dtype, device="cuda"))
    assert result.status is Status.FAIL, describe(result)


@needs_jax
def test_an_explicit_jax_backend_it_lacks_is_an_error_row() -> None:
    import jax

    if "gpu" in {d.platform for d in jax.devices()}:
        pytest.skip("this machine has a JAX GPU backend")
    result = run_check(spec_of(jax_ref("conv_relu"), device="gpu"))
    assert result.status is Status.ERROR and "JAX has no 'gpu' backend" in (result.error or "")
    assert run_check(spec_of(jax_ref("conv_relu"), device="cpu:0")).status is Status.PASS


# -- the documented examples ---------------------------------------------------------------------------------------

EXAMPLES = Path(__file__).parent.parent / "examples" / "frameworks"


@needs_torch
@needs_jax
def test_the_framework_examples_pass_as_documented() -> None:
    from convcheck.batch.local import run_batch
    from convcheck.config import load_configs

    load = load_configs([EXAMPLES])
    assert load.ok, load.errors
    outcome = run_batch(load.specs)
    assert len(outcome.results) == 6 and all(r.passed for r in outcome.results), [describe(r) for r in outcome.results]
    assert {r.spec.layout for r in outcome.results if r.name.startswith("torch")} == {Layout.NCHW}


def test_the_schema_accepts_the_framework_forms_and_refuses_the_mixed_ones() -> None:
    import jsonschema
    import yaml

    from convcheck.config.schema import config_schema

    schema = config_schema()
    for path in sorted(EXAMPLES.glob("*.yaml")):
        jsonschema.validate(yaml.safe_load(path.read_text(encoding="utf-8")), schema)
    base = yaml.safe_load(CONFIG)
    jsonschema.validate({**base, "device": "cuda:1", "impl": {"framework": "jax", "function": "l.py:f"}}, schema)
    for impl in ({"framework": "torch"}, {"framework": "torch", "function": "l.py:F", "forward": "f"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**base, "impl": impl}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**base, "device": "gpu0"}, schema)
