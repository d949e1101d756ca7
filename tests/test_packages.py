"""A layer that lives inside a package imports its package as it does at home, without an adapter."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from convcheck.spec import ImplRef
from convcheck.user.errors import ImplementationError
from convcheck.user.loader import load_functions, package_root

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "im2col_nhwc.py"
LAYER = """
from {package}.im2col import forward as plain_forward
from .im2col import backward as plain_backward


def forward(x, w, b, stride, padding):
    return plain_forward(x, w, b, stride, padding)


def backward(dout, cache):
    return plain_backward(dout, cache)
"""


def make_package(root: Path, package: str = "mylayers", layer: str = LAYER) -> Path:
    folder = root / package
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    shutil.copy(EXAMPLE, folder / "im2col.py")
    (folder / "fast_layers.py").write_text(layer.format(package=package))
    return folder / "fast_layers.py"


def test_the_package_root_is_the_first_folder_up_without_an_init(tmp_path: Path):
    layer = make_package(tmp_path / "project", "outer/inner")
    (tmp_path / "project" / "outer" / "__init__.py").write_text("")
    assert package_root(layer) == (tmp_path / "project", "outer.inner")
    plain = tmp_path / "plain.py"
    plain.write_text("")
    assert package_root(plain) == (tmp_path, "")


def test_a_layer_in_a_package_imports_its_package_absolutely_and_relatively(tmp_path: Path):
    make_package(tmp_path)
    impl = load_functions(ImplRef(module="mylayers/fast_layers.py", base_dir=tmp_path))
    assert impl.forward.__module__ == impl.module.__name__


def test_a_missing_module_inside_a_package_says_what_was_on_the_path(tmp_path: Path):
    make_package(tmp_path, layer="from {package}.missing import forward\n")
    with pytest.raises(ImplementationError) as info:
        load_functions(ImplRef(module="mylayers/fast_layers.py", base_dir=tmp_path))
    assert "the file is in the package mylayers" in str(info.value)
    assert str(tmp_path.resolve()) in str(info.value)
