"""The options of ``convcheck run`` as one typed value (``RunOptions``), and what is wrong with them before
anything runs (``run_option_problems``). Imported only once ``run`` is called: a frozen dataclass of twenty fields
costs ``convcheck --help`` time it does not need.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from convcheck.options import Annotate, Color

if TYPE_CHECKING:
    from convcheck.spec import DType, Method


@dataclass(frozen=True)
class RunOptions:
    """The options of ``convcheck run``, as given on the command line (choices already parsed)."""

    configs: list[Path] | None
    json_path: str | None
    junit: Path | None
    html: Path | None
    method: Method | None
    seed: int | None
    dtype: DType | None
    impl: str | None
    jobs: int
    in_process: bool
    scheduler: str | None
    fail_fast: bool
    strict: bool
    quiet: bool
    verbose: bool
    heatmap: bool
    plot: Path | None
    plot_all: bool
    annotate: Annotate
    color: Color

    @property
    def json_only(self) -> bool:
        """``--json -``: the JSON goes to stdout, so the table goes to stderr."""
        return self.json_path == "-"


def run_option_problems(options: RunOptions) -> list[str]:
    """What is wrong with ``convcheck run``'s options, in order (empty: nothing), before anything runs.

    An output path that cannot be written (its folder cannot be created or written, it is a folder…) is a problem;
    a device or FIFO such as /dev/null is fine (it is written into).
    """
    from convcheck.render.files import output_problem

    problems = []
    if options.plot is not None and importlib.util.find_spec("matplotlib") is None:
        problems.append(
            "--plot needs matplotlib, which is not installed; install the extra: pip install 'convcheck[plot]'"
        )
    if options.quiet and options.verbose:
        problems.append("--quiet and --verbose contradict each other; use one")
    if options.plot_all and options.plot is None:
        problems.append("--plot-all needs --plot DIR (where to write the PNGs)")
    for option, path, what in (("--junit", options.junit, "JUnit XML"), ("--html", options.html, "the report")):
        if path is not None and str(path) == "-":
            problems.append(f"{option} -: {what} goes to a file (stdout is for the table, or JSON with --json -)")
    json_file = None if options.json_only else options.json_path
    outputs: tuple[tuple[str, str | Path | None], ...] = (
        ("--json", json_file),
        ("--junit", options.junit),
        ("--html", options.html),
        ("--plot", options.plot),
    )
    for option, target in outputs:
        problem = None if target is None or str(target) == "-" else output_problem(target, folder=option == "--plot")
        if problem is not None:
            problems.append(f"{option} {target}: {problem}")
    return problems
