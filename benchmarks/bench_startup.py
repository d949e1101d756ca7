"""The ``startup`` benchmark: ``python -m convcheck --help`` against ``python -c "import numpy, typer, rich, yaml"``
and a one-layer ``convcheck run`` (subprocesses from this source tree, reading compiled bytecode), with the floor
of any Typer command line's ``--help`` and convcheck's own share of it."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from harness import PYTHON, ROOT, command_best, compiled, convcheck_command
from rows import Row


def bench_startup(rounds: int) -> list[Row]:
    # Both commands read compiled bytecode, as from an installed package: a fresh cache folder (nothing is
    # written into the source tree), filled by one untimed run of each, whatever PYTHONDONTWRITEBYTECODE says.
    with tempfile.TemporaryDirectory() as cache:
        prefix, env = convcheck_command(ROOT)
        env = compiled(env, cache)
        tiny = Path(cache) / "tiny.yaml"
        tiny.write_text(TINY_CONFIG)
        commands = {
            "convcheck --help": ([*prefix, "--help"], env),
            "convcheck run tiny": ([*prefix, "run", str(tiny), "--quiet"], env),
            "import numpy, typer, rich, yaml": ([PYTHON, "-c", "import numpy, typer, rich, yaml"], env),
            # The floor of any Typer command line's --help: the interpreter and Typer (with the click it
            # bundles and the standard library they pull in), nothing of convcheck's.
            "import typer": ([PYTHON, "-c", "import typer"], env),
            # A Typer command line's --help at its smallest: two empty commands, help without Rich as convcheck's.
            "two-command Typer app --help": ([PYTHON, "-c", SMALLEST_APP, "--help"], env),
        }
        command_best(commands, 1)
        best = command_best(commands, rounds)
        share = _help_share(env, rounds)
        probe = subprocess.run(
            [PYTHON, "-c", "import sys, convcheck, convcheck.cli; print(int('numpy' in sys.modules))"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
    numpy_loaded = probe.stdout.strip() == "1"
    ratio = best["convcheck --help"] / best["import numpy, typer, rich, yaml"]
    return [
        Row("startup", "python -m convcheck --help", 1e3 * best["convcheck --help"], "ms"),
        Row(
            "startup",
            "python -c 'import numpy, typer, rich, yaml'",
            1e3 * best["import numpy, typer, rich, yaml"],
            "ms",
        ),
        Row("startup", "--help / import line", ratio, "×", "≤ 0.5", ratio <= 0.5),
        Row(
            "startup",
            "convcheck run, one 1×4×4×1 layer",
            1e3 * best["convcheck run tiny"],
            "ms",
            note="a whole command: parsing (Typer), the config, numpy, one check, the table",
        ),
        Row(
            "startup",
            "floor: python -c 'import typer' / import line",
            best["import typer"] / best["import numpy, typer, rich, yaml"],
            "×",
            note=f"{1e3 * best['import typer']:.1f} ms: a Typer command line's --help cannot cost less",
        ),
        Row(
            "startup",
            "floor: a two-command Typer app's --help / import line",
            best["two-command Typer app --help"] / best["import numpy, typer, rich, yaml"],
            "×",
            note=f"{1e3 * best['two-command Typer app --help']:.1f} ms: Typer's own parsing and help writing, "
            "with Rich off as convcheck's",
        ),
        Row(
            "startup",
            "convcheck's own share of --help, in one process",
            1e3 * share,
            "ms",
            note="importing convcheck.cli once Typer is imported, and writing the help; best of the rounds",
        ),
        Row(
            "startup",
            "numpy imported by `import convcheck, convcheck.cli`",
            float(numpy_loaded),
            "bool",
            "0 (import numpy only when a check runs)",
            not numpy_loaded,
        ),
    ]


SMALLEST_APP = """
import typer
app = typer.Typer(rich_markup_mode=None, pretty_exceptions_enable=False)
@app.command()
def run() -> None:
    "Run."
@app.command()
def validate() -> None:
    "Validate."
app()
"""

HELP_SHARE = """
import contextlib, io, sys, time
import typer
start = time.perf_counter()
import convcheck.cli
sys.argv = ["convcheck", "--help"]
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    convcheck.cli.entry()
print(time.perf_counter() - start)
"""


def _help_share(env: dict[str, str], rounds: int) -> float:
    """What convcheck adds to ``--help`` beyond Python and Typer: its own imports and the help's writing, timed in
    one process after ``import typer`` (best of ``rounds`` fresh processes)."""
    best = float("inf")
    for _ in range(rounds):
        done = subprocess.run(
            [PYTHON, "-c", HELP_SHARE], capture_output=True, text=True, env=env, cwd=env["PYTHONPATH"], check=True
        )
        best = min(best, float(done.stdout.split()[-1]))
    return best


TINY_CONFIG = """\
# The smallest check there is (generated by benchmarks/run.py): what `convcheck run` costs besides the checking.
checks:
  - name: tiny
    batch: 1
    in_height: 4
    in_width: 4
    in_depth: 1
    out_depth: 1
    filter_size: 1
"""
