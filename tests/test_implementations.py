"""Loading users' implementations and adapting them: every failure to load names the file, the line and what is
missing; the adapter converts layouts exactly, hands out copies, and never repairs a wrong shape."""

from __future__ import annotations

import os
import pickle
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from convcheck.layer import MatrixConvLayer
from convcheck.results import FindingKind
from convcheck.spec import Activation, CheckSpec, ConvShape, ImplRef, Layout, Signature
from convcheck.user.adapter import UserLayer
from convcheck.user.errors import ContractError, ImplementationError, UserCodeError, describe_exception
from convcheck.user.loader import load_functions, load_layer
from convcheck.user.shapes import TO_NCHW, TO_NHWC, layer_dims, shape_problem, user_index

FIXTURES = Path(__file__).parent / "fixtures" / "impls"


def arrays(shape: ConvShape, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x (N, H, W, C_in), w (k, k, C_in, C_out), b (C_out,), dout (N, OH, OW, C_out)."""
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal(shape.x_shape),
        rng.standard_normal(shape.w_shape),
        rng.standard_normal(shape.b_shape),
        rng.standard_normal(shape.out_shape),
    )


def user_layer(module: str, *, layout: Layout = Layout.NHWC, stride: int = 1, padding: int = 1, **ref: object):
    impl = load_functions(ImplRef(module, base_dir=FIXTURES, **ref))  # type: ignore[arg-type]
    return UserLayer(impl, stride=stride, padding=padding, layout=layout)


def write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


SHAPE = ConvShape(batch=2, in_height=5, in_width=6, in_depth=3, out_depth=4, filter_size=3, stride=1, padding=1)
CS231N = {"forward": "conv_forward_naive", "backward": "conv_backward_naive", "signature": Signature.CS231N}


# -- built-in and adapters ----------------------------------------------------------------------------------


def test_no_impl_or_builtin_loads_the_matrix_layer():
    spec = CheckSpec("c", SHAPE, activation=Activation.NONE)
    assert load_layer(spec) == MatrixConvLayer(1, 1, Activation.NONE)
    assert isinstance(load_layer(spec.with_overrides(impl=ImplRef("builtin"))), MatrixConvLayer)


@pytest.mark.parametrize(("stride", "padding"), [(1, 1), (2, 0), (2, 1), (3, 2)])
@pytest.mark.parametrize(("module", "layout"), [("good_nhwc.py", Layout.NHWC), ("good_nchw.py", Layout.NCHW)])
def test_adapter_matches_the_builtin_layer_in_both_layouts(module, layout, stride, padding):
    shape = ConvShape(2, 7, 6, 3, 4, 3, stride, padding)
    x, w, b, dout = arrays(shape)
    expected_out, cache = MatrixConvLayer(stride, padding).forward(x, w, b)
    expected = MatrixConvLayer(stride, padding).backward(dout, cache)
    layer = user_layer(module, layout=layout, stride=stride, padding=padding)
    out, user_cache = layer.forward(x, w, b)
    np.testing.assert_allclose(out, expected_out, atol=1e-12)
    for got, want in zip(layer.backward(dout, user_cache), expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_cs231n_signature_gets_nchw_copies_and_conv_param(tmp_path):
    write(
        tmp_path / "spy.py",
        """
        import numpy as np
        seen = {}

        def conv_forward_naive(x, w, b, conv_param):
            seen.update(x=x, w=w, b=b, conv_param=conv_param)
            return np.zeros((x.shape[0], w.shape[0], 5, 6)), None

        def conv_backward_naive(dout, cache):
            seen.update(dout=dout)
            return np.zeros((2, 3, 5, 6)), np.zeros((4, 3, 3, 3)), np.zeros(4)
        """,
    )
    impl = load_functions(ImplRef("spy.py", base_dir=tmp_path, **CS231N))  # type: ignore[arg-type]
    layer = UserLayer(impl, stride=1, padding=1, layout=Layout.NHWC)  # cs231n means NCHW whatever the layout
    x, w, b, dout = arrays(SHAPE)
    _, cache = layer.forward(x, w, b)
    layer.backward(dout, cache)
    seen = impl.module.seen
    assert seen["conv_param"] == {"stride": 1, "pad": 1}
    np.testing.assert_array_equal(seen["x"], x.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(seen["w"], w.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(seen["dout"], dout.transpose(0, 3, 1, 2))
    for name in ("x", "w", "b", "dout"):
        assert seen[name].flags.c_contiguous and seen[name].flags.owndata


def test_users_writes_never_reach_the_engines_arrays(tmp_path):
    write(
        tmp_path / "vandal.py",
        """
        import numpy as np
        kept = {}

        def forward(x, w, b, stride, padding):
            out = np.ones((x.shape[0], 5, 6, w.shape[-1]))
            kept["out"] = out
            x[...] = 0; w[...] = 0; b[...] = 0
            return out, None

        def backward(dout, cache):
            dout[...] = 0
            return np.zeros((2, 5, 6, 3)), np.zeros((3, 3, 3, 4)), np.zeros(4)
        """,
    )
    impl = load_functions(ImplRef("vandal.py", base_dir=tmp_path))
    layer = UserLayer(impl, stride=1, padding=1)
    x, w, b, dout = arrays(SHAPE)
    originals = [a.copy() for a in (x, w, b, dout)]
    out, cache = layer.forward(x, w, b)
    layer.backward(dout, cache)
    impl.module.kept["out"][...] = 7  # the user's later writes to its own output do not reach ours
    for got, original in zip((x, w, b, dout), originals, strict=True):
        np.testing.assert_array_equal(got, original)
    assert (out == 1).all()


def test_user_index_converts_nhwc_indices_to_the_users_layout():
    layer = user_layer("good_nchw.py", layout=Layout.NCHW)
    assert layer.user_index("x", (1, 2, 3, 4)) == (1, 4, 2, 3)
    assert layer.user_index("w", (0, 1, 2, 3)) == (3, 2, 0, 1)
    assert layer.user_index("b", (3,)) == (3,)
    assert user_layer("good_nhwc.py").user_index("x", (1, 2, 3, 4)) == (1, 2, 3, 4)


@pytest.mark.parametrize("tensor", sorted(TO_NCHW))
def test_the_permutations_invert_each_other_and_map_indices_like_the_arrays(tensor):
    engine = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    user = engine.transpose(TO_NCHW[tensor])
    np.testing.assert_array_equal(user.transpose(TO_NHWC[tensor]), engine)
    for index in np.ndindex(engine.shape):
        assert user[user_index(tensor, index, Layout.NCHW)] == engine[index]


# -- loading ------------------------------------------------------------------------------------------------


def test_sibling_imports_work_and_files_with_one_name_do_not_collide(tmp_path):
    for folder, value in (("a", 1.0), ("b", 2.0)):
        write(tmp_path / folder / "helper.py", f"VALUE_{folder} = {value}\n")
        write(
            tmp_path / folder / "layers.py",
            f"""
            from helper import VALUE_{folder} as VALUE

            def forward(x, w, b, stride, padding):
                return VALUE, None

            def backward(dout, cache):
                return None
            """,
        )
    first = load_functions(ImplRef("a/layers.py", base_dir=tmp_path))
    second = load_functions(ImplRef("b/layers.py", base_dir=tmp_path))
    assert first.module is not second.module
    assert (first.forward(*[None] * 5)[0], second.forward(*[None] * 5)[0]) == (1.0, 2.0)


def test_modules_are_cached_until_the_file_changes(tmp_path):
    path = write(tmp_path / "layer.py", "def forward(x, w, b, stride, padding): return 1, None\n")
    write(tmp_path / "layer.py", path.read_text() + "def backward(dout, cache): return None\n")
    first = load_functions(ImplRef("layer.py", base_dir=tmp_path))
    assert load_functions(ImplRef("layer.py", base_dir=tmp_path)).module is first.module
    path.write_text(path.read_text().replace("return 1, None", "return 22, None"))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    edited = load_functions(ImplRef("layer.py", base_dir=tmp_path))
    assert edited.module is not first.module
    assert edited.forward(*[None] * 5) == (22, None)


def test_an_importable_module_name_loads(tmp_path, monkeypatch):
    write(tmp_path / "pkg" / "__init__.py", "")
    write(tmp_path / "pkg" / "convs.py", "def forward(x, w, b, stride, padding): pass\ndef backward(d, c): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_functions(ImplRef("pkg.convs")).module.__name__ == "pkg.convs"


def test_missing_file_says_where_it_looked(tmp_path):
    with pytest.raises(ImplementationError, match=r"layers\.py not found: .*layers\.py does not exist") as info:
        load_functions(ImplRef("layers.py", base_dir=tmp_path))
    assert f"resolved against {tmp_path}" in str(info.value)


def test_missing_module_name_hints_at_the_file(tmp_path):
    write(tmp_path / "mylayer.py", "")
    with pytest.raises(ImplementationError, match=r"no module named 'mylayer'.*did you mean the file mylayer\.py"):
        load_functions(ImplRef("mylayer", base_dir=tmp_path))


def test_syntax_error_names_file_line_and_message(tmp_path):
    write(tmp_path / "broken.py", "def forward(x, w, b, stride, padding):\n    return (x,\n\ndef backward(d, c):\n")
    with pytest.raises(ImplementationError) as info:
        load_functions(ImplRef("broken.py", base_dir=tmp_path))
    error = info.value
    assert error.file is not None and error.file.endswith("broken.py")
    assert error.line in (2, 4)
    assert f"broken.py:{error.line}" in str(error) and "SyntaxError" in str(error)


def test_exception_at_import_names_the_users_frame():
    with pytest.raises(ImplementationError) as info:
        load_functions(ImplRef("raises_at_import.py", base_dir=FIXTURES))
    message = str(info.value)
    assert "KeyError: 'large'" in message
    assert "raises_at_import.py:7 in _config" in message
    assert (Path(info.value.file).name, info.value.line) == ("raises_at_import.py", 7)
    assert "Traceback" not in message and "importlib" not in message


def test_import_error_names_the_missing_package():
    with pytest.raises(ImplementationError) as info:
        load_functions(ImplRef("import_error.py", base_dir=FIXTURES))
    assert "No module named 'not_a_real_package_for_convcheck'" in str(info.value)
    source = (FIXTURES / "import_error.py").read_text().splitlines()
    assert "import not_a_real_package_for_convcheck" in source[info.value.line - 1]
    assert "is it installed" in str(info.value)


def test_missing_function_lists_what_exists_and_the_mapping_to_write():
    with pytest.raises(ImplementationError) as info:
        load_functions(ImplRef("cs231n_names.py", base_dir=FIXTURES))
    message = str(info.value)
    assert "has no function 'forward'" in message
    assert "conv_forward_naive (line 7), conv_backward_naive (line 11)" in message
    assert (
        "impl: {module: cs231n_names.py, forward: conv_forward_naive, backward: conv_backward_naive, "
        "signature: cs231n}" in message
    )


def test_wrong_arity_names_the_signature_and_suggests_cs231n():
    with pytest.raises(ImplementationError) as info:
        load_functions(ImplRef("wrong_arity.py", base_dir=FIXTURES))
    message = str(info.value)
    assert "forward(x, w, b, conv_param) at" in message and "wrong_arity.py:6" in message
    assert "cannot be called as forward(x, w, b, stride, padding)" in message
    assert "signature: cs231n" in message


def test_cs231n_signature_on_convcheck_functions_says_so():
    with pytest.raises(ImplementationError, match="use signature: convcheck"):
        load_functions(ImplRef("good_nhwc.py", base_dir=FIXTURES, signature=Signature.CS231N))


def test_loaded_cs231n_fixture_runs_with_mapping():
    layer = user_layer("good_cs231n.py", **CS231N)
    assert layer.layout is Layout.NCHW
    x, w, b, _ = arrays(SHAPE)
    out, _ = layer.forward(x, w, b)
    assert out.shape == SHAPE.out_shape


# -- the user's exceptions ----------------------------------------------------------------------------------


def test_exception_in_forward_points_at_the_users_innermost_frame():
    layer = user_layer("raises_forward.py")
    x, w, b, _ = arrays(SHAPE)
    with pytest.raises(UserCodeError) as info:
        layer.forward(x, w, b)
    error = info.value
    assert (error.role, error.exc_type) == ("forward", "ValueError")
    assert error.frame is not None and (Path(error.frame.file).name, error.frame.line) == ("raises_forward.py", 5)
    assert error.frame.function == "_im2col"
    assert "raised ValueError: cannot unfold an input of shape (2, 5, 6, 3)" in str(error)


def test_exception_in_backward_from_numpy_points_at_the_users_line():
    layer = user_layer("raises_backward.py")
    x, w, b, dout = arrays(SHAPE)
    _, cache = layer.forward(x, w, b)
    with pytest.raises(UserCodeError, match=r"backward raised ValueError: operands could not be broadcast") as info:
        layer.backward(dout, cache)
    assert info.value.frame is not None and info.value.frame.line == 12


def test_sys_exit_in_user_code_is_an_error_of_the_check():
    x, w, b, _ = arrays(SHAPE)
    with pytest.raises(UserCodeError, match=r"raised SystemExit: giving up at .*exits\.py:7"):
        user_layer("exits.py").forward(x, w, b)


def test_faults_survive_pickling():
    x, w, b, _ = arrays(SHAPE)
    with pytest.raises(UserCodeError) as info:
        user_layer("raises_forward.py").forward(x, w, b)
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value) and copy.frame == info.value.frame
    error = pickle.loads(pickle.dumps(ImplementationError("m", file="f.py", line=3)))
    assert (str(error), error.file, error.line) == ("m", "f.py", 3)
    contract = ContractError("db has shape (1, 4)", tensor="db", kind=FindingKind.SHAPE, shape=(1, 4))
    assert pickle.loads(pickle.dumps(contract)).finding == contract.finding


def test_exceptions_are_described_without_a_traceback():
    x, w, b, _ = arrays(SHAPE)
    with pytest.raises(UserCodeError) as info:
        user_layer("raises_forward.py").forward(x, w, b)
    for located in (False, True):  # the user's fault is its own message wherever it is described
        assert describe_exception(info.value, located=located) == str(info.value)
    assert describe_exception(KeyError("k")) == "KeyError: 'k'"
    assert describe_exception(RuntimeError()) == "RuntimeError"
    try:
        {}["k"]
    except KeyError as exc:  # raised here, in a test file: that is the frame named
        assert describe_exception(exc, located=True).startswith("the check failed with KeyError: 'k' at ")
        assert "test_implementations.py" in describe_exception(exc, located=True)
    assert describe_exception(SystemExit(3), located=True) == "something called sys.exit(3) during the check"
    assert describe_exception(MemoryError(), located=True).startswith("ran out of memory (MemoryError); ")


# -- shapes are never repaired ------------------------------------------------------------------------------


def test_db_with_keepdims_gets_the_keepdims_message():
    layer = user_layer("wrong_db_keepdims.py")
    x, w, b, dout = arrays(SHAPE)
    _, cache = layer.forward(x, w, b)
    with pytest.raises(ContractError) as info:
        layer.backward(dout, cache)
    assert info.value.tensor == "db"
    finding = info.value.finding
    assert (finding.kind, finding.tensor, finding.shape, str(finding)) == (
        FindingKind.SHAPE,
        "db",
        (1, 4),
        str(info.value),
    )
    assert "db has shape (1, 4)" in str(info.value) and "(C_out,) = (4,)" in str(info.value)
    assert "keepdims=True" in str(info.value)


def test_dw_in_the_nhwc_layout_under_nchw_says_so():
    layer = user_layer("wrong_dw_layout.py", layout=Layout.NCHW)
    x, w, b, dout = arrays(SHAPE)
    _, cache = layer.forward(x, w, b)
    with pytest.raises(ContractError, match=r"\(C_out, C_in, k, k\) = \(4, 3, 3, 3\).*NHWC weight layout"):
        layer.backward(dout, cache)


def test_output_size_off_explains_the_formula():
    x, w, b, _ = arrays(SHAPE)
    with pytest.raises(ContractError, match=r"output size is off; OH = .*\(5 \+ 2·1 − 3\) // 1 \+ 1 = 5"):
        user_layer("wrong_out_shape.py").forward(x, w, b)


def test_forward_without_cache_is_a_contract_error():
    x, w, b, _ = arrays(SHAPE)
    with pytest.raises(ContractError, match=r"must return \(out, cache\); it returned an array of shape") as info:
        user_layer("not_a_tuple.py").forward(x, w, b)
    assert info.value.finding.kind is FindingKind.NOT_AN_ARRAY


@pytest.mark.parametrize(
    ("tensor", "got", "layout", "phrase"),
    [
        ("x", (2, 7, 8, 3), Layout.NHWC, "padded input"),
        ("x", (2, 3, 5, 6), Layout.NHWC, "NCHW layout"),
        ("out", (60, 4), Layout.NHWC, "matrix form (N·OH·OW, C_out)"),
        ("out", (2, 5, 6, 4), Layout.NCHW, "NHWC layout"),
        ("w", (27, 4), Layout.NHWC, "matrix form (k·k·C_in, C_out)"),
        ("b", (1, 4, 1, 1), Layout.NCHW, "keepdims"),
        ("b", (3,), Layout.NHWC, "the contract wants (C_out,) = (4,)"),
    ],
)
def test_shape_messages_name_what_a_wrong_shape_looks_like(tensor, got, layout, phrase):
    dims = layer_dims(SHAPE.x_shape, SHAPE.w_shape, 1, 1)
    assert phrase in shape_problem("it", tensor, got, layout, dims)


def test_right_shapes_have_no_problem():
    dims = layer_dims(SHAPE.x_shape, SHAPE.w_shape, 1, 1)
    assert shape_problem("out", "out", (2, 4, 5, 6), Layout.NCHW, dims) is None


def test_library_frames_below_the_users_folder_are_not_the_users(tmp_path, monkeypatch):
    # A virtualenv inside the project folder: its packages are below the user's folder, but not the user's code.
    library = tmp_path / ".venv" / "lib" / "site-packages"
    write(library / "fancylib.py", "def unfold(x):\n    raise IndexError('window out of range')\n")
    monkeypatch.syspath_prepend(str(library))
    write(
        tmp_path / "layers.py",
        """
        import fancylib

        def forward(x, w, b, stride, padding):
            return fancylib.unfold(x), None

        def backward(dout, cache):
            return None
        """,
    )
    layer = UserLayer(load_functions(ImplRef("layers.py", base_dir=tmp_path)), stride=1, padding=1)
    x, w, b, _ = arrays(SHAPE)
    with pytest.raises(UserCodeError) as info:
        layer.forward(x, w, b)
    frame = info.value.frame
    assert frame is not None and (Path(frame.file).name, frame.line, frame.function) == ("layers.py", 5, "forward")
    assert sys.modules.pop("fancylib", None) is not None  # an installed package is never forgotten like a sibling
