"""The options of the ``convcheck`` commands and how command-line mistakes are told: one line each, in
convcheck's words (``usage_line``), through the command group class ``CommandGroup``.

Choices are parsed by callbacks (``choice``, ``at_least``) rather than by typer, so that a wrong value gets
convcheck's sentence and help shows plain metavars (``METHOD``, ``N``).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from convcheck.exitcodes import ExitCode

if TYPE_CHECKING:
    from convcheck.spec import DType, Method

#: The values of the options that take a member of a ``convcheck.spec`` enum (``Method``, ``DType``, ``Layout``),
#: written out so that building the command line, and ``--help``, does not import ``convcheck.spec`` (its frozen
#: dataclasses are most of convcheck's own start-up time); ``spec_choice`` makes the member once an option is
#: given, and a test checks that these equal the enums' values.
METHOD_CHOICES = ("auto", "full", "entrywise", "sampled", "directional")
DTYPE_CHOICES = ("float64", "float32")
LAYOUT_CHOICES = ("nhwc", "nchw")

# The click that typer uses (recent typer versions carry their own copy), for its exception classes.
click = sys.modules[typer.BadParameter.__module__]


class CommandGroup(TyperGroup):
    """The command group, with every command-line mistake told in one line of convcheck's own words."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            code = super().main(*args, **{**kwargs, "standalone_mode": False})
        except click.ClickException as exc:
            no_args = getattr(click, "NoArgsIsHelpError", ())  # click ≥ 8.2: `convcheck` alone asks for help
            if isinstance(exc, no_args) and getattr(exc, "ctx", None) is not None:
                sys.stdout.write(exc.ctx.get_help() + "\n")
                code = ExitCode.OK
            else:
                sys.stderr.write(usage_line(exc) + "\n")
                code = ExitCode.INVALID
        except typer.Abort:
            sys.stderr.write("interrupted\n")
            code = ExitCode.INTERRUPTED
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def usage_line(exc: Any) -> str:
    """A command-line mistake as one line: the command, the option and what is wrong, and where help is."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "convcheck"
    message = exc.message.rstrip(".")
    if isinstance(exc, click.NoSuchOption):
        close = sorted(exc.possibilities or [])
        message = f"no option {exc.option_name}" + (f" (did you mean {' or '.join(close)}?)" if close else "")
    elif isinstance(exc, click.MissingParameter) and exc.param is not None:
        message = f"{param_name(exc.param)} is required"
    elif isinstance(exc, click.BadParameter) and exc.param is not None:
        if not isinstance(exc, OptionValueError) and exc.param.metavar == "N":  # typer's own int parsing
            message = f"{param_name(exc.param)}: expects a whole number"
        else:
            message = f"{param_name(exc.param)}: {message}"
    elif message[:1].isupper() and not message[1:2].isupper():
        message = message[0].lower() + message[1:]
    return f"{command}: {message}; see {command} -h"


def param_name(param: Any) -> str:
    opts = getattr(param, "opts", None) if getattr(param, "param_type_name", "") == "option" else None
    return opts[0] if opts else (param.metavar or param.name or "")


class Annotate(str, Enum):
    AUTO = "auto"
    GITHUB = "github"
    NONE = "none"


class Color(str, Enum):
    """``--color``: ``auto`` colours a terminal unless ``NO_COLOR`` is set; ``always`` and ``never`` decide."""

    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


class OptionValueError(typer.BadParameter):
    """An option's value refused by convcheck's own check, in convcheck's words."""


def choice(kind: type[Enum], option: str) -> Callable[[str | None], Any]:
    """A callback that turns an option's text into a member of ``kind``, or says in one line what is allowed."""

    def parse(value: str | None) -> Any:
        if value is None:
            return None
        try:
            return kind(value.lower())
        except ValueError:
            allowed = ", ".join(str(m.value) for m in kind)
            raise OptionValueError(f"{value!r} is not one of {allowed}") from None

    parse.__name__ = f"parse_{option}"
    return parse


def spec_choice(enum: str, allowed: tuple[str, ...], option: str) -> Callable[[str | None], Any]:
    """``choice`` for the ``convcheck.spec`` enum named ``enum`` with the values ``allowed``, importing the module
    only when the option is given."""

    def parse(value: str | None) -> Any:
        if value is None:
            return None
        if value.lower() not in allowed:
            raise OptionValueError(f"{value!r} is not one of {', '.join(allowed)}")
        from convcheck import spec

        return getattr(spec, enum)(value.lower())

    parse.__name__ = f"parse_{option}"
    return parse


def at_least(low: int) -> Callable[[int | None], int | None]:
    def check(value: int | None) -> int | None:
        if value is not None and value < low:
            raise OptionValueError(f"{value} is too small: it must be {low} or more")
        return value

    return check


def choices(kind: type[Enum]) -> str:
    return ", ".join(str(m.value) for m in kind)


ConfigsArgument = Annotated[
    list[Path] | None,
    typer.Argument(metavar="CONFIG", hidden=True, show_default=False),  # the docstrings say what CONFIG is
]
ValidateArgument = Annotated[
    list[Path] | None,
    typer.Argument(metavar="CONFIG", hidden=True, show_default=False),
]
JsonOption = Annotated[
    str | None, typer.Option("--json", metavar="PATH", help="Write results as JSON to PATH ('-' for stdout only).")
]
JunitOption = Annotated[Path | None, typer.Option("--junit", metavar="PATH", help="Write JUnit XML to PATH for CI.")]
MethodOption = Annotated[
    str | None,
    typer.Option(
        metavar="METHOD",
        callback=spec_choice("Method", METHOD_CHOICES, "method"),
        help=f"Override every check's method: {', '.join(METHOD_CHOICES)}.",
    ),
]
SeedOption = Annotated[
    int | None, typer.Option(metavar="N", callback=at_least(0), help="Override every check's random seed (N ≥ 0).")
]
DTypeOption = Annotated[
    str | None,
    typer.Option(
        metavar="DTYPE",
        callback=spec_choice("DType", DTYPE_CHOICES, "dtype"),
        help=f"Override every check's dtype: {', '.join(DTYPE_CHOICES)}.",
    ),
]
ImplOption = Annotated[
    str | None,
    typer.Option(metavar="IMPL", help="Override every check's implementation: builtin, a .py file or a module."),
]
JobsOption = Annotated[
    int, typer.Option("--jobs", "-j", metavar="N", callback=at_least(1), help="Run checks in N worker processes.")
]
InProcessOption = Annotated[
    bool,
    typer.Option(
        "--in-process",
        help="Run user implementations in this process (for a debugger) instead of an isolated worker.",
    ),
]
SchedulerOption = Annotated[
    str | None,
    typer.Option(
        metavar="ADDRESS", help="Run checks on a Dask distributed cluster at ADDRESS (needs the 'dask' extra)."
    ),
]
FailFastOption = Annotated[bool, typer.Option("--fail-fast", help="Stop after the first failed check.")]
StrictOption = Annotated[
    bool, typer.Option("--strict", help="Fail checks with warnings too (a backward that modifies its dout in place).")
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print only the rows of checks that did not pass, and the summary.")
]
VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="A panel for every check, passing ones too, with its worst entries.")
]
HeatmapOption = Annotated[
    bool,
    typer.Option(
        "--heatmap", help="Show error heatmaps for every check (failure panels show them when they show a pattern)."
    ),
]
PlotOption = Annotated[
    Path | None,
    typer.Option(
        "--plot",
        metavar="DIR",
        help="Write PNG heatmaps of the checks that did not pass to DIR (needs the 'plot' extra).",
    ),
]
PlotAllOption = Annotated[bool, typer.Option("--plot-all", help="With --plot: PNGs for passing checks too.")]
AnnotateOption = Annotated[
    str,
    typer.Option(
        metavar="WHERE",
        callback=choice(Annotate, "annotate"),
        help="CI annotations for failures: auto (GitHub Actions when GITHUB_ACTIONS=true), github, none.",
    ),
]
ColorOption = Annotated[
    str,
    typer.Option(
        "--color",
        metavar="WHEN",
        callback=choice(Color, "color"),
        help="Colour: auto (on a terminal, unless NO_COLOR is set), always, never.",
    ),
]
HtmlOption = Annotated[
    Path | None,
    typer.Option(
        "--html",
        metavar="PATH",
        help="Write a one-file HTML report to PATH: sortable table, failure panels, heatmaps, a sweep's grid.",
    ),
]


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
