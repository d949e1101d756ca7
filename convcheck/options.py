"""The options of the ``convcheck`` commands and how command-line mistakes are told: one line each, in
convcheck's words (``usage_line``), through the command group class ``CommandGroup``, which builds each command
only when it is needed (``Commands``).

Choices are parsed by callbacks (``choice``, ``at_least``) rather than by typer, so that a wrong value gets
convcheck's sentence and help shows plain metavars (``METHOD``, ``N``).
"""

from __future__ import annotations

import gettext
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

from convcheck.exitcodes import ExitCode

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
    """The command group, with every command-line mistake told in one line of convcheck's own words, and its
    commands built only when one runs or is asked for its help: ``convcheck --help`` lists them from their
    docstrings: building every command's options (Typer reads each parameter's annotations) was most of the time
    convcheck itself added to it."""

    #: The commands not built yet, by name: each a Typer app of that one command (``Commands.group`` sets it).
    pending: ClassVar[Mapping[str, typer.Typer]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _BuiltOnDemand(self.commands, self.pending)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # in the order they were declared; TyperGroup's would build them all

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The Commands section, from each command's help text alone (TyperGroup's would build every command)."""
        assert isinstance(self.commands, _BuiltOnDemand)
        listed = [(name, self.commands.outline(name)) for name in self.commands]
        listed = [(name, command) for name, command in listed if not command.hidden]
        if listed:
            limit = formatter.width - 6 - max(len(name) for name, _ in listed)  # click's own layout
            with formatter.section(gettext.gettext("Commands")):
                formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in listed])

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


class _BuiltOnDemand(MutableMapping[str, Any]):
    """A group's commands by name: a pending command becomes a click command when first looked up; its name, and
    its entry in the group's help (``outline``), need no building."""

    def __init__(self, built: MutableMapping[str, Any], pending: Mapping[str, typer.Typer]) -> None:
        self._built = built
        self._pending = dict(pending)

    def __getitem__(self, name: str) -> Any:
        if name not in self._built and name in self._pending:
            from typer.main import get_command

            self._built[name] = get_command(self._pending.pop(name))
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._pending.pop(name, None)
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        if self._pending.pop(name, None) is None:
            del self._built[name]

    def __iter__(self) -> Iterator[str]:
        yield from self._built
        yield from (name for name in self._pending if name not in self._built)

    def __len__(self) -> int:
        return len(set(self._built) | set(self._pending))

    def __contains__(self, name: object) -> bool:
        return name in self._built or name in self._pending

    def outline(self, name: str) -> Any:
        """The command, or for a pending one a click command with only what the group's help shows of it: its
        help text (as Typer takes it: ``help=`` or the docstring), short help, and whether it is hidden or
        deprecated."""
        if name in self._built:
            return self._built[name]
        (info,) = self._pending[name].registered_commands
        text = inspect.cleandoc(info.help) if info.help is not None else inspect.getdoc(info.callback)
        return TyperCommand(name, help=text, short_help=info.short_help, hidden=info.hidden, deprecated=info.deprecated)


class Command(TyperCommand):
    """A command whose usage line shows an argument that takes any number of values as ``[NAME]...`` (optional)
    or ``NAME...``, as click does, whichever Typer version builds it (some leave the dots out when the argument
    has a metavar)."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                pieces += param.get_usage_pieces(ctx)
                continue
            name = param.metavar or (param.name or "").upper()
            piece = name if param.required else f"[{name}]"
            pieces.append(piece + ("..." if param.nargs != 1 else ""))
        return pieces


Function = TypeVar("Function", bound=Callable[..., Any])


class Commands:
    """The commands of a group, declared like ``@app.command()`` (``@commands.command()``), each as a Typer app of
    its own so that the group (``group()``, for ``typer.Typer(cls=...)``) can build it on demand."""

    def __init__(self) -> None:
        self._apps: dict[str, typer.Typer] = {}

    def command(self, **settings: Any) -> Callable[[Function], Function]:
        def declare(function: Function) -> Function:
            # The group's settings, as Typer would hand them to a command of its own: plain help (no Rich
            # markup), no completion options of its own, no pretty tracebacks.
            one = typer.Typer(rich_markup_mode=None, add_completion=False, pretty_exceptions_enable=False)
            one.command(cls=Command, **settings)(function)
            (info,) = one.registered_commands
            self._apps[info.name or function.__name__.lower().replace("_", "-")] = one  # as Typer names it
            return function

        return declare

    def group(self) -> type[CommandGroup]:
        return type("ConvcheckGroup", (CommandGroup,), {"pending": self._apps})


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
