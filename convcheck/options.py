"""The options of the ``convcheck`` commands and how command-line mistakes are told: one line each, in
convcheck's words (``usage_line``), through the command group class ``CommandGroup``.

Choices are parsed by callbacks (``choice``, ``at_least``) rather than by typer, so that a wrong value gets
convcheck's sentence and help shows plain metavars (``METHOD``, ``N``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from convcheck.exitcodes import ExitCode
from convcheck.spec import DType, Method

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
        metavar="METHOD", callback=choice(Method, "method"), help=f"Override every check's method: {choices(Method)}."
    ),
]
SeedOption = Annotated[
    int | None, typer.Option(metavar="N", callback=at_least(0), help="Override every check's random seed (N ≥ 0).")
]
DTypeOption = Annotated[
    str | None,
    typer.Option(
        metavar="DTYPE", callback=choice(DType, "dtype"), help=f"Override every check's dtype: {choices(DType)}."
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
