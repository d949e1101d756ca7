"""What run.py's benchmarks share: where this tree and its interpreter are, the baseline the sweeps compare with,
the user's layer they check, how they time candidates and commands (interleaved, best run of each), compiled bytecode
for the processes they start, and torch where it is installed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
ROOT = HERE.parent
#: The revision the ``sweep`` benchmark compares with by default: main before the speed work on user layers.
BASELINE = "b1caa8f"
#: The user's numpy layer of the ``user`` and ``user-sweep`` benchmarks.
USER_LAYER = ROOT / "examples" / "im2col_nhwc.py"


def convcheck_command(root: Path) -> tuple[list[str], dict[str, str]]:
    """``python -m convcheck`` run from the source tree at ``root`` (argv prefix and environment).

    ``command_best`` runs it with ``root`` as the working directory too: ``-m`` and ``-c`` put the working
    directory first on ``sys.path``, so run from this checkout a baseline's PYTHONPATH alone would still import
    this checkout's convcheck (which made earlier baseline rows compare this tree with itself)."""
    return [PYTHON, "-m", "convcheck"], {**os.environ, "PYTHONPATH": str(root)}


def compiled(env: dict[str, str], cache: str, *roots: Path) -> dict[str, str]:
    """``env`` for processes that read compiled bytecode, as an installed package's do (pip compiles at install):
    the trees at ``roots`` compiled now into the folder ``cache`` (nothing written into a source tree), whatever
    PYTHONDONTWRITEBYTECODE says. Without it each process of a run would compile every module it imports from
    source, and a tree whose workers import convcheck anew would pay it once per worker."""
    env = {key: value for key, value in env.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = cache
    for root in roots:
        subprocess.run([PYTHON, "-m", "compileall", "-q", str(root / "convcheck")], env=env, check=True)
    return env


# -- timing ----------------------------------------------------------------------------------------------------


def interleaved(
    candidates: dict[str, Callable[[], object]],
    rounds: int,
    every: dict[str, int] | None = None,
    burst: int = 3,
    bursts: dict[str, int] | None = None,
) -> dict:
    """Best wall time (seconds) of each candidate over ``rounds`` rounds, after a warm-up.

    Each round runs every candidate ``burst`` times in a row: the candidates alternate within seconds, while the
    first run of a burst absorbs what the previous candidate left behind (its thread pools still spinning, a cold
    cache). ``every[name] = m`` runs that candidate only every m-th round (slow baselines); ``bursts[name]``
    overrides ``burst`` for one candidate (a fast one beside a slow one).
    """
    every, bursts = every or {}, bursts or {}
    for fn in candidates.values():
        fn()
    best = dict.fromkeys(candidates, float("inf"))
    for index in range(rounds):
        for name, fn in candidates.items():
            if index % every.get(name, 1):
                continue
            for _ in range(bursts.get(name, burst)):
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def command_best(commands: dict[str, tuple[list[str], dict[str, str] | None]], rounds: int) -> dict:
    """Best wall time of each command ``(argv, environment)`` (a subprocess), interleaved; each must exit 0.

    (Not CPU time: ``convcheck run``'s workers die with it rather than being reaped, so the CPU they and the
    checks' processes used never reaches this process's ``RUSAGE_CHILDREN``.)
    """
    best = dict.fromkeys(commands, float("inf"))
    for _ in range(rounds):
        for name, (argv, env) in commands.items():
            start = time.perf_counter()
            where = (env or {}).get("PYTHONPATH")  # the tree on the path is the working directory too
            done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=where)
            elapsed = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}")
            best[name] = min(best[name], elapsed)
    return best


SKIP_TORCH = "skipped: torch is not installed"


def torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch
