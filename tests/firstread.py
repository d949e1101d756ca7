"""Expensive per-item results that a module's tests share, each computed the first time a test reads it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

Key = TypeVar("Key")
Value = TypeVar("Value")


class RunOnFirstRead(dict[Key, Value]):
    """A dict whose missing entry ``key`` is ``run(key)``, computed when first read and kept.

    For a module fixture of results keyed by item: xdist shares a module's tests out between its workers, each
    with a fixture of its own, and with every item run up front each worker would run them all; run on first
    read, a worker runs only the items its tests read. A test that needs every item reads each key itself."""

    def __init__(self, run: Callable[[Key], Value]) -> None:
        super().__init__()
        self._run = run

    def __missing__(self, key: Key) -> Value:
        value = self[key] = self._run(key)
        return value
