"""What ``convcheck validate`` can say about a user's implementation without running any of its code.

The source is read and parsed with ``ast``, never imported: the file exists, it parses, and it defines the
named forward and backward functions with parameters that can take the call convcheck makes
(``forward(x, w, b, stride, padding)``, or ``forward(x, w, b, conv_param)`` for ``signature: cs231n``, and
``backward(dout, cache)``). Each problem carries the file and line. What only running can tell (an exception at
import time, a function made at run time) is left to ``convcheck run``: a name bound some other way (an import,
an assignment) is accepted as it is.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from convcheck.geometry import Window
from convcheck.spec import ImplRef, Signature
from convcheck.user.arguments import refused_keywords
from convcheck.user.errors import display_path

__all__ = ["StaticProblem", "keyword_problems", "static_problems"]


@dataclass(frozen=True)
class StaticProblem:
    """One problem of an implementation's source: where it is and what is wrong. ``str()`` is one line."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


def _source_file(ref: ImplRef) -> Path | None:
    """The file ``ref`` names: a path (resolved against its config's folder) or a top-level module's source;
    None for a module that cannot be found without importing a parent package (``run`` will say)."""
    if ref.module.endswith(".py") or "/" in ref.module:
        base = ref.base_dir if ref.base_dir is not None else Path.cwd()
        return (base / Path(ref.module).expanduser()).resolve()
    if "." in ref.module:
        return None
    spec = importlib.util.find_spec(ref.module)
    origin = spec.origin if spec is not None else None
    return Path(origin) if origin and origin.endswith(".py") else None


def _bindings(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """Names bound at a module's top level (into ``if``/``try``/``with`` blocks, not into functions)."""
    found: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value
        elif isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(node.target, ast.Name):
            found[node.target.id] = node
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                found[(alias.asname or alias.name).partition(".")[0]] = node
        elif isinstance(node, ast.If | ast.Try | ast.With | ast.For | ast.While):
            blocks = [node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])]
            blocks += [h.body for h in getattr(node, "handlers", [])]
            for block in blocks:
                found.update(_bindings(block))
    return found


def _binds(args: ast.arguments, count: int) -> bool:
    """Whether ``count`` positional arguments can be bound to these parameters."""
    positional = len(args.posonlyargs) + len(args.args)
    required = positional - len(args.defaults)
    kw_required = any(default is None for default in args.kw_defaults)
    return not kw_required and required <= count and (count <= positional or args.vararg is not None)


def _check_function(
    binding: ast.AST | None, name: str, role: str, call: str, count: int, file: str
) -> list[StaticProblem]:
    if binding is None:
        return [StaticProblem(file, None, f"defines no function {name!r} (the {role} function)")]
    args = binding.args if isinstance(binding, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) else None
    if isinstance(binding, ast.ClassDef) or args is None:
        return []  # bound another way (a class, an import, an assignment): only running it can tell
    if not _binds(args, count):
        shown = ast.unparse(args)
        message = f"{role} function {name}({shown}) cannot be called as {call}"
        if role == "forward" and count == 5 and _binds(args, 4):
            message += " (a CS231n-style function? add signature: cs231n to the impl mapping)"
        elif role == "forward" and count == 4 and _binds(args, 5):
            message += " (it takes stride and padding: use signature: convcheck, the default)"
        return [StaticProblem(file, getattr(binding, "lineno", None), message)]
    return []


def static_problems(ref: ImplRef) -> list[StaticProblem]:
    """The problems of ``ref``'s source found by reading it (empty when none is found or it cannot be read
    without running code, as for a submodule of a package).

    Args:
        ref: the ``impl:`` of a check (a ``.py`` path or a module name, function names and signature).
    Returns:
        One ``StaticProblem`` per problem: a missing file, a syntax error (its line), a missing function, a
        function whose parameters cannot take the call its signature makes (the line of its ``def``).
    """
    path = _source_file(ref)
    if path is None:
        return []
    shown = display_path(path)
    if not path.is_file():
        return [StaticProblem(shown, None, f"implementation file {ref.module} not found")]
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        return [StaticProblem(shown, exc.lineno, f"{type(exc).__name__}: {exc.msg}")]
    except (OSError, ValueError) as exc:
        return [StaticProblem(shown, None, f"cannot read the implementation: {exc}")]
    bound = _bindings(tree.body)
    if ref.framework is not None:  # a torch or JAX layer is one object; its kind shows only when it is imported
        name = ref.function or ref.class_name
        role = "function" if ref.function is not None else "class"
        return [] if name in bound else [StaticProblem(shown, None, f"defines no {role} {name!r} (the {role} named)")]
    cs231n = ref.signature is Signature.CS231N
    forward_call = "forward(x, w, b, conv_param)" if cs231n else "forward(x, w, b, stride, padding)"
    problems = [
        *_check_function(bound.get(ref.forward), ref.forward, "forward", forward_call, 4 if cs231n else 5, shown),
        *_check_function(bound.get(ref.backward), ref.backward, "backward", "backward(dout, cache)", 2, shown),
    ]
    return problems


def keyword_problems(ref: ImplRef, window: Window) -> list[StaticProblem]:
    """The check needs ``dilation`` or ``groups`` (not 1) and the forward's ``def`` takes no such keyword (nor
    ``**kwargs``): what ``run`` would refuse, said by ``validate``. Empty when the source cannot say (a function
    bound another way, a framework layer, the CS231n signature, which gets them in ``conv_param``)."""
    path = _source_file(ref) if ref.framework is None and ref.signature is Signature.CONVCHECK else None
    if path is None or not path.is_file():
        return []
    found = _forward_def(path, path.stat().st_mtime_ns, ref.forward)
    if found is None:
        return []
    line, accepted, shown = found
    refused = refused_keywords(accepted, shown, window)
    return [] if refused is None else [StaticProblem(display_path(path), line, refused)]


@functools.lru_cache(maxsize=64)
def _forward_def(path: Path, mtime_ns: int, name: str) -> tuple[int, list[str] | None, str] | None:
    """The line, keyword parameters (None with ``**kwargs``) and parameter text of ``name``'s ``def`` in the file:
    read once per file version, however many checks of a sweep ask (``mtime_ns`` is part of the key)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, OSError, ValueError):
        return None  # static_problems reports it
    binding = _bindings(tree.body).get(name)
    if not isinstance(binding, ast.FunctionDef | ast.AsyncFunctionDef):
        return None
    args = binding.args
    accepted = None if args.kwarg is not None else [a.arg for a in (*args.args, *args.kwonlyargs)]
    return binding.lineno, accepted, f"({ast.unparse(args)})"
