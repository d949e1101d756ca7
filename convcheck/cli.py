"""The ``convcheck`` command: parse arguments, call the library, render, exit. Nothing else lives here.

numpy is imported only when a check actually runs, so ``convcheck --help`` starts fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from convcheck import __version__

if TYPE_CHECKING:
    from rich.console import Console

    from convcheck.batch.outcome import BatchOutcome
    from convcheck.render.base import Run
    from convcheck.results import CheckResult
    from convcheck.run_options import RunOptions
    from convcheck.spec import CheckSpec, ImplRef

from convcheck.exitcodes import ExitCode
from convcheck.options import (
    LAYOUT_CHOICES,
    Annotate,
    AnnotateOption,
    Color,
    ColorOption,
    Commands,
    ConfigsArgument,
    DTypeOption,
    FailFastOption,
    HeatmapOption,
    HtmlOption,
    ImplOption,
    InProcessOption,
    JobsOption,
    JsonOption,
    JunitOption,
    MethodOption,
    PlotAllOption,
    PlotOption,
    QuietOption,
    SchedulerOption,
    SeedOption,
    StrictOption,
    ValidateArgument,
    VerboseOption,
    at_least,
    spec_choice,
)

#: The commands below; each is built (its options read by Typer) only when it runs or is asked for its help.
commands = Commands()

app = typer.Typer(
    name="convcheck",
    cls=commands.group(),
    help=(
        "Check a convolution layer's backward pass against finite differences: every gradient entry, "
        "no false alarms at ReLU kinks, and a report that says where a wrong gradient is wrong.\n\n"
        "Examples:\n\n"
        "  convcheck init   (writes convcheck.yaml and layers.py)\n\n"
        "  convcheck run    (runs ./convcheck.yaml)\n\n"
        "  convcheck run configs/textbook.yaml\n\n"
        "  convcheck run configs/ --json report.json --junit report.xml\n\n"
        "  convcheck validate configs/smoke.yaml"
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# Width when the output is not a terminal (a pipe, a CI log): wide enough for the results table on one line.
PIPE_WIDTH = 120


def _console(stderr: bool, color: Color = Color.AUTO) -> Console:
    from rich.console import Console  # imported when output is made, so --help starts without it

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or "COLUMNS" in os.environ else PIPE_WIDTH
    # emoji=False: user text such as "file.yaml:100:3" must not become "file.yaml💯3" (markup=False at each print)
    if color is Color.ALWAYS:
        return Console(stderr=stderr, highlight=False, emoji=False, width=width, force_terminal=True, no_color=False)
    if color is Color.NEVER:
        return Console(stderr=stderr, highlight=False, emoji=False, width=width, no_color=True, color_system=None)
    return Console(stderr=stderr, highlight=False, emoji=False, width=width)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"convcheck {__version__}")
        raise typer.Exit(ExitCode.OK)


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """convcheck: is my conv layer's backward pass right?"""


def _problem(err: Console, text: str) -> None:
    """One problem: on a terminal wrapped between words, elsewhere one line (``file:line:col: …`` for grep)."""
    err.print(text, markup=False, soft_wrap=not err.is_terminal)


def _load(paths: list[Path], err: Console) -> list[CheckSpec]:
    """Load and validate configs; on any error print every problem and exit 2 (nothing is run)."""
    from convcheck.config import load_configs

    loaded = load_configs(paths)
    if loaded.errors:
        for error in loaded.errors:
            _problem(err, str(error))
        files = len({e.file for e in loaded.errors})
        err.print(
            f"{len(loaded.errors)} problem{'s' if len(loaded.errors) != 1 else ''} in {files} "
            f"config file{'s' if files != 1 else ''}; nothing was run.",
            markup=False,
        )
        raise typer.Exit(ExitCode.INVALID)
    for warning in loaded.warnings:  # valid values that make a check meaningless (a huge rtol or atol)
        _problem(err, str(warning))
    if not loaded.specs:
        err.print("no checks found in " + ", ".join(str(p) for p in paths), markup=False)
        raise typer.Exit(ExitCode.INVALID)
    return list(loaded.specs)


def _impl_override(text: str, err: Console) -> ImplRef | None:
    """``--impl``: ``builtin``, a ``.py`` path (relative to the current folder) or an importable module.

    Loaded once here, so that a missing file or a broken module is one invalid command line (exit 2), not an
    error row for every check.
    """
    if text == "builtin":
        return None
    from convcheck.isolation.session import probe
    from convcheck.spec import ImplRef
    from convcheck.user.errors import ImplementationError

    ref = ImplRef(module=text, base_dir=Path.cwd())
    try:
        probe(ref)  # in a process of its own: the module's import-time code never runs in this one
    except ImplementationError as exc:
        err.print(f"--impl {text}: {exc}", markup=False)
        raise typer.Exit(ExitCode.INVALID) from None
    return ref


@commands.command()
def run(
    configs: ConfigsArgument = None,
    json_path: JsonOption = None,
    junit: JunitOption = None,
    html: HtmlOption = None,
    method: MethodOption = None,
    seed: SeedOption = None,
    dtype: DTypeOption = None,
    impl: ImplOption = None,
    jobs: JobsOption = 1,
    in_process: InProcessOption = False,
    scheduler: SchedulerOption = None,
    fail_fast: FailFastOption = False,
    strict: StrictOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
    heatmap: HeatmapOption = False,
    plot: PlotOption = None,
    plot_all: PlotAllOption = False,
    annotate: AnnotateOption = "auto",
    color: ColorOption = "auto",
) -> None:
    """Run the checks in CONFIG... and print a table of errors per gradient.

    CONFIG: config files, or folders of *.yaml / *.yml files. With no CONFIG, runs ./convcheck.yaml (what
    convcheck init writes), else the folder ./configs/.

    Exit code 0 when every check passes, 1 when any check fails or its implementation errors, 2 when a
    config or the command line is invalid (nothing is run), 3 for a bug in convcheck itself, 4 or 5 (0 or 1, but
    a --json, --junit, --html or --plot file could not be written), 130 when interrupted.

    Examples:

      convcheck run

      convcheck run configs/textbook.yaml

      convcheck run configs/ --jobs 2 --junit report.xml --html report.html

      convcheck run my.yaml --impl layers.py --json -
    """
    given = dict(locals())  # the parameters are RunOptions' fields, by name
    from convcheck.run_options import RunOptions

    _run(RunOptions(**given))


def _default_configs(given: list[Path] | None, err: Console, verb: str = "running") -> list[Path]:
    """The configs given, or ``./convcheck.yaml``, else ``./configs/``; says which it chose. None here exits 2."""
    if given:
        return given
    for candidate in (Path("convcheck.yaml"), Path("configs")):
        if candidate.exists():
            err.print(f"no config given: {verb} {candidate}{'/' if candidate.is_dir() else ''}", markup=False)
            return [candidate]
    err.print(
        "no config given, and no convcheck.yaml or configs/ here: name a config (convcheck run my.yaml), "
        "or write a starter config and layer with convcheck init",
        markup=False,
    )
    raise typer.Exit(ExitCode.INVALID)


def _run(options: RunOptions) -> None:
    """``convcheck run``: check the options, run the batch, render it, exit with its code."""
    out, err = _console(False, options.color), _console(True, options.color)
    from convcheck.batch.signals import handled  # imports numpy, so not at the top: --help starts without it

    with handled() as signals:  # SIGINT, SIGTERM, SIGHUP: stop the checks, never the results' output
        specs = _checked_specs(options, err)
        from convcheck.batch.local import run_batch, start_workers  # imports numpy: only now that checks will run

        report: Callable[[int], None] = _unsupervised
        if options.in_process:
            from convcheck.isolation.supervise import trusting

            report = trusting(lambda text: err.print(text, markup=False))
        # User code runs in a process of its own unless asked otherwise: an os._exit or a segfault in it must be an
        # error row, never a silently ended (and so "green") run.
        isolate = not options.in_process and any(s.impl is not None for s in specs)
        address = options.scheduler
        # The worker processes start before the progress display, whose thread would keep them from being forked
        # with convcheck already imported (see batch.local).
        local = 0 if address is not None else len(specs)
        with (
            start_workers(local, jobs=options.jobs, isolate=isolate) as workers,
            _progress(err, len(specs), enabled=not options.quiet) as advance,
        ):
            if address is None:
                batch = signals.interrupting(
                    lambda: run_batch(
                        specs,
                        jobs=options.jobs,
                        fail_fast=options.fail_fast,
                        on_result=advance,
                        isolate=isolate,
                        workers=workers,
                    ),
                    specs,
                )
            else:
                batch = signals.interrupting(
                    lambda: _run_distributed(specs, address, options.fail_fast, advance, err), specs
                )
        batch = _as_shown(batch, interrupted=signals.received is not None)
        written = _show(batch, options, out, err)
    if batch.interrupted or signals.received is not None:  # a signal while the results printed counts too
        cause = f" ({signals.name})" if signals.received is not None else ""
        err.print(f"interrupted{cause}: the results above are the checks that finished", markup=False)
        report(ExitCode.INTERRUPTED)
        raise typer.Exit(ExitCode.INTERRUPTED)
    code = ExitCode.for_results(batch.results, batch.not_run, written=written)
    report(code)
    raise typer.Exit(code)


def _as_shown(batch: BatchOutcome, interrupted: bool) -> BatchOutcome:
    """The batch as its results are shown: marked interrupted when a signal came, with the hints only a whole
    batch can give (the geometric condition shared by the checks a layer crashed on)."""
    from dataclasses import replace  # here, not at the top: --help does not import dataclasses (0.5 ms)

    from convcheck.results import Status

    if interrupted and not batch.interrupted:
        batch = replace(batch, interrupted=True)
    # Only crashed checks get a hint, so the diagnosis rules (a sixth of a run's start-up) load only after a crash.
    if any(result.status is Status.ERROR for result in batch.results):
        from convcheck.diagnosis.batch import with_batch_hints

        batch = replace(batch, results=tuple(with_batch_hints(batch.results)))
    return batch


def _unsupervised(code: int) -> None:
    """The exit code, for a run that no parent process waits on (every run but ``--in-process``): nothing to do."""


def _checked_specs(options: RunOptions, err: Console) -> list[CheckSpec]:
    """The configs' checks with the command line's overrides; any invalid input exits 2 before anything runs."""
    specs = _load(_default_configs(options.configs, err), err)
    from convcheck.run_options import run_option_problems

    problems = run_option_problems(options)  # the first problem only: one line, like any command-line mistake
    if problems:
        err.print(problems[0], markup=False)
        raise typer.Exit(ExitCode.INVALID)
    overrides: dict[str, object] = {}
    if options.method is not None:
        overrides["method"] = options.method
    if options.strict:
        overrides["strict"] = True
    if options.seed is not None:
        overrides["seed"] = options.seed
    if options.dtype is not None:
        overrides["dtype"] = options.dtype
    if options.impl is not None:
        overrides["impl"] = _impl_override(options.impl, err)
    return [s.with_overrides(**overrides) for s in specs] if overrides else specs


def _show(batch: BatchOutcome, options: RunOptions, out: Console, err: Console) -> bool:
    """The table and panels, the PNG heatmaps, the JSON and JUnit files, and the CI annotations; False when a
    file could not be written (each failure is printed, and the other files are still written)."""
    from convcheck.render.base import Run
    from convcheck.render.panels import print_results

    results = list(batch.results)
    run_info = Run(version=__version__, interrupted=batch.interrupted, not_run=batch.not_run)
    written = True
    table_console = err if options.json_only else out
    print_results(
        table_console,
        results,
        quiet=options.quiet,
        verbose=options.verbose,
        heatmap=options.heatmap,
        not_run=batch.not_run,
    )
    if options.plot is not None:
        from convcheck.render.plot import write_pngs

        plotted = [r for r in results if options.plot_all or not r.status.ok]
        which = "" if options.plot_all else " (checks that did not pass; --plot-all for every check)"
        try:
            pngs = [path for r in plotted for path in write_pngs(r, options.plot)]
        except OSError as exc:
            err.print(f"could not write {exc.filename or options.plot}: {exc.strerror or exc}", markup=False)
            written = False
        else:
            count = f"{len(pngs)} heatmap PNG{'s' if len(pngs) != 1 else ''}"
            err.print(f"wrote {count} to {options.plot}{which}", markup=False)
    written = _write_outputs(results, run_info, options, err) and written
    github = options.annotate is Annotate.GITHUB
    if github or (options.annotate is Annotate.AUTO and os.environ.get("GITHUB_ACTIONS") == "true"):
        from convcheck.render import annotations

        text = annotations.render(results, run_info)
        if text:
            typer.echo(text, err=options.json_only, nl=False)
    return written


def _run_distributed(
    specs: list[CheckSpec], address: str, fail_fast: bool, advance: Callable[..., None], err: Console
) -> BatchOutcome:
    """``--scheduler``: the same checks on a Dask cluster; a missing extra or an unreachable scheduler exits 2."""
    from convcheck.batch.dask import DistributedUnavailable, run_distributed

    try:
        return run_distributed(specs, address, fail_fast=fail_fast, on_result=advance)
    except DistributedUnavailable as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(ExitCode.INVALID) from None


@contextmanager
def _progress(console: Console, total: int, *, enabled: bool) -> Iterator[Callable[..., None]]:
    """Transient progress bars on a terminal: checks done and, for the check running in this process, its
    forward passes (with ETAs). Nothing in pipes, CI logs or with ``--quiet``."""
    if not (enabled and console.is_terminal):
        yield lambda *_: None
        return
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from convcheck.checker import report_progress

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        checks = progress.add_task("checks", total=total, visible=total > 1)
        passes = progress.add_task("forward passes", total=None, visible=False)

        def on_pass(name: str, done: int, planned: int) -> None:
            progress.update(passes, description=escape(name), completed=done, total=planned, visible=True)

        with report_progress(on_pass):
            yield lambda *_: progress.advance(checks)


def _write_outputs(results: list[CheckResult], run_info: Run, options: RunOptions, err: Console) -> bool:
    """``--json`` (to stdout, or a file), ``--junit`` and ``--html``; False when a file could not be written."""
    files = {"json": None if options.json_only else options.json_path, "junit": options.junit, "html": options.html}
    if not options.json_only and all(path is None for path in files.values()):
        return True  # nothing asked for: the writers (and the XML and HTML libraries) are not even imported
    from convcheck.render import json
    from convcheck.render.documents import write_documents

    if options.json_only:
        sys.stdout.write(json.render(results, run_info))
        sys.stdout.flush()
    failures = write_documents(results, run_info, files)  # checked before the run, but a disk can fill up
    for exc in failures:
        err.print(f"could not write {exc.filename or 'the output'}: {exc.strerror or exc}", markup=False)
    return not failures


@commands.command()
def validate(configs: ValidateArgument = None, color: ColorOption = "auto") -> None:
    """Load, validate and expand configs without running them: one row per expanded check with its output
    shape and estimated cost in forward passes. Each impl: file is read (never run): it must exist, parse and
    define the forward and backward functions with parameters that take convcheck's call.

    CONFIG: as for run (default: ./convcheck.yaml, else ./configs/).

    Exit code 0 when everything is valid, 2 otherwise (every problem is printed).

    Examples:

      convcheck validate

      convcheck validate configs/smoke.yaml
    """
    out, err = _console(False, Color(color)), _console(True, Color(color))
    specs = _load(_default_configs(configs, err, "validating"), err)
    from convcheck.user.static import keyword_problems, static_problems

    problems = {str(p): p for ref in dict.fromkeys(s.impl for s in specs if s.impl) for p in static_problems(ref)}
    problems |= {str(p): p for s in specs if s.impl for p in keyword_problems(s.impl, s.shape.window)}
    for problem in problems.values():
        _problem(err, str(problem))
    out.print(_validate_table(specs, out.width))
    if problems:
        err.print(
            f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in implementations; nothing was run.",
            markup=False,
        )
        raise typer.Exit(ExitCode.INVALID)
    out.print(f"{len(specs)} check{'s' if len(specs) != 1 else ''} valid", markup=False)


def _validate_table(specs: list[CheckSpec], width: int) -> Any:
    from convcheck.methods import planned_passes
    from convcheck.render.plan import plan_table

    return plan_table(specs, [planned_passes(s) for s in specs], width)


@commands.command()
def init(
    path: Annotated[Path, typer.Argument(metavar="PATH", hidden=True)] = Path("convcheck.yaml"),
    layout: Annotated[
        str,
        typer.Option(
            metavar="LAYOUT",
            callback=spec_choice("Layout", LAYOUT_CHOICES, "layout"),
            help="The starter layer's layout: nhwc (N, H, W, C) or nchw (N, C, H, W).",
        ),
    ] = "nhwc",
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Write a starter config at PATH (default ./convcheck.yaml) and, next to it, the layer file it checks
    (layers.py: a correct convolution + ReLU with its signature documented). Edit layers.py, then run
    convcheck run.

    Examples:

      convcheck init

      convcheck init --layout nchw

      convcheck init configs/mine.yaml --force
    """
    from convcheck.render.files import write_atomic
    from convcheck.spec import Layout
    from convcheck.starter import starter_files

    err = _console(True)
    files = starter_files(path, Layout(layout))
    existing = [p for p in files if p.exists()]
    if existing and not force:
        err.print(
            f"{', '.join(map(str, existing))} already exist{'s' if len(existing) == 1 else ''}; "
            "use --force to overwrite",
            markup=False,
        )
        raise typer.Exit(ExitCode.INVALID)
    for target, text in files.items():
        try:
            write_atomic(target, text)
        except OSError as exc:
            err.print(f"could not write {target}: {exc.strerror or exc}", markup=False)
            raise typer.Exit(ExitCode.INVALID) from None
    config, layer = files
    run_hint = "convcheck run" if config == Path("convcheck.yaml") else f"convcheck run {config}"
    typer.echo(f"wrote {config} (the checks) and {layer} (your layer: edit it)\ncheck it with: {run_hint}")


@commands.command()
def schema() -> None:
    """Print the JSON Schema of the config format (for editor completion and validation).

    Examples:

      convcheck schema > convcheck.schema.json
    """
    import json

    from convcheck.config.schema import config_schema

    typer.echo(json.dumps(config_schema(), indent=2))


@commands.command()
def selftest(
    quick: Annotated[bool, typer.Option("--quick", help="float64 only (skip the float32 sweep).")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", metavar="N", callback=at_least(1), help="Worker processes.")] = 1,
    color: ColorOption = "auto",
) -> None:
    """Prove the checker: run every planted bug of the catalogue and the correct layer over a small sweep.

    Exit code 0 only if every bug is caught and no correct layer fails.

    Examples:

      convcheck selftest
    """
    from convcheck.render.selftest import selftest_summary, selftest_table
    from convcheck.selftest import run_selftest
    from convcheck.spec import DType

    out = _console(False, Color(color))
    report = run_selftest(dtypes=(DType.FLOAT64,) if quick else (DType.FLOAT64, DType.FLOAT32), jobs=jobs)
    out.print(selftest_table(report))
    out.print(selftest_summary(report), markup=False)
    raise typer.Exit(ExitCode.OK if report.ok else ExitCode.FAILED)


def entry() -> None:
    """The console script and ``python -m convcheck``: the app, with a last guard so that even a bug in convcheck
    ends in one paragraph (exit 3) rather than a traceback; ``CONVCHECK_DEBUG=1`` shows the traceback."""
    try:
        app(prog_name="convcheck")
    except KeyboardInterrupt:  # outside a command (between the parse and the run)
        sys.stderr.write("interrupted\n")
        sys.exit(ExitCode.INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if os.environ.get("CONVCHECK_DEBUG"):
            raise
        name = type(exc).__name__
        sys.stderr.write(
            f"convcheck: internal error ({name}: {exc}). This is a bug in convcheck, not in your layer or config; "
            "please report it with the command you ran (CONVCHECK_DEBUG=1 shows the traceback).\n"
        )
        sys.exit(ExitCode.INTERNAL)
