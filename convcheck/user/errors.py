"""What a user's implementation can do wrong, as typed errors, and how any exception is told to the user.

All derive from ``UserFault`` (one-paragraph ``str()``, no traceback): ``ImplementationError`` (it cannot be
loaded), ``UserCodeError`` (it raised), ``ContractError`` (it returned something the contract forbids; it
carries the ``Finding`` the contract reports). ``describe_exception`` is the one place an exception becomes the
paragraph of an error row.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from convcheck.results import Finding, FindingKind

__all__ = [
    "ContractError",
    "Frame",
    "ImplementationError",
    "UserCodeError",
    "UserFault",
    "describe_exception",
    "display_path",
    "exception_name",
    "innermost_frame",
    "is_library",
    "shorten",
]

_MESSAGE_LIMIT = 400  # characters of a user's exception message kept in our one-paragraph messages
_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # all of convcheck, not only this package
_STDLIB_DIR = Path(os.__file__).resolve().parent


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


def exception_lineage(exc: BaseException) -> tuple[str, ...]:
    """The names of ``exc``'s class and its base classes: a config's ``expected_error`` names any of them."""
    return tuple(cls.__name__ for cls in type(exc).__mro__)


class UserCodeError(UserFault):
    """The user's ``forward`` or ``backward`` raised. Carries the exception's type and message and the user's
    innermost own frame (not convcheck's, not numpy's)."""

    def __init__(self, role: str, function: str, exc: BaseException, frame: Frame | None) -> None:
        self.role = role  # "forward" | "backward"
        self.function = function  # the user's function name
        self.exc_type = exception_name(exc)
        self.exc_lineage = exception_lineage(exc)
        self.exc_message = shorten(str(exc))
        self.frame = frame
        where = f" at {frame.describe()}" if frame else ""
        detail = f": {self.exc_message}" if self.exc_message else ""
        named = role if function == role else f"{role} ({function})"
        super().__init__(f"the implementation's {named} raised {self.exc_type}{detail}{where}")

    @classmethod
    def from_parts(
        cls,
        role: str,
        function: str,
        exc_type: str,
        message: str,
        frame: Frame | None,
        lineage: tuple[str, ...] = (),
    ) -> UserCodeError:
        """The same error for an exception raised in another process, told by its type's name (and its base
        classes' names, ``lineage``) and message."""
        error = cls.__new__(cls)
        error.exc_lineage = lineage or (exc_type,)
        error.role, error.function, error.exc_type, error.exc_message, error.frame = (
            role,
            function,
            exc_type,
            shorten(message),
            frame,
        )
        where = f" at {frame.describe()}" if frame else ""
        detail = f": {error.exc_message}" if error.exc_message else ""
        named = role if function == role else f"{role} ({function})"
        Exception.__init__(error, f"the implementation's {named} raised {exc_type}{detail}{where}")
        return error


class ContractError(UserFault):
    """The user's code returned something the contract forbids: not a tuple, not an array, a wrong shape.

    ``tensor`` names what was wrong (``out``, ``dx``, ``dw``, ``db``, ``cache``); ``finding`` is what the
    contract reports: ``kind`` (``OTHER`` unless the raiser knows better) and ``shape``, the shape returned in
    the user's layout, for a ``SHAPE`` error."""

    def __init__(
        self,
        message: str,
        *,
        tensor: str | None = None,
        kind: FindingKind = FindingKind.OTHER,
        shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(message)
        self.tensor = tensor
        self.finding = Finding(kind, message, tensor=tensor, shape=shape)


def exception_name(exc: BaseException) -> str:
    """``ValueError`` for builtins, ``package.module.Error`` for anything else."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def shorten(text: str) -> str:
    """``text`` on one line, cut to a length that keeps our messages one paragraph."""
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the working directory when it lies below it, else as given."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else str(path)
    except (OSError, ValueError):
        return str(path)


def is_library(path: Path) -> bool:
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
            if path is not None and is_library(path):
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


def describe_exception(exc: BaseException, *, located: bool = False) -> str:
    """One paragraph for the user about an exception that stopped a check (never a traceback).

    A ``UserFault`` is its own message (it already names the user's file and line). Anything else is its type
    and message: as ``TypeError: text`` inside a check (``located=False``, ``run_check``'s error rows), or, for
    what escaped a check (``located=True``, the batch's guard), as ``the check failed with TypeError: text at
    file:line``, the innermost frame outside convcheck, numpy and the standard library when there is one;
    running out of memory and ``sys.exit`` get their own advice there.
    """
    if isinstance(exc, UserFault):
        return str(exc)
    name = type(exc).__name__
    if not located:
        text = str(exc)
        return f"{name}: {text}" if text else name
    text = " ".join(str(exc).split())
    detail = f": {text}" if text else ""
    if isinstance(exc, MemoryError):
        return (
            f"ran out of memory ({name}{detail}); try a smaller layer (batch, image size, channels) or method: sampled"
        )
    if isinstance(exc, SystemExit):
        return f"something called sys.exit({exc.code!r}) during the check"
    frame = innermost_frame(exc.__traceback__)
    if frame is not None:
        where = f" at {frame.describe()}"
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {display_path(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return f"the check failed with {name}{detail}{where}"
