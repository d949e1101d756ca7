"""How config problems are told: :class:`ConfigError`, and the helpers every stage's messages share.

A message quotes the user's value (cut to one readable line), describes a wrong value by its type, and
suggests the closest allowed name ("did you mean"), the same way whichever stage of the loader found it.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigError:
    """One problem in a config file, with everything needed to fix it.

    ``line``/``column`` are 1-based (from the YAML marks; problems with the file as a whole point at 1:1).
    ``field`` is a dotted path such as ``checks[2].stride``; ``(file)``, ``(yaml)`` and ``(top level)`` name
    problems with the file, its syntax and its overall structure.
    """

    file: str
    line: int
    column: int
    field: str
    message: str
    allowed: str

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}:{self.column}: {self.field}: {self.message}; allowed: {self.allowed}"
        return plain(" ".join(text.splitlines()))


@dataclass(frozen=True)
class ConfigWarning:
    """A valid value that is probably a mistake (it makes a check meaningless): the run goes on, and the CLI
    prints it. Located like a :class:`ConfigError`."""

    file: str
    line: int
    column: int
    field: str
    message: str

    def __str__(self) -> str:
        return plain(
            " ".join(f"{self.file}:{self.line}:{self.column}: {self.field}: warning: {self.message}".split("\n"))
        )


def plain(text: str) -> str:
    """``text`` with every non-printable character escaped (``\x1b``): a file name or a value quoted in a
    message reaches a terminal, which must never receive an escape sequence from a config."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def file_error(file: str, message: str, allowed: str = "an existing YAML config file or folder") -> ConfigError:
    """A problem with the file as a whole (it cannot be read, it is empty…), reported at 1:1."""
    return ConfigError(file, 1, 1, "(file)", message, allowed)


def position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of ``offset`` in ``text``."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def join(prefix: str, key: str) -> str:
    """The field ``key`` of ``prefix`` (``checks[2]`` + ``stride`` → ``checks[2].stride``)."""
    return f"{prefix}.{key}" if prefix else key


def describe(value: object) -> str:
    """How a wrong value is shown in a message: its type and, for scalars, the value.

    ``value`` is a plain YAML value as the tree holds it: lists are tuples, mappings are dicts.
    """
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {shorten(value)!r}"
    if isinstance(value, tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def shorten(text: str, limit: int = 40) -> str:
    """``text``, cut to ``limit`` characters: messages quote user values and must stay one readable line."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Words people reach for, mapped to our names: difflib cannot guess that kernel_size means filter_size.
SYNONYMS = {
    "kernel": "filter_size",
    "kernel_size": "filter_size",
    "filter": "filter_size",
    "k": "filter_size",
    "pad": "padding",
    "in_channels": "in_depth",
    "out_channels": "out_depth",
    "channels": "in_depth",
    "filters": "out_depth",
    "num_filters": "out_depth",
    "batch_size": "batch",
    "n": "batch",
    "height": "in_height",
    "width": "in_width",
    "s": "stride",
    "p": "padding",
    "act": "activation",
    "implementation": "impl",
    "module": "impl",
    "check": "checks",
    "default": "defaults",
}


def hint(word: str, candidates: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the candidate closest to ``word``, or ``""``."""
    lowered = word.lower()
    by_lower = {candidate.lower(): candidate for candidate in candidates}
    if lowered in by_lower:
        match: str | None = by_lower[lowered]
    elif SYNONYMS.get(lowered) in candidates:
        match = SYNONYMS[lowered]
    else:
        close = difflib.get_close_matches(lowered[:100], list(by_lower), n=1, cutoff=0.6)
        match = by_lower[close[0]] if close else None
    return f" (did you mean {match!r}?)" if match is not None else ""
