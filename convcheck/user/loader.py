"""Loading a user's convolution layer: two functions from a ``.py`` file or an importable module.

See ``docs/implementations.md``::

    convcheck signature:  forward(x, w, b, stride, padding) -> (out, cache)
                          backward(dout, cache) -> (dx, dw, db)
    cs231n signature:     forward(x, w, b, {"stride": s, "pad": p}) -> (out, cache); same backward; NCHW

Every way loading can fail is an ``ImplementationError`` naming the file, the line and what is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from convcheck.layer import MatrixConvLayer
from convcheck.protocol import ConvLayer
from convcheck.spec import CheckSpec, ImplRef, Signature
from convcheck.user.adapter import LoadedImpl, UserLayer
from convcheck.user.errors import (
    ImplementationError,
    display_path,
    exception_name,
    innermost_frame,
    is_library,
    shorten,
)
from convcheck.user.frameworks import install_hint, load_framework

__all__ = ["load_framework_impl", "load_functions", "load_impl", "load_layer"]

_MODULE_CACHE: dict[tuple[str, int, int], ModuleType] = {}


def load_layer(spec: CheckSpec) -> ConvLayer:
    """The layer a check runs: the built-in ``MatrixConvLayer`` (``spec.impl is None`` or ``builtin``), or the
    user's functions wrapped in a ``UserLayer`` bound to the spec's geometry, layout and bias shape.

    The user's layer computes the activation itself; ``spec.activation`` is what the reference applies.

    Raises:
        ImplementationError: the implementation cannot be loaded (see ``load_functions``), its forward takes
            no ``dilation``/``groups`` the check needs, or it is a torch or JAX layer (those run only in a process
            of their own: ``convcheck.isolation.check.isolated_check``, as the command runs every user layer).
    """
    shape = spec.shape
    if spec.impl is None or spec.impl.module == "builtin":
        return MatrixConvLayer.for_shape(shape, spec.activation)
    if spec.impl.framework is not None:
        raise ImplementationError(
            f"a {spec.impl.framework.value} layer runs in a process of its own (the framework is imported there, "
            "never in convcheck's): check it with convcheck.isolation.check.isolated_check(spec) or the command"
        )
    impl = load_functions(spec.impl)
    return UserLayer.for_shape(impl, shape, spec.layout, spec.bias_shape)


def load_impl(ref: ImplRef) -> LoadedImpl:
    """The functions ``ref`` names: ``load_framework_impl`` for a torch or JAX layer, else ``load_functions``.

    What the isolated process (``convcheck.isolation.child``) loads, from the reference alone.
    """
    return load_framework_impl(ref) if ref.framework is not None else load_functions(ref)


def load_functions(ref: ImplRef) -> LoadedImpl:
    """Import ``ref.module`` and fetch its forward and backward functions, checking their parameters.

    A module that ends in ``.py`` or contains a path separator is a file, resolved against ``ref.base_dir``
    (the config file's folder; the working directory when None) and imported under a name unique to its
    absolute path, so two different ``layers.py`` never collide; its folder is on ``sys.path`` while it
    executes, so it can import its siblings. Anything else is an importable module name. Files are cached
    per (path, mtime, size) within a process: an edited file is loaded afresh.

    Raises:
        ImplementationError: missing file or module, syntax error (file:line), exception at import time (the
            user's frame), a missing function (the functions that do exist are listed), or a function whose
            parameters cannot take the call its signature makes.
    """
    if _looks_like_path(ref.module):
        module, origin, roots = _load_file(ref)
    else:
        module, origin, roots = _load_module_name(ref)
    forward = _fetch(module, ref.forward, "forward", ref, origin)
    backward = _fetch(module, ref.backward, "backward", ref, origin)
    forward_call = (
        "forward(x, w, b, conv_param)" if ref.signature is Signature.CS231N else "forward(x, w, b, stride, padding)"
    )
    _check_arity(forward, "forward", 4 if ref.signature is Signature.CS231N else 5, forward_call, ref, origin)
    _check_arity(backward, "backward", 2, "backward(dout, cache)", ref, origin)
    return LoadedImpl(forward, backward, ref, module, origin, roots)


def load_framework_impl(ref: ImplRef) -> LoadedImpl:
    """A torch or JAX layer (``ref.framework``) as numpy functions (``convcheck.user.frameworks``), on
    ``ref.device``; its hyperparameters come with each call, as a numpy layer's do.

    The framework is imported before the user's module (JAX's float64 switch must precede its arrays): seconds,
    which is why only the process that runs the layer does it.

    Raises:
        ImplementationError: the framework cannot be imported, the module cannot be loaded, or the object it
            names is not a layer of the framework, or the device does not exist here (see the framework's
            ``load``).
    """
    assert ref.framework is not None
    try:
        adapter = load_framework(ref.framework)
    except Exception as exc:  # noqa: BLE001 - not installed, or an install that fails to import: say which
        raise ImplementationError(
            f"{ref.framework.value} could not be imported in the layer's process ({type(exc).__name__}: {exc}); "
            f"install it with {install_hint(ref.framework)}"
        ) from None
    module, origin, roots = _load_file(ref) if _looks_like_path(ref.module) else _load_module_name(ref)
    impl: LoadedImpl = adapter.load(ref, module, origin, roots)
    return impl


def _looks_like_path(module: str) -> bool:
    return module.endswith(".py") or "/" in module or os.sep in module


def _load_file(ref: ImplRef) -> tuple[ModuleType, str, tuple[Path, ...]]:
    base = ref.base_dir if ref.base_dir is not None else Path.cwd()
    path = (base / Path(ref.module).expanduser()).resolve()
    origin = display_path(path)
    if not path.is_file():
        where = f" (resolved against {display_path(base)})" if ref.base_dir else ""
        hint = "" if ref.module.endswith(".py") else "; a file must end in .py, a module name has no slashes"
        raise ImplementationError(
            f"implementation file {ref.module} not found: {origin} does not exist{where}{hint}",
            file=str(path),
        )
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    cached = _MODULE_CACHE.get(key)
    if cached is not None:
        return cached, origin, (path.parent,)
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    name = f"_convcheck_impl_{stem}_{digest}"
    root, package = package_root(path)
    if package:  # relative imports (``from .im2col import …``) resolve against the file's real package
        name = f"{package}.{name}"
    import_spec = importlib.util.spec_from_file_location(name, path)
    if import_spec is None or import_spec.loader is None:  # pragma: no cover - only for non-.py suffixes
        raise ImplementationError(f"cannot import {origin}: Python does not recognise it as a module", file=str(path))
    module = importlib.util.module_from_spec(import_spec)
    folders = [str(folder) for folder in dict.fromkeys((path.parent, root)) if str(folder) not in sys.path]
    sys.path[:0] = folders
    sys.modules[name] = module  # dataclasses, pickle and typing look a module up by name while it executes
    before = set(sys.modules)
    try:
        import_spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt) or not isinstance(exc, Exception | SystemExit):
            raise
        raise _import_failure(exc, origin, (path.parent,), (root, package) if package else None) from exc
    finally:
        for folder in folders:
            with contextlib.suppress(ValueError):  # the user's module may have removed it itself
                sys.path.remove(folder)
        _forget_siblings(set(sys.modules) - before, root)
    for old in [k for k in _MODULE_CACHE if k[0] == key[0]]:
        del _MODULE_CACHE[old]
    _MODULE_CACHE[key] = module
    return module, origin, (path.parent,)


def package_root(path: Path) -> tuple[Path, str]:
    """The folder a file's package lives in, and the file's package as a dotted name ("" outside a package).

    As pytest finds a test file's ``rootdir``-relative name: walk up from the file's folder while it holds an
    ``__init__.py``; the first folder that does not is the root. With that root on ``sys.path``, a layer in
    ``cs231n/fast_layers.py`` can ``from cs231n.im2col import …`` (and import relatively) as it does at home.
    """
    root = path.parent
    parts: list[str] = []
    while (root / "__init__.py").is_file() and root.parent != root:
        parts.insert(0, root.name)
        root = root.parent
    return root, ".".join(parts)


def _forget_siblings(names: set[str], folder: Path) -> None:
    """Drop the sibling modules a user's file imported from ``sys.modules``.

    The user's module keeps them alive through its globals; forgetting their names lets another folder's
    ``helper.py`` be imported as ``helper`` later (two assignments often share file names).
    """
    for sibling in names:
        file = getattr(sys.modules.get(sibling), "__file__", None)
        if not file:
            continue
        path = Path(file).resolve()
        if path.is_relative_to(folder) and not is_library(path):  # never an installed package (a .venv here)
            sys.modules.pop(sibling, None)


def _load_module_name(ref: ImplRef) -> tuple[ModuleType, str, tuple[Path, ...]]:
    name = ref.module
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            hint = ""
            base = ref.base_dir if ref.base_dir is not None else Path.cwd()
            if (base / f"{name}.py").is_file():
                hint = f"; did you mean the file {name}.py? (write the .py to load a file)"
            raise ImplementationError(
                f"implementation module {name!r} cannot be imported: no module named {exc.name!r} on this "
                f"Python's path ({sys.executable}){hint}"
            ) from exc
        raise _import_failure(exc, name, ()) from exc
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) or not isinstance(exc, Exception | SystemExit):
            raise
        raise _import_failure(exc, name, ()) from exc
    file = getattr(module, "__file__", None)
    roots: tuple[Path, ...] = ()
    if file:
        top = sys.modules.get(name.partition(".")[0])
        top_file = getattr(top, "__file__", None) or file
        top_path = Path(top_file).resolve()
        roots = (top_path.parent,)
    return module, name, roots


def _import_failure(
    exc: BaseException, origin: str, roots: tuple[Path, ...], package: tuple[Path, str] | None = None
) -> ImplementationError:
    if isinstance(exc, SyntaxError):
        file = exc.filename or origin
        where = f"{display_path(file)}:{exc.lineno}" if exc.lineno else display_path(file)
        text = f": `{exc.text.strip()}`" if exc.text and exc.text.strip() else ""
        kind = type(exc).__name__
        return ImplementationError(
            f"cannot load implementation {origin}: {kind} at {where}: {exc.msg}{text}",
            file=file,
            line=exc.lineno,
        )
    frame = innermost_frame(exc.__traceback__, roots)
    where = f" at {frame.describe()}" if frame else ""
    detail = shorten(str(exc))
    detail = f": {detail}" if detail else ""
    hint = ""
    if isinstance(exc, ModuleNotFoundError):
        hint = f" (is it installed for the Python that runs convcheck, {sys.executable}?)"
        if package is not None:
            folder, name = package
            hint = (
                f" (the file is in the package {name}, so the folder that holds it, {display_path(folder.resolve())}, "
                f"was on the path too; is {exc.name!r} installed, or a folder with an __init__.py there?)"
            )
    return ImplementationError(
        f"cannot load implementation {origin}: importing it raised {exception_name(exc)}{detail}{where}{hint}",
        file=frame.file if frame else None,
        line=frame.line if frame else None,
    )


def _fetch(module: ModuleType, name: str, role: str, ref: ImplRef, origin: str) -> Callable[..., Any]:
    value = getattr(module, name, None)
    if callable(value):
        return value
    functions = _functions_of(module)
    listing = ", ".join(f"{fname} (line {line})" if line else fname for fname, line in functions) or "none"
    what = f"has no function {name!r}" if value is None else f"has {name!r}, but it is a {type(value).__name__}"
    hint = _naming_hint(module, functions, ref)
    if name != role:
        what += f" (named as the {role} function)"
    raise ImplementationError(
        f"implementation {origin} {what}. Functions it defines: {listing}.{hint}",
        file=getattr(module, "__file__", None),
    )


def _functions_of(module: ModuleType) -> list[tuple[str, int | None]]:
    found: list[tuple[str, int | None]] = []
    for fname, value in vars(module).items():
        if fname.startswith("__") or not inspect.isfunction(value):
            continue
        if value.__module__ != module.__name__:
            continue
        found.append((fname, value.__code__.co_firstlineno))
    if not found:  # a module that re-exports functions defined elsewhere
        found = [(f, v.__code__.co_firstlineno) for f, v in vars(module).items() if inspect.isfunction(v)]
    return found


def _naming_hint(module: ModuleType, functions: list[tuple[str, int | None]], ref: ImplRef) -> str:
    forward = next((f for f, _ in functions if "forward" in f.lower()), None)
    backward = next((f for f, _ in functions if "backward" in f.lower()), None)
    if forward is None or backward is None:
        return ""
    signature = ref.signature
    try:
        if len(inspect.signature(getattr(module, forward)).parameters) == 4:
            signature = Signature.CS231N
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        pass
    sig = ", signature: cs231n" if signature is Signature.CS231N else ""
    return (
        f" Name the functions in the config: "
        f"impl: {{module: {ref.module}, forward: {forward}, backward: {backward}{sig}}}"
    )


def _check_arity(fn: Callable[..., Any], role: str, count: int, call: str, ref: ImplRef, origin: str) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins and C functions without a signature: let the call decide
        return
    try:
        signature.bind(*range(count))
    except TypeError:
        pass
    else:
        return
    code = getattr(fn, "__code__", None)
    where = f"{display_path(code.co_filename)}:{code.co_firstlineno}" if code else origin
    name = getattr(fn, "__name__", role)
    hint = ""
    if role == "forward":
        fits = _binds(signature, 4), _binds(signature, 5)
        if ref.signature is Signature.CONVCHECK and fits[0]:
            hint = (
                " It looks like a CS231n-style function: add signature: cs231n to the impl mapping "
                f"(impl: {{module: {ref.module}, forward: {ref.forward}, backward: {ref.backward}, "
                "signature: cs231n})."
            )
        elif ref.signature is Signature.CS231N and fits[1]:
            hint = " It takes stride and padding separately: use signature: convcheck (the default)."
    raise ImplementationError(
        f"{role} function {name}{signature} at {where} cannot be called as {call} "
        f"(signature: {ref.signature.value}).{hint}",
        file=code.co_filename if code else None,
        line=code.co_firstlineno if code else None,
    )


def _binds(signature: inspect.Signature, count: int) -> bool:
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True
