"""The user's module compiled once per worker, not once per check: its code object crosses the fork in memory.

Each check loads the user's file afresh in a fresh process, and compiling it is most of that (about 3 ms for a
small layer where no ``__pycache__`` may be written, e.g. ``PYTHONDONTWRITEBYTECODE``). Compiling runs none of the
file's code, so the fork server may do it: ``code_for`` compiles the file here exactly as the import system does
(``compile(source, path, "exec", dont_inherit=True)``) and keeps the code per (path, modification time, size);
the child, forked with it in its memory, hands it to the import system for that path (``use_in_child``) instead of
compiling again. Nothing is written to disk, so no other process (another check's layer included) can change the
code a later check runs. A file that cannot be compiled here (a syntax error, too large) is left to the child,
which reports it as before.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
from pathlib import Path
from types import CodeType
from typing import Any

from convcheck.spec import ImplRef

__all__ = ["MAX_SOURCE_BYTES", "code_for", "use_in_child"]

MAX_SOURCE_BYTES = 2**20  # larger files are compiled by the child
_CACHE: dict[tuple[str, int, int], CodeType] = {}


def _path_of(ref: ImplRef) -> Path | None:
    """The file ``ref`` names, resolved as the loader resolves it (None for a module name)."""
    module = ref.module
    if not (module.endswith(".py") or "/" in module):
        return None
    base = ref.base_dir if ref.base_dir is not None else Path.cwd()
    return (base / Path(module).expanduser()).resolve()


def code_for(ref: ImplRef) -> tuple[str, CodeType] | None:
    """The path and code object of ``ref``'s file, compiled here (cached); None where the child should compile."""
    path = _path_of(ref)
    if path is None:
        return None
    try:
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key in _CACHE:
            return key[0], _CACHE[key]
        if not path.is_file() or stat.st_size > MAX_SOURCE_BYTES:
            return None
        code = compile(path.read_bytes(), key[0], "exec", dont_inherit=True)
    except (OSError, SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    for old in [k for k in _CACHE if k[0] == key[0]]:
        del _CACHE[old]
    _CACHE[key] = code
    return key[0], code


def use_in_child(compiled: tuple[str, CodeType] | None) -> None:
    """In the child, before the user's module is imported: the import system gets ``compiled``'s code for its
    path instead of compiling the file (every other module is compiled or read from its cache as usual)."""
    if compiled is None:
        return
    path, code = compiled
    loader = importlib.machinery.SourceFileLoader
    original = loader.get_code

    def get_code(self: Any, fullname: str) -> CodeType | None:
        if getattr(self, "path", None) == path:
            return code
        return original(self, fullname)

    with contextlib.suppress(AttributeError, TypeError):
        loader.get_code = get_code  # type: ignore[method-assign]
