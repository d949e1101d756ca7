"""Load config files into validated, expanded :class:`~convcheck.spec.CheckSpec` lists: the pipeline's driver.

:func:`load_text` runs the stages in order on one document: :mod:`~convcheck.config.tree` (YAML → located
values), :mod:`~convcheck.config.document` (defaults and checks), :mod:`~convcheck.config.values` (each key
parsed) and :mod:`~convcheck.config.expand` (sweeps → specs). :func:`load_file` and :func:`load_configs` add
reading files and folders. Errors are values, never exceptions: the CLI decides what they mean (it exits 2
and runs nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from convcheck.config.document import split_document
from convcheck.config.errors import ConfigError, ConfigWarning, file_error, position
from convcheck.config.expand import Expansion
from convcheck.config.paths import MAX_CONFIG_BYTES, path_kind, read_config_bytes
from convcheck.config.tree import Doc, read_tree
from convcheck.config.values import check_settings, parse_settings
from convcheck.spec import CheckSpec


@dataclass(frozen=True)
class ConfigLoad:
    """The outcome of loading configs. A file with any error contributes errors only, never specs."""

    specs: tuple[CheckSpec, ...] = ()
    errors: tuple[ConfigError, ...] = ()
    files: tuple[str, ...] = ()  # the config files that were read, in order
    warnings: tuple[ConfigWarning, ...] = ()  # valid values that make a check meaningless (the CLI prints them)

    @property
    def ok(self) -> bool:
        return not self.errors


def load_configs(paths: Sequence[str | Path]) -> ConfigLoad:
    """Load every config in ``paths`` (files, or folders searched recursively for ``*.yaml``/``*.yml``).

    Each file is loaded on its own: a broken file contributes its errors and the others still load.

    Args:
        paths: config files or folders; a file listed twice is read once.
    Returns:
        All specs (in file order, then check order, then sweep order) and all errors.
    """
    files, errors = _discover(paths)
    loads = [load_file(path) for path in files]
    return ConfigLoad(
        specs=tuple(spec for load in loads for spec in load.specs),
        errors=tuple(errors) + tuple(error for load in loads for error in load.errors),
        files=tuple(str(path) for path in files),
        warnings=tuple(warning for load in loads for warning in load.warnings),
    )


def load_file(path: str | Path) -> ConfigLoad:
    """Load one config file. ``impl`` paths in it are relative to its folder.

    A file larger than ``MAX_CONFIG_BYTES``, and anything that is not a regular file (a FIFO, a device such as
    ``/dev/zero``, a folder), is refused before a byte of it is parsed.
    """
    path = Path(path)
    name = str(path)
    data = read_config_bytes(path)
    if isinstance(data, ConfigError):
        return ConfigLoad(errors=(data,), files=(name,))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, column = position(data[: exc.start].decode("utf-8", "replace"), exc.start)
        error = ConfigError(name, line, column, "(file)", "the file is not UTF-8 text", "a UTF-8 YAML file")
        return ConfigLoad(errors=(error,), files=(name,))
    load = load_text(text, file=name, base_dir=path.resolve().parent)
    return ConfigLoad(specs=load.specs, errors=load.errors, files=(name,), warnings=load.warnings)


def load_text(text: str, file: str = "<string>", base_dir: Path | None = None) -> ConfigLoad:
    """Load a config from ``text``; ``file`` names it in messages, ``base_dir`` (None: cwd) anchors ``impl``.

    Never raises: any text at all gives specs or errors.
    """
    doc = Doc(file, base_dir if base_dir is not None else Path.cwd())
    expansion = Expansion(doc)
    try:
        errors = _load_document(text, doc, expansion)
    except RecursionError:
        errors = [file_error(file, "the document is nested too deeply", "a config nested a few levels deep")]
    except Exception as exc:  # last resort: the loader must never show a traceback; tests assert this is unused
        errors = [file_error(file, f"internal error while reading the config: {type(exc).__name__}: {exc}")]
    ordered = sorted(errors, key=lambda error: (error.line, error.column))  # stable: file order, then found order
    if errors:
        return ConfigLoad(errors=tuple(ordered), files=(file,))
    warnings = sorted(expansion.warnings, key=lambda warning: (warning.line, warning.column))
    return ConfigLoad(specs=tuple(expansion.specs), files=(file,), warnings=tuple(warnings))


def _load_document(text: str, doc: Doc, expansion: Expansion) -> list[ConfigError]:
    """The stages on one document, into ``expansion``; errors in the order found (each check's right after its
    own parsing)."""
    root, errors = read_tree(text, doc)
    if root is None:
        return errors
    document = split_document(root, doc)
    errors += document.errors
    defaults = parse_settings(document.defaults, "defaults", doc, in_defaults=True)
    errors += defaults.errors
    for check in document.checks:
        settings, check_errors = check_settings(check, document.defaults, defaults, doc)
        errors += check_errors
        if settings is not None:
            errors += expansion.add(check, settings)
    return errors + expansion.duplicate_names()


def _discover(paths: Sequence[str | Path]) -> tuple[list[Path], list[ConfigError]]:
    """Config files named by ``paths``, folders expanded recursively in sorted order, each file once."""
    files: list[Path] = []
    errors: list[ConfigError] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        kind = path_kind(path)
        if kind == "folder":
            found = sorted(p for p in path.rglob("*") if _is_config(p, path))
            if not found:
                errors.append(file_error(str(path), "the folder contains no *.yaml or *.yml files"))
        elif kind is None:
            found = [path]
        else:
            found = []
            errors.append(file_error(str(path), kind))
        for item in found:
            if item.resolve() not in seen:
                seen.add(item.resolve())
                files.append(item)
    return files, errors


def _is_config(path: Path, folder: Path) -> bool:
    """A YAML file of ``folder``, not inside a hidden folder (``.git``, ``.venv``…) nor hidden itself."""
    hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
    return path.suffix in (".yaml", ".yml") and not hidden and path.is_file()


__all__ = ["MAX_CONFIG_BYTES", "ConfigLoad", "load_configs", "load_file", "load_text"]
