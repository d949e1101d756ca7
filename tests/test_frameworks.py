"""torch and JAX layers: configs, the adapters' boundary, correct layers pass and planted bugs are caught.

The layers (tests/fixtures/frameworks/) compute relu(conv(x, w) + b) with hand-written backwards: a
``torch.autograd.Function`` (also called through a plain function and an ``nn.Module``) and a ``jax.custom_vjp``
function. Their gradients come from ``torch.autograd.grad`` and ``jax.vjp``; convcheck's finite differences, the
reference forward and the contract judge them. Tests skip, with the install command, when a framework is absent;
the CUDA test skips when torch sees no GPU.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_checker import integer_data

from convcheck.checker import default_max_memory, run_check
from convcheck.config import load_text
from convcheck.data import CheckData
from convcheck.exitcodes import ExitCode
from convcheck.isolation.remote import remote_layer
from convcheck.results import CheckResult, FindingKind, Status
from convcheck.spec import CheckSpec, ConvShape, DType, Framework, ImplRef, Layout
from convcheck.user.errors import ImplementationError
from convcheck.user.frameworks import FrameworkCall
from convcheck.user.frameworks.common import keywords_for

FIXTURES = Path(__file__).parent / "fixtures" / "frameworks"
TORCH_FILE, JAX_FILE = str(FIXTURES / "torch_layers.py"), str(FIXTURES / "jax_layers.py")
ROOT = Path(__file__).parent.parent

needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="torch is not installed: pip install 'convcheck[torch]'"
)
needs_jax = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="JAX is not installed: pip install 'convcheck[jax]'"
)

# The hyperparameter space of torch.nn.Conv1d/2d/3d, each geometry varying several keys at once: 1-3 axes,
# per-axis kernel, stride and dilation, per-side and same padding, groups (depthwise too), no bias, H ≠ W, a
# stride that leaves rows in no window, and an H + pads − span that the stride does not divide.
SHAPES = [
    ConvShape(2, 7, 6, 3, 4, 3, 1, 1),
    ConvShape(2, 1, 11, 2, 3, 5, 2, ((1, 2),), dilation=2, dims=1),
    ConvShape(1, 5, 6, 4, 2, (2, 3, 1), (1, 2, 1), 1, groups=2, dims=3, in_frames=3),
    ConvShape(1, 6, 9, 2, 3, (3, 5), (2, 1), "same", dilation=(1, 2), bias=False),
    ConvShape(2, 8, 7, 3, 6, 3, 1, "valid", dilation=2, groups=3),
    ConvShape(1, 9, 8, 2, 2, 2, 3, ((0, 1), (2, 0))),
]
IDS = [f"{len(s.spatial_in)}d-{i}" for i, s in enumerate(SHAPES)]


def torch_ref(name: str, kind: str = "function", device: str | None = None) -> ImplRef:
    names = {"class_name": name} if kind == "class" else {"function": name}
    return ImplRef(module=TORCH_FILE, framework=Framework.TORCH, device=device, **names)


def jax_ref(name: str, device: str | None = None) -> ImplRef:
    return ImplRef(module=JAX_FILE, framework=Framework.JAX, function=name, device=device)


def spec_of(ref: ImplRef, shape: ConvShape = SHAPES[0], dtype: DType = DType.FLOAT64, **changes: object) -> CheckSpec:
    layout = ref.framework.default_layout if ref.framework is not None else Layout.NHWC
    spec = CheckSpec(name="t", shape=shape, dtype=dtype, impl=ref, layout=layout, timeout=120.0)
    return spec.with_overrides(**changes)


def check(spec: CheckSpec, data: CheckData | None = None) -> CheckResult:
    """The check as the command runs it: the layer in a fresh process (the framework imported there only), with
    the command's memory limit."""
    with remote_layer(spec, default_max_memory()) as layer:
        return run_check(spec, layer=layer, data=data)


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
    assert spec.impl.module == "torch_layers.py" and spec.layout is Layout.NCHW and spec.impl.device is None
    assert spec.config["layout"] == "nchw"
    spec = one_spec("impl: {framework: torch, module: torch_layers.py, class: Conv}\ndevice: cpu\n")
    assert spec.impl is not None and (spec.impl.class_name, spec.impl.function) == ("Conv", None)
    assert spec.impl.device == "cpu" and spec.config["device"] == "cpu"  # the process running it gets the ref
    assert spec.config["impl"] == {"framework": "torch", "module": "torch_layers.py", "class": "Conv"}
    spec = one_spec("impl: {framework: torch, function: torch_layers.py:conv_relu}\nlayout: nhwc\n")
    assert spec.layout is Layout.NHWC  # layout: overrides the framework's


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


@needs_torch
def test_an_nn_module_in_a_channels_last_layout_is_refused_as_torch_constructs_modules_nchw() -> None:
    errors = errors_of("impl: {framework: torch, module: torch_layers.py, class: Conv}\nlayout: nhwc\n")
    assert any("an nn.Module layer is constructed as torch.nn.Conv2d is" in e for e in errors), errors


# -- where the framework runs ------------------------------------------------------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
        check=False,
    )


def test_a_config_that_needs_a_framework_this_python_cannot_import_is_refused_with_the_install_command() -> None:
    path = FIXTURES / "needs_torch.yaml"
    blocked = "import sys; sys.modules['torch'] = None; sys.modules['jax'] = None"  # import torch raises
    code = f"{blocked}; sys.argv = ['convcheck', 'run', {str(path)!r}]; from convcheck.cli import entry; entry()"
    done = run_python(code)
    assert done.returncode == ExitCode.INVALID, done.stderr
    assert "pip install 'convcheck[torch]'" in done.stderr and "needs_torch.yaml:2" in done.stderr


@needs_torch
def test_the_framework_is_imported_by_the_layers_process_only_and_never_for_numpy_checks() -> None:
    code = f"""
import sys
from convcheck.isolation.check import isolated_check
from convcheck.spec import CheckSpec, ConvShape, Framework, ImplRef, Layout
shape = ConvShape(1, 4, 4, 1, 2, 3, 1, 1)
numpy_layer = ImplRef("im2col_nhwc.py", base_dir={str(ROOT / "examples")!r})
assert isolated_check(CheckSpec("n", shape, impl=numpy_layer)).passed
assert "torch" not in sys.modules and "convcheck.user.frameworks.torch" not in sys.modules
torch_layer = ImplRef({TORCH_FILE!r}, framework=Framework.TORCH, function="ConvReLU")
assert isolated_check(CheckSpec("t", shape, impl=torch_layer, layout=Layout.NCHW)).passed
print(sorted(name for name in ("torch", "jax") if name in sys.modules))
"""
    done = run_python(code)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


@needs_torch
def test_a_framework_layer_is_never_run_in_convcheck_s_own_process() -> None:
    result = run_check(spec_of(torch_ref("ConvReLU")))
    assert result.status is Status.ERROR and "isolated_check" in (result.error or ""), describe(result)


@needs_torch
def test_the_python_api_checks_a_framework_layer_in_its_own_process() -> None:
    from convcheck.api import check_layer

    result = check_layer(spec_of(torch_ref("ConvReLU")))
    assert result.status is Status.PASS, describe(result)


@needs_torch
def test_torch_gets_the_arrays_without_a_copy_in_the_checks_dtype() -> None:
    code = f"""
import numpy as np
from convcheck.spec import Framework, ImplRef
from convcheck.user.loader import load_framework_impl
impl = load_framework_impl(ImplRef({TORCH_FILE!r}, framework=Framework.TORCH, function="Probe"))
for t in (np.float64, np.float32):
    x, w, b = np.ones((2, 3, 5, 6), t), np.ones((4, 3, 3, 3), t), np.zeros(4, t)
    out, _ = impl.forward(x, w, b, 1, 1, dilation=1, groups=1)
    address, dtype, device = impl.module.SEEN[-1]
    assert address == x.ctypes.data and str(dtype) == "torch." + np.dtype(t).name and device == "cpu"
    assert out.dtype == t and out.shape == (2, 4, 5, 6)
print("ok")
"""
    done = run_python(code)
    assert done.stdout.strip() == "ok", done.stderr


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


@needs_torch
def test_a_layer_without_the_dilation_the_check_needs_is_an_error_row_and_with_dilation_1_it_passes() -> None:
    result = check(spec_of(torch_ref("no_dilation"), SHAPES[1]))
    assert result.status is Status.ERROR and "takes no dilation parameter" in (result.error or ""), describe(result)
    assert check(spec_of(torch_ref("no_dilation"), SHAPES[5])).status is Status.PASS


# -- correct layers pass -----------------------------------------------------------------------------------------


@needs_torch
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_a_correct_torch_function_passes_across_the_geometries_in_float64_and_at_float32_kinks(
    shape: ConvShape,
) -> None:
    result = check(spec_of(torch_ref("ConvReLU"), shape))
    assert result.status is Status.PASS, describe(result)
    assert all(g.checked == g.total for g in result.gradients)  # every entry
    result = check(spec_of(torch_ref("ConvReLU"), shape, DType.FLOAT32), integer_data(shape, 1, DType.FLOAT32))
    assert result.status is Status.PASS and any(g.kinks > 0 for g in result.gradients), describe(result)


@needs_torch
@pytest.mark.parametrize(
    ("ref", "shape"),
    [
        (torch_ref("conv_relu"), SHAPES[3]),
        (torch_ref("Conv", "class"), SHAPES[2]),
        (torch_ref("Conv", "class"), SHAPES[3]),
    ],
    ids=["fn-2d-nobias", "Module-3d-groups", "Module-2d-nobias"],
)
def test_every_form_of_correct_torch_layer_passes(ref: ImplRef, shape: ConvShape) -> None:
    result = check(spec_of(ref, shape))
    assert result.status is Status.PASS, describe(result)


@needs_jax
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_a_correct_jax_layer_passes_across_the_geometries_in_float64_and_at_float32_kinks(shape: ConvShape) -> None:
    result = check(spec_of(jax_ref("conv_relu"), shape))
    assert result.status is Status.PASS, describe(result)
    result = check(spec_of(jax_ref("conv_relu"), shape, DType.FLOAT32), integer_data(shape, 1, DType.FLOAT32))
    assert result.status is Status.PASS and any(g.kinks > 0 for g in result.gradients), describe(result)


@needs_torch
def test_a_bias_gradient_torch_reduces_is_judged_as_training_gets_it() -> None:
    result = check(spec_of(torch_ref("DbPerExample")))  # (N, C_out): torch sums it over N, as in training
    assert result.status is Status.PASS, describe(result)


# -- planted bugs are caught -------------------------------------------------------------------------------------

# (name, kind, geometry, dtype, status, failing gradients (None: not asserted), a contract finding kind or error text)
TORCH_BUGS = [
    ("BugNoMask", "function", 0, DType.FLOAT64, Status.FAIL, {"input", "weights", "bias"}, None),
    ("BugModuleNoMask", "class", 2, DType.FLOAT64, Status.FAIL, {"input", "weights", "bias"}, None),
    ("BugIgnoresDilation", "function", 1, DType.FLOAT64, Status.FAIL, {"input"}, None),
    ("BugIgnoresDilation", "function", 4, DType.FLOAT64, Status.FAIL, {"input"}, None),
    ("BugIgnoresGroups", "function", 2, DType.FLOAT64, Status.FAIL, {"weights"}, None),
    ("BugIgnoresGroups", "function", 4, DType.FLOAT64, Status.FAIL, {"weights"}, None),
    ("BugDwOrder", "function", 0, DType.FLOAT64, Status.FAIL, {"weights"}, None),
    ("BugDbFirstItem", "function", 0, DType.FLOAT64, Status.FAIL, {"bias"}, None),
    ("BugFloat32", "function", 2, DType.FLOAT64, Status.FAIL, None, None),
    ("BugDbKeepdims", "function", 0, DType.FLOAT64, Status.ERROR, None, "got [1, 4, 1, 1] but expected shape"),
    # dout overwritten in place cannot change this check's gradients: a warning (--strict fails it)
    ("BugMaskInPlace", "function", 0, DType.FLOAT64, Status.PASS, None, FindingKind.MODIFIED_ARGUMENT),
    ("BugAccumulates", "function", 0, DType.FLOAT64, Status.FAIL, None, FindingKind.REPEAT_ACCUMULATES),
    ("BugNaN", "function", 0, DType.FLOAT64, Status.FAIL, None, FindingKind.NOT_FINITE),
    ("BugInputInPlace", "function", 0, DType.FLOAT64, Status.FAIL, None, FindingKind.MODIFIED_ARGUMENT),
    ("BugFloat64Out", "function", 0, DType.FLOAT32, Status.FAIL, None, FindingKind.DTYPE),
    ("BugDetached", "class", 0, DType.FLOAT64, Status.ERROR, None, "does not require grad"),
    ("not_a_layer", "function", 0, DType.FLOAT64, Status.ERROR, None, "is a int, not a function"),
    ("Conv", "function", 0, DType.FLOAT64, Status.ERROR, None, "is an nn.Module: name it with class: Conv"),
    ("Missing", "function", 0, DType.FLOAT64, Status.ERROR, None, "has no 'Missing' (named as the function)"),
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
@pytest.mark.parametrize(
    ("name", "kind", "geometry", "dtype", "status", "gradients", "evidence"),
    TORCH_BUGS,
    ids=[f"{bug[0]}-{IDS[bug[2]]}" for bug in TORCH_BUGS],
)
def test_planted_torch_bugs_are_caught(
    name: str, kind: str, geometry: int, dtype: DType, status: Status, gradients: set[str] | None, evidence: object
) -> None:
    assert_caught(check(spec_of(torch_ref(name, kind), SHAPES[geometry], dtype)), status, gradients, evidence)


JAX_BUGS = [
    ("bug_no_mask", 0, Status.FAIL, {"input", "weights", "bias"}, None),
    ("bug_dw_flipped", 2, Status.FAIL, {"weights"}, None),
    ("bug_float32", 0, Status.FAIL, None, None),
    ("bug_ignores_dilation", 1, Status.FAIL, {"input"}, None),
    ("bug_ignores_dilation", 4, Status.FAIL, {"input"}, None),
    ("bug_db_per_example", 0, Status.ERROR, None, "float64[2,4] corresponding to an input of type float64[4]"),
]


@needs_jax
@pytest.mark.parametrize(
    ("name", "geometry", "status", "gradients", "evidence"), JAX_BUGS, ids=[f"{b[0]}-{IDS[b[1]]}" for b in JAX_BUGS]
)
def test_planted_jax_bugs_are_caught(
    name: str, geometry: int, status: Status, gradients: set[str] | None, evidence: object
) -> None:
    assert_caught(check(spec_of(jax_ref(name), SHAPES[geometry])), status, gradients, evidence)


# -- devices -----------------------------------------------------------------------------------------------------


@needs_torch
def test_a_torch_layer_on_cuda_passes_or_without_a_gpu_is_an_error_row_that_says_so() -> None:
    result = check(spec_of(torch_ref("ConvReLU", device="cuda")))
    if result.status is Status.ERROR:
        assert "torch.cuda.is_available() is False" in (result.error or ""), describe(result)
        pytest.skip("no CUDA GPU here (torch.cuda.is_available() is False); docs/frameworks.md says how to run it")
    for dtype in DType:
        assert check(spec_of(torch_ref("ConvReLU", device="cuda"), dtype=dtype)).passed
        result = check(spec_of(torch_ref("BugNoMask", device="cuda"), dtype=dtype))
        assert result.status is Status.FAIL, describe(result)


@needs_jax
def test_an_explicit_jax_backend_it_lacks_is_an_error_row_and_an_existing_one_runs() -> None:
    result = check(spec_of(jax_ref("conv_relu", device="tpu")))
    assert result.status is Status.ERROR and "JAX has no 'tpu' backend" in (result.error or ""), describe(result)
    assert check(spec_of(jax_ref("conv_relu", device="cpu:0"))).status is Status.PASS


# -- the documented examples ---------------------------------------------------------------------------------------

EXAMPLES = Path(__file__).parent.parent / "examples" / "frameworks"


@needs_torch
@needs_jax
def test_the_framework_examples_pass_as_documented() -> None:
    from convcheck.batch.local import run_batch
    from convcheck.config import load_configs

    load = load_configs([EXAMPLES])
    assert load.ok, load.errors
    outcome = run_batch(load.specs, isolate=True)
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
