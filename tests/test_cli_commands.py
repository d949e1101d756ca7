"""The command group builds each command only when it is needed, and shows exactly what a plain Typer app of the
same commands shows: every command's help, at any width, the command list, and the "did you mean" of a typo."""

from __future__ import annotations

import pytest
import typer
import typer.main
from typer.core import TyperGroup
from typer.testing import CliRunner

from convcheck import cli, options
from convcheck.exitcodes import ExitCode

COMMANDS = (cli.run, cli.validate, cli.init, cli.schema, cli.selftest)


def plain_app() -> typer.Typer:
    """The reference: the same group and commands declared the plain Typer way (``@app.command()``, every
    command built with the group, Typer's own group class), each command of convcheck's command class (which
    only writes the usage line's ``[CONFIG]...`` the same way whatever the Typer version)."""
    app = typer.Typer(
        name="convcheck",
        cls=TyperGroup,
        help=cli.app.info.help,
        no_args_is_help=True,
        add_completion=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(cli.main)
    for function in COMMANDS:
        app.command(cls=options.Command)(function)
    return app


def shown(app: typer.Typer, args: list[str], columns: int) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, args, env={"NO_COLOR": "1", "COLUMNS": str(columns)}, prog_name="convcheck")
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("columns", [50, 60, 80, 200])
@pytest.mark.parametrize("command", [[], *([f.__name__] for f in COMMANDS)])
def test_help_equals_a_plain_typer_apps(command, columns):
    for flag in ("--help", "-h"):
        ours = shown(cli.app, [*command, flag], columns)
        assert ours[0] == ExitCode.OK
        assert ours == shown(plain_app(), [*command, flag], columns)


def test_the_group_lists_commands_in_order_without_building_them():
    group = typer.main.get_command(cli.app)
    names = [f.__name__ for f in COMMANDS]
    assert group.list_commands(None) == names == list(group.commands)
    context = group.make_context("convcheck", ["--help"], resilient_parsing=True)
    assert "run       Run the checks in CONFIG..." in group.get_help(context)
    assert group.commands._built == {}  # the listing came from the docstrings alone
    run = group.get_command(context, "run")
    assert run is not None and run.name == "run" and "--jobs" in run.get_help(context)
    assert list(group.commands._built) == ["run"] and list(group.commands) == names  # built once, order kept
    assert group.get_command(context, "nonsense") is None


def test_a_mistyped_command_is_suggested_and_a_missing_one_refused():
    typo = CliRunner().invoke(cli.app, ["rnu"], env={"NO_COLOR": "1"})
    assert typo.exit_code == ExitCode.INVALID
    assert "no such command 'rnu'. Did you mean 'run'?" in typo.stderr
    unknown = CliRunner().invoke(cli.app, ["frobnicate"], env={"NO_COLOR": "1"})
    assert unknown.exit_code == ExitCode.INVALID and "no such command 'frobnicate'" in unknown.stderr


@pytest.mark.parametrize(
    ("command", "usage"), [("run", "[CONFIG]..."), ("validate", "[CONFIG]..."), ("init", "[PATH]")]
)
def test_the_usage_line_marks_an_argument_of_many_values(command, usage):
    text = shown(cli.app, [command, "--help"], 80)[1]
    assert text.splitlines()[0] == f"Usage: convcheck {command} [OPTIONS] {usage}"
