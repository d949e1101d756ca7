"""Loading a user's convolution layer, and adapting it to the engine's NHWC layer protocol.

A user's implementation is two functions in a ``.py`` file or an importable module (see
``docs/implementations.md``)::

    convcheck signature:  forward(x, w, b, stride, padding) -> (out, cache)
                          backward(dout, cache) -> (dx, dw, db)
    cs231n signature:     forward(x, w, b, {"stride": s, "pad": p}) -> (out, cache); same backward; NCHW

Shapes, per layout (``OH = (H + 2p − k) // s + 1``, likewise ``OW``)::

              nhwc (convcheck's internal layout)     nchw (PyTorch, CS231n)
    x, dx     (N, H, W, C_in)                        (N, C_in, H, W)
    w, dw     (k, k, C_in, C_out)                    (C_out, C_in, k, k)
    b, db     (C_out,)                               (C_out,)
    out, dout (N, OH, OW, C_out)                     (N, C_out, OH, OW)

``UserLayer`` hands the user fresh C-contiguous copies in the user's layout and converts what comes back
with one transpose-copy per array, so nothing the user does to its arguments or keeps in its cache can reach
the engine's arrays. It never repairs what the user returns: a wrong shape is a ``ContractError`` that says
what the shape looks like (the seed's ``keepdims=True`` bias gradient, the other layout, an uncropped
padded ``dx``, …).

Errors a user's implementation can cause all derive from ``UserFault`` (one-paragraph ``str()``, no
traceback): ``ImplementationError`` (it cannot be loaded), ``UserCodeError`` (it raised), ``ContractError``
(it returned something the contract forbids).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np

from convcheck.layer import MatrixConvLayer
from convcheck.protocol import ConvLayer
from convcheck.spec import CheckSpec, ImplRef, Layout, Signature

__all__ = [
    "ContractError",
    "Frame",
    "ImplementationError",
    "LoadedImpl",
    "UserCodeError",
    "UserFault",
    "UserLayer",
    "display_path",
    "expected_shape",
    "innermost_frame",
    "layer_dims",
    "named_dims",
    "load_functions",
    "load_layer",
    "shape_problem",
]

_MESSAGE_LIMIT = 400  # characters of a user's exception message kept in our one-paragraph messages
_PACKAGE_DIR = Path(__file__).resolve().parent
_STDLIB_DIR = Path(os.__file__).resolve().parent


# ------------------------------------------------------------------------------------------------------------
# Errors


class UserFault(Exception):
    """The user's implementation (not convcheck, not the config) is at fault. ``str()`` is one paragraph."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take keyword-only context; rebuild from the message and the attributes.
        return (_rebuild_fault, (type(self), str(self), dict(self.__dict__)))


def _rebuild_fault(cls: type[UserFault], message: str, attributes: dict[str, Any]) -> UserFault:
    fault = cls.__new__(cls)
    Exception.__init__(fault, message)
    fault.__dict__.update(attributes)
    return fault


class ImplementationError(UserFault):
    """The implementation could not be loaded: missing file or module, syntax error, an exception at import
    time, a missing function or one with the wrong parameters. ``file``/``line`` locate the cause if known."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.line = line


@dataclass(frozen=True)
class Frame:
    """One traceback frame: where in the user's code something happened."""

    file: str
    line: int
    function: str
    source: str | None = None

    def describe(self) -> str:
        """``layers.py:42 in conv_backward (`dx += dcols`)``."""
        text = f"{display_path(self.file)}:{self.line} in {self.function}"
        return f"{text} (`{self.source}`)" if self.source else text


class UserCodeError(UserFault):
    """The user's ``forward`` or ``backward`` raised. Carries the exception's type and message and the user's
    innermost own frame (not convcheck's, not numpy's)."""

    def __init__(self, role: str, function: str, exc: BaseException, frame: Frame | None) -> None:
        self.role = role  # "forward" | "backward"
        self.function = function  # the user's function name
        self.exc_type = _exception_name(exc)
        self.exc_message = _shorten(str(exc))
        self.frame = frame
        where = f" at {frame.describe()}" if frame else ""
        detail = f": {self.exc_message}" if self.exc_message else ""
        named = role if function == role else f"{role} ({function})"
        super().__init__(f"the implementation's {named} raised {self.exc_type}{detail}{where}")


class ContractError(UserFault):
    """The user's code returned something the contract forbids: not a tuple, not an array, a wrong shape.

    ``tensor`` names what was wrong (``out``, ``dx``, ``dw``, ``db``, ``cache``)."""

    def __init__(self, message: str, *, tensor: str | None = None) -> None:
        super().__init__(message)
        self.tensor = tensor


def _exception_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the working directory when it lies below it, else as given."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else str(path)
    except (OSError, ValueError):
        return str(path)


def _is_library(path: Path) -> bool:
    """convcheck itself, the standard library, or an installed package (even one below the user's folder)."""
    return (
        path.is_relative_to(_PACKAGE_DIR)
        or "site-packages" in path.parts
        or "dist-packages" in path.parts
        or path.is_relative_to(_STDLIB_DIR)
    )


def innermost_frame(tb: TracebackType | None, roots: tuple[Path, ...] = ()) -> Frame | None:
    """The innermost traceback frame in the user's code.

    Library code (convcheck, the standard library, site-packages, importlib's frozen frames) never counts.
    Preference: a frame in a file below one of ``roots`` (the folder of the user's module); else the innermost
    frame outside library code; else None.
    """
    frames = traceback.extract_tb(tb)
    resolved_roots = tuple(root.resolve() for root in roots)
    paths: dict[str, Path | None] = {}

    def own_code(filename: str) -> Path | None:
        """The frame's file when it is not library code."""
        if filename not in paths:
            path = None
            if not filename.startswith("<"):
                try:
                    path = Path(filename).resolve()
                except (OSError, ValueError):
                    path = None
            if path is not None and _is_library(path):
                path = None
            paths[filename] = path
        return paths[filename]

    def below_root(filename: str) -> bool:
        path = own_code(filename)
        return path is not None and any(path.is_relative_to(root) for root in resolved_roots)

    def foreign(filename: str) -> bool:
        return own_code(filename) is not None

    for test in (below_root, foreign):
        for summary in reversed(frames):
            if test(summary.filename):
                return Frame(summary.filename, summary.lineno or 0, summary.name, (summary.line or None))
    return None


# ------------------------------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True)
class LoadedImpl:
    """A user's two functions, and where they came from (for messages and for locating the user's frames)."""

    forward: Callable[..., Any]
    backward: Callable[..., Any]
    ref: ImplRef
    module: ModuleType
    origin: str  # the file (or module name) as shown in messages
    roots: tuple[Path, ...] = field(default=())  # folders whose frames count as the user's own


_MODULE_CACHE: dict[tuple[str, int, int], ModuleType] = {}


def load_layer(spec: CheckSpec) -> ConvLayer:
    """The layer a check runs: the built-in ``MatrixConvLayer`` (``spec.impl is None`` or ``builtin``), or the
    user's functions wrapped in a ``UserLayer`` bound to the spec's stride, padding and layout.

    The user's layer computes the activation itself; ``spec.activation`` is what the reference applies.

    Raises:
        ImplementationError: the implementation cannot be loaded (see ``load_functions``).
    """
    shape = spec.shape
    if spec.impl is None or spec.impl.module == "builtin":
        return MatrixConvLayer(shape.stride, shape.padding, spec.activation)
    impl = load_functions(spec.impl)
    return UserLayer(impl, stride=shape.stride, padding=shape.padding, layout=spec.layout)


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
    import_spec = importlib.util.spec_from_file_location(name, path)
    if import_spec is None or import_spec.loader is None:  # pragma: no cover - only for non-.py suffixes
        raise ImplementationError(f"cannot import {origin}: Python does not recognise it as a module", file=str(path))
    module = importlib.util.module_from_spec(import_spec)
    folder = str(path.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    sys.modules[name] = module  # dataclasses, pickle and typing look a module up by name while it executes
    before = set(sys.modules)
    try:
        import_spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt) or not isinstance(exc, Exception | SystemExit):
            raise
        raise _import_failure(exc, origin, (path.parent,)) from exc
    finally:
        if added:
            with contextlib.suppress(ValueError):  # the user's module may have removed it itself
                sys.path.remove(folder)
        _forget_siblings(set(sys.modules) - before, path.parent)
    for old in [k for k in _MODULE_CACHE if k[0] == key[0]]:
        del _MODULE_CACHE[old]
    _MODULE_CACHE[key] = module
    return module, origin, (path.parent,)


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
        if path.is_relative_to(folder) and not _is_library(path):  # never an installed package (a .venv here)
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


def _import_failure(exc: BaseException, origin: str, roots: tuple[Path, ...]) -> ImplementationError:
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
    detail = _shorten(str(exc))
    detail = f": {detail}" if detail else ""
    hint = ""
    if isinstance(exc, ModuleNotFoundError):
        hint = f" (is it installed for the Python that runs convcheck, {sys.executable}?)"
    return ImplementationError(
        f"cannot load implementation {origin}: importing it raised {_exception_name(exc)}{detail}{where}{hint}",
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


# ------------------------------------------------------------------------------------------------------------
# Shapes

# Axis names per layout; sizes come from ``_dims``.
_AXES: dict[Layout, dict[str, tuple[str, ...]]] = {
    Layout.NHWC: {
        "x": ("N", "H", "W", "C_in"),
        "w": ("k", "k", "C_in", "C_out"),
        "b": ("C_out",),
        "out": ("N", "OH", "OW", "C_out"),
    },
    Layout.NCHW: {
        "x": ("N", "C_in", "H", "W"),
        "w": ("C_out", "C_in", "k", "k"),
        "b": ("C_out",),
        "out": ("N", "C_out", "OH", "OW"),
    },
}

# Shapes that wrong implementations commonly hand back, and what each one suggests.
_LOOKALIKES: dict[str, tuple[tuple[tuple[str, ...], str], ...]] = {
    "x": (
        (("N", "H", "W", "C_in"), "the NHWC layout (N, H, W, C_in)"),
        (("N", "C_in", "H", "W"), "the NCHW layout (N, C_in, H, W)"),
        (("N", "Hp", "Wp", "C_in"), "the padded input (N, H + 2p, W + 2p, C_in): crop the padding off"),
        (("N", "C_in", "Hp", "Wp"), "the padded input (N, C_in, H + 2p, W + 2p): crop the padding off"),
    ),
    "w": (
        (("k", "k", "C_in", "C_out"), "the NHWC weight layout (k, k, C_in, C_out)"),
        (("C_out", "C_in", "k", "k"), "the NCHW weight layout (C_out, C_in, k, k)"),
        (("kkC", "C_out"), "the seed's matrix form (k·k·C_in, C_out): reshape it"),
        (("C_out", "kkC"), "the matrix form (C_out, C_in·k·k): reshape it"),
        (("C_in", "C_out", "k", "k"), "(C_in, C_out, k, k): C_in and C_out swapped"),
        (("k", "k", "C_out", "C_in"), "(k, k, C_out, C_in): C_in and C_out swapped"),
    ),
    "b": (
        (
            ("one", "C_out"),
            "(1, C_out), what a sum with keepdims=True produces (as the seed's bias gradient does): "
            "sum over axis 0 without keepdims",
        ),
        (("C_out", "one"), "(C_out, 1), a column vector: the contract wants a flat (C_out,)"),
        (
            ("one", "C_out", "one", "one"),
            "(1, C_out, 1, 1), what sum(axis=(0, 2, 3), keepdims=True) produces: drop keepdims",
        ),
        (
            ("one", "one", "one", "C_out"),
            "(1, 1, 1, C_out), what sum(axis=(0, 1, 2), keepdims=True) produces: drop keepdims",
        ),
    ),
    "out": (
        (("N", "OH", "OW", "C_out"), "the NHWC layout (N, OH, OW, C_out)"),
        (("N", "C_out", "OH", "OW"), "the NCHW layout (N, C_out, OH, OW)"),
        (("NOHOW", "C_out"), "the matrix form (N·OH·OW, C_out): reshape it"),
    ),
}


def layer_dims(x_shape: tuple[int, ...], w_shape: tuple[int, ...], stride: int, padding: int) -> dict[str, int]:
    """Named sizes from convcheck's NHWC ``x: (N, H, W, C_in)`` and ``w: (k, k, C_in, C_out)``."""
    _, h, w, _ = x_shape
    k = w_shape[0]
    oh = (h + 2 * padding - k) // stride + 1
    ow = (w + 2 * padding - k) // stride + 1
    dims = named_dims(x_shape, w_shape, oh, ow)
    dims.update({"Hp": h + 2 * padding, "Wp": w + 2 * padding, "s": stride, "p": padding})
    return dims


def named_dims(x_shape: tuple[int, ...], w_shape: tuple[int, ...], oh: int, ow: int) -> dict[str, int]:
    """The sizes shape messages name, for a layer whose stride and padding are unknown (output size given)."""
    n, h, w, c_in = x_shape
    k, _, _, c_out = w_shape
    return {
        "N": n,
        "H": h,
        "W": w,
        "C_in": c_in,
        "C_out": c_out,
        "k": k,
        "OH": oh,
        "OW": ow,
        "kkC": k * k * c_in,
        "NOHOW": n * oh * ow,
        "one": 1,
    }


def _axes_text(axes: tuple[str, ...]) -> str:
    return f"({axes[0]},)" if len(axes) == 1 else f"({', '.join(axes)})"


def expected_shape(tensor: str, layout: Layout, dims: dict[str, int]) -> tuple[int, ...]:
    """The contract's shape of ``tensor`` (``x``, ``w``, ``b`` or ``out``; gradients share their tensor's)."""
    return tuple(dims[axis] for axis in _AXES[layout][tensor])


def shape_problem(name: str, tensor: str, got: tuple[int, ...], layout: Layout, dims: dict[str, int]) -> str | None:
    """Why ``got`` is the wrong shape for ``tensor`` in ``layout``, or None when it is right.

    Args:
        name: what the message calls the array (``db``, ``forward's out``, …).
        tensor: which contract shape applies: ``x``, ``w``, ``b`` or ``out``.
        got: the shape the user's code returned.
        layout: the user's layout.
        dims: named sizes from ``layer_dims``.
    """
    axes = _AXES[layout][tensor]
    expected = tuple(dims[a] for a in axes)
    got = tuple(got)
    if got == expected:
        return None
    message = (
        f"{name} has shape {got}, but with layout {layout.value} the contract wants {_axes_text(axes)} = {expected}"
    )
    for candidate, meaning in _LOOKALIKES[tensor]:
        shape = tuple(dims.get(a, -1) for a in candidate)  # sizes a caller could not know never match
        if shape == got and shape != expected:
            return f"{message}; {shape} is {meaning}"
    if tensor == "out" and len(got) == 4 and "s" in dims:
        spatial = [i for i, a in enumerate(axes) if a in ("OH", "OW")]
        others_match = all(got[i] == expected[i] for i in range(4) if i not in spatial)
        if others_match:
            d = dims
            return (
                f"{message}: the output size is off; OH = (H + 2p − k) // s + 1 = "
                f"({d['H']} + 2·{d['p']} − {d['k']}) // {d['s']} + 1 = {d['OH']} and OW = "
                f"({d['W']} + 2·{d['p']} − {d['k']}) // {d['s']} + 1 = {d['OW']}"
            )
    if int(np.prod(got)) == int(np.prod(expected)):
        return f"{message}; it has the right number of entries in the wrong arrangement"
    return message


# ------------------------------------------------------------------------------------------------------------
# The adapter

# How the user's axes map to convcheck's NHWC axes: user_array = engine_array.transpose(_TO_USER[tensor]).
_TO_USER: dict[str, tuple[int, ...]] = {"x": (0, 3, 1, 2), "w": (3, 2, 0, 1), "out": (0, 3, 1, 2)}
_TO_ENGINE: dict[str, tuple[int, ...]] = {"x": (0, 2, 3, 1), "w": (2, 3, 1, 0), "out": (0, 2, 3, 1)}


@dataclass
class _Handed:
    """An array given to the user, with a pristine copy while auditing (to detect in-place modification)."""

    name: str
    array: np.ndarray
    pristine: np.ndarray | None = None


@dataclass(frozen=True)
class UserCache:
    """What ``UserLayer.forward`` returns as the cache: the user's own cache and the engine-side context."""

    user: Any
    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    handed: tuple[_Handed, ...] = ()  # the forward's arguments, only while auditing


class UserLayer:
    """A user's forward/backward as a ``ConvLayer``: NHWC in and out, whatever the user's layout.

    Every call hands the user fresh C-contiguous copies in its layout (``x: (N, C_in, H, W)`` and
    ``w: (C_out, C_in, k, k)`` for nchw) and converts the results back with one transpose-copy each, after
    checking their shapes against the contract (``ContractError`` otherwise; nothing is reshaped or repaired).
    Exceptions raised by the user's functions become ``UserCodeError``.
    """

    def __init__(self, impl: LoadedImpl, *, stride: int, padding: int, layout: Layout = Layout.NHWC) -> None:
        self.impl = impl
        self.stride = stride
        self.padding = padding
        self.signature = impl.ref.signature
        # CS231n's convention is NCHW whatever the config's layout says.
        self.layout = Layout.NCHW if self.signature is Signature.CS231N else layout
        self._forward = impl.forward
        self._backward = impl.backward
        self._audit: list[str] | None = None

    def __repr__(self) -> str:
        return (
            f"UserLayer({self.impl.origin}:{self.impl.ref.forward}/{self.impl.ref.backward}, "
            f"stride={self.stride}, padding={self.padding}, layout={self.layout.value}, "
            f"signature={self.signature.value})"
        )

    # -- the protocol --------------------------------------------------------------------------------------

    def forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, UserCache]:
        """``x: (N, H, W, C_in)``, ``w: (k, k, C_in, C_out)``, ``b: (C_out,)`` → ``(out, cache)``.

        ``out: (N, OH, OW, C_out)``; the cache is a ``UserCache`` holding the user's own cache.

        Raises:
            UserCodeError: the user's forward raised.
            ContractError: it did not return ``(out, cache)`` with ``out`` an array of the contract's shape.
        """
        xu, wu, bu = self._to_user(x, "x"), self._to_user(w, "w"), b.copy()
        handed = self._hand("x", xu), self._hand("w", wu), self._hand("b", bu)
        try:
            if self.signature is Signature.CS231N:
                returned = self._forward(xu, wu, bu, {"stride": self.stride, "pad": self.padding})
            else:
                returned = self._forward(xu, wu, bu, self.stride, self.padding)
        except (Exception, SystemExit) as exc:
            raise self._user_error("forward", self.impl.ref.forward, exc) from exc
        if self._audit is not None:
            self._check_handed(handed, "forward")
        if not isinstance(returned, tuple | list) or len(returned) != 2:
            raise ContractError(
                f"the implementation's forward must return (out, cache); it returned {_describe(returned)}",
                tensor="out",
            )
        out, user_cache = returned
        dims = layer_dims(x.shape, w.shape, self.stride, self.padding)
        self._check_array("out", "forward's out", "out", out, dims)
        cache = UserCache(user_cache, x.shape, w.shape, handed if self._audit is not None else ())
        return self._to_engine(out, "out"), cache

    def backward(self, dout: np.ndarray, cache: UserCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``dout: (N, OH, OW, C_out)`` → ``(dx, dw, db)`` shaped like ``(x, w, b)`` in NHWC.

        Raises:
            UserCodeError: the user's backward raised.
            ContractError: it did not return three arrays of the contract's shapes.
        """
        if not isinstance(cache, UserCache):
            raise TypeError(f"UserLayer.backward needs the cache its forward returned, got {type(cache).__name__}")
        du = self._to_user(dout, "out")
        handed_dout = self._hand("dout", du)
        try:
            returned = self._backward(du, cache.user)
        except (Exception, SystemExit) as exc:
            raise self._user_error("backward", self.impl.ref.backward, exc) from exc
        if self._audit is not None:
            self._check_handed((handed_dout, *cache.handed), "backward")
        if not isinstance(returned, tuple | list) or len(returned) != 3:
            raise ContractError(
                f"the implementation's backward must return (dx, dw, db); it returned {_describe(returned)}",
                tensor="dx",
            )
        dims = layer_dims(cache.x_shape, cache.w_shape, self.stride, self.padding)
        for name, tensor, value in zip(("dx", "dw", "db"), ("x", "w", "b"), returned, strict=True):
            self._check_array(name, name, tensor, value, dims)
        dx, dw, db = returned
        return self._to_engine(dx, "x"), self._to_engine(dw, "w"), np.array(db, copy=True)

    # -- auditing (used by convcheck.contract) -------------------------------------------------------------

    @contextmanager
    def auditing(self) -> Iterator[list[str]]:
        """While active, forward and backward also record in-place modification of the arrays handed to the
        user (including forward's arguments modified later by backward) as messages in the yielded list."""
        self._audit = []
        try:
            yield self._audit
        finally:
            self._audit = None

    def user_index(self, tensor: str, index: tuple[int, ...]) -> tuple[int, ...]:
        """An NHWC index of ``tensor`` (``x``, ``w``, ``b``, ``out``) as an index into the user's layout."""
        if self.layout is Layout.NHWC or tensor not in _TO_USER:
            return index
        return tuple(index[axis] for axis in _TO_USER[tensor])

    # -- helpers -------------------------------------------------------------------------------------------

    def _to_user(self, array: np.ndarray, tensor: str) -> np.ndarray:
        if self.layout is Layout.NCHW:
            return array.transpose(_TO_USER[tensor]).copy()  # ndarray.copy is C-order: always a fresh array
        return array.copy()

    def _to_engine(self, array: np.ndarray, tensor: str) -> np.ndarray:
        if self.layout is Layout.NCHW:
            return array.transpose(_TO_ENGINE[tensor]).copy()
        return np.array(array, copy=True)

    def _hand(self, name: str, array: np.ndarray) -> _Handed:
        return _Handed(name, array, array.copy() if self._audit is not None else None)

    def _check_handed(self, handed: tuple[_Handed, ...], role: str) -> None:
        assert self._audit is not None
        for item in handed:
            if item.pristine is None or _same(item.array, item.pristine):
                continue
            changed = np.argwhere(~_equal_mask(item.array, item.pristine))
            first = tuple(int(i) for i in changed[0])
            kept = " (kept in its cache from forward)" if role == "backward" and item.name != "dout" else ""
            at = f"{item.name}[{', '.join(map(str, first))}]"
            self._audit.append(
                f"{role} modified its argument {item.name}{kept} in place ({len(changed)} of "
                f"{item.array.size} entries changed, first at {at} in the {self.layout.value} layout): "
                "the caller's array must stay as it was; copy before modifying"
            )
            item.pristine = item.array.copy()  # report later modifications separately

    def _check_array(self, key: str, name: str, tensor: str, value: object, dims: dict[str, int]) -> None:
        if not isinstance(value, np.ndarray):
            wanted = expected_shape(tensor, self.layout, dims)
            raise ContractError(
                f"{name} must be a numpy array of shape {wanted}; the implementation returned {_describe(value)}",
                tensor=key,
            )
        problem = shape_problem(name, tensor, value.shape, self.layout, dims)
        if problem is not None:
            raise ContractError(problem, tensor=key)

    def _user_error(self, role: str, function: str, exc: BaseException) -> UserCodeError:
        return UserCodeError(role, function, exc, innermost_frame(exc.__traceback__, self.impl.roots))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


def _equal_mask(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b) | (np.isnan(a) & np.isnan(b))


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    if isinstance(value, tuple | list):
        inner = ", ".join(_describe(v) for v in value[:4]) + (", …" if len(value) > 4 else "")
        return f"a {type(value).__name__} of {len(value)} ({inner})"
    if value is None:
        return "None"
    return f"a {type(value).__module__}.{type(value).__qualname__}".replace("builtins.", "")
