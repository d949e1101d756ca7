"""One check of a user's layer with the layer in its own fresh process, and the verdict computed here.

``isolated_check`` is ``checker.run_check`` with a ``RemoteLayer``: the engine, the tolerances, the contract and
the verdict run in this process on the raw arrays the child returns, and the child (forked for this check alone)
is killed when the check ends. A built-in check runs as it always does.
"""

from __future__ import annotations

from convcheck.checker import default_max_memory, run_check
from convcheck.isolation.remote import remote_layer
from convcheck.results import CheckResult
from convcheck.spec import CheckSpec

__all__ = ["isolated_check", "runs_user_code"]


def runs_user_code(spec: CheckSpec) -> bool:
    """Whether checking ``spec`` calls a user's functions (not convcheck's built-in layer)."""
    return spec.impl is not None and spec.impl.module != "builtin"


def isolated_check(spec: CheckSpec) -> CheckResult:
    """``run_check(spec)``, the user's functions in a fresh process limited to ``max_memory`` (see the module
    docstring). Module-level, so that ``--jobs`` workers can receive it by name."""
    if not runs_user_code(spec):
        return run_check(spec)
    limit = spec.max_memory if spec.max_memory is not None else default_max_memory()
    with remote_layer(spec, limit) as layer:
        return run_check(spec, layer=layer)
