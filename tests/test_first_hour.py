"""A newcomer's first hour, end to end: ``init`` then ``run`` with no arguments checks the user's own file;
``validate`` finds a broken ``impl:`` without running it; ``-h`` everywhere; option mistakes in one line;
``--plot`` only for what failed; ``--color``; no project-history words in anything a user reads."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convcheck.cli import app
from convcheck.exitcodes import ExitCode

ROOT = Path(__file__).resolve().parent.parent
ENV = {"NO_COLOR": "1", "COLUMNS": "100", "GITHUB_ACTIONS": "false"}
COMMANDS = ("run", "validate", "init", "schema", "selftest")


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env={**ENV, **(env or {})})


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_init_then_run_with_no_arguments_checks_the_users_layer(tmp_path, monkeypatch, layout):
    monkeypatch.chdir(tmp_path)
    made = invoke("init", "--layout", layout)
    assert made.exit_code == ExitCode.OK, made.stderr
    assert (tmp_path / "convcheck.yaml").is_file() and (tmp_path / "layers.py").is_file()
    first = invoke("run", "--json", "-")
    assert first.exit_code == ExitCode.OK, first.stderr
    assert "convcheck.yaml" in first.stderr  # it says what it ran
    document = json.loads(first.stdout)
    assert document["summary"]["passed"] == document["summary"]["total"] == 2
    assert all(check["config"].get("layout", layout) == layout for check in document["checks"])
    # the first run checked the user's file: plant the textbook bug (+= turned into =) and it fails
    layer = tmp_path / "layers.py"
    text = layer.read_text()
    assert text.count("] +=") == 1
    layer.write_text(text.replace("] +=", "] ="))
    second = invoke("run", "--json", "-")
    assert second.exit_code == ExitCode.FAILED
    diagnosis = [h for c in json.loads(second.stdout)["checks"] for h in c["diagnosis"]]
    assert diagnosis and all("col2im accumulate" in str(h) for h in diagnosis)
    assert invoke("init").exit_code == ExitCode.INVALID  # never overwrites without --force
    assert invoke("validate").exit_code == ExitCode.OK


def test_run_without_arguments_falls_back_to_configs_then_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    nothing = invoke("run")
    assert nothing.exit_code == ExitCode.INVALID and "convcheck init" in nothing.stderr
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "a.yaml").write_text(
        "batch: 1\nin_height: 4\nin_width: 4\nin_depth: 1\nout_depth: 1\nfilter_size: 3\n"
    )
    found = invoke("run")
    assert found.exit_code == ExitCode.OK and "no config given: running configs/" in found.stderr
    checked = invoke("validate")  # validate says what it validates: nothing is run
    assert checked.exit_code == ExitCode.OK and "no config given: validating configs/" in checked.stderr


BROKEN = {
    "syntax.py": ("def forward(x, w, b, stride, padding)\n    return x\n", 1, "SyntaxError"),
    "arity.py": ("def forward(x, w, b):\n    pass\n\n\ndef backward(dout, cache):\n    pass\n", 1, "forward(x, w, b)"),
    "cs231n.py": (
        "def forward(x, w, b, conv_param):\n    pass\n\n\ndef backward(dout, cache):\n    pass\n",
        1,
        "signature: cs231n",
    ),
    "missing.py": ("def forward(x, w, b, stride, padding):\n    pass\n", None, "'backward'"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_validate_finds_impl_problems_without_running_user_code(tmp_path, name):
    source, line, words = BROKEN[name]
    marker = tmp_path / "executed"
    (tmp_path / name).write_text(f"open({str(marker)!r}, 'w').close()\n" + source)
    config = tmp_path / "check.yaml"
    config.write_text(f"impl: {name}\nbatch: 1\nin_height: 4\nin_width: 4\nin_depth: 1\nout_depth: 1\nfilter_size: 3\n")
    result = invoke("validate", str(config))
    assert result.exit_code == ExitCode.INVALID
    assert words in result.stderr and name in result.stderr
    if line is not None:
        assert re.search(rf"{re.escape(name)}:{line + 1}\b", result.stderr), result.stderr  # +1: the marker line
    assert not marker.exists()  # read, never imported


def test_validate_accepts_the_examples_and_reports_a_missing_file(tmp_path):
    examples = invoke("validate", str(ROOT / "examples"))
    missing = [name for name in ("torch", "jax") if importlib.util.find_spec(name) is None]
    if not missing:
        assert examples.exit_code == ExitCode.OK, examples.stderr
    else:  # without the torch or jax extra, each framework example is refused in one line saying how to install it
        assert examples.exit_code == ExitCode.INVALID
        refused = [line for line in examples.stderr.splitlines() if ": impl.framework: " in line]
        assert len(refused) == len(missing), examples.stderr
        for name in missing:
            assert any(f"{name} is not installed" in line and f"convcheck[{name}]" in line for line in refused)
        assert examples.stderr.splitlines()[-1].startswith(f"{len(missing)} problem")
    config = tmp_path / "check.yaml"
    config.write_text(
        "impl: nothere.py\nbatch: 1\nin_height: 4\nin_width: 4\nin_depth: 1\nout_depth: 1\nfilter_size: 3\n"
    )
    result = invoke("validate", str(config))
    assert result.exit_code == ExitCode.INVALID and "nothere.py" in result.stderr


@pytest.mark.parametrize("command", [(), *((c,) for c in COMMANDS)])
def test_dash_h_everywhere_with_plain_metavars(command):
    short, long = invoke(*command, "-h"), invoke(*command, "--help")
    assert short.exit_code == long.exit_code == ExitCode.OK
    assert short.stdout == long.stdout and "Usage: convcheck" in short.stdout
    for bad in ("<", "{", "list[", "int range"):
        assert bad not in short.stdout, (command, bad)


def test_run_help_shows_config_and_n():
    text = invoke("run", "-h").stdout
    assert "[CONFIG]..." in text and "--jobs N" in text and "--seed N" in text and "--color WHEN" in text


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("run", "--method", "bogus"), "--method: 'bogus' is not one of auto, full"),
        (("run", "--jobs", "0"), "--jobs: 0 is too small"),
        (("run", "--jobs", "x"), "--jobs: expects a whole number"),
        (("run", "--seed", "-1"), "--seed: -1 is too small"),
        (("run", "--color", "pink"), "--color: 'pink' is not one of auto, always, never"),
        (("run", "--bogus"), "no option --bogus"),
        (("init", "--layout", "x"), "--layout: 'x' is not one of nhwc, nchw"),
        (("nosuchcommand",), "no such command"),
    ],
)
def test_every_option_error_is_one_line_in_our_words(args, words):
    result = invoke(*args)
    assert result.exit_code == ExitCode.INVALID
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr
    assert "Value error" not in lines[0] and "Input should" not in lines[0] and "Usage:" not in lines[0]


def _small(tmp_path: Path) -> Path:
    config = tmp_path / "small.yaml"
    config.write_text(
        "batch: 1\nin_height: 5\nin_width: 5\nin_depth: 2\nout_depth: 2\nfilter_size: 3\nstride: [1, 2]\n"
    )
    return config


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs the plot extra")
def test_plot_writes_only_failing_checks_unless_asked_for_all(tmp_path):
    config = _small(tmp_path)
    none = invoke("run", str(config), "--plot", str(tmp_path / "p1"))
    assert none.exit_code == ExitCode.OK
    assert not (tmp_path / "p1").exists() or not list((tmp_path / "p1").iterdir())
    every = invoke("run", str(config), "--plot", str(tmp_path / "p2"), "--plot-all")
    assert every.exit_code == ExitCode.OK and len(list((tmp_path / "p2").iterdir())) == 4
    assert invoke("run", str(config), "--plot-all").exit_code == ExitCode.INVALID


def test_color_always_never_and_no_color(tmp_path):
    config = _small(tmp_path)
    always = invoke("run", str(config), "--color", "always", env={"NO_COLOR": ""})
    never = invoke("run", str(config), "--color", "never", env={"NO_COLOR": ""})
    auto_no_color = invoke("run", str(config))  # NO_COLOR=1 and not a terminal
    assert "\x1b[" in always.stdout
    assert "\x1b[" not in never.stdout and "\x1b[" not in auto_no_color.stdout
    assert always.exit_code == never.exit_code == ExitCode.OK


# "seed" as the random-seed key (seed: 0, --seed, seeded) is fine; "the seed" as the
# textbook page this project started from is not.
JARGON = re.compile(
    r"\bthe seed(?:'s)?\b(?! (?:key|of|value|\d|=|:|given|used|it|is|0))|\bseed (?:layer|loop)\b|"
    r"\bissue \d+",
    re.IGNORECASE,
)


def test_no_project_history_words_in_what_users_read():
    from convcheck import bugs
    from convcheck.diagnosis import hypotheses  # noqa: F401 - its hint sentences are read below

    texts = {f"help {c}": invoke(*c, "-h").stdout for c in [(), *((c,) for c in COMMANDS)]}
    bundled = [*sorted((ROOT / "configs").glob("*.yaml")), *sorted((ROOT / "examples").glob("*.*"))]
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *bundled]:
        texts[str(path.relative_to(ROOT))] = path.read_text()
    texts["bug descriptions"] = "\n".join(bugs.get(b).description for b in bugs.ids())
    for package in ("diagnosis", "user"):
        for module in sorted((ROOT / "convcheck" / package).glob("*.py")):
            strings = re.findall(r'f?"([^"\n]*)"', module.read_text())  # the sentences it can show
            texts[str(module.relative_to(ROOT))] = "\n".join(strings)
    found = {where: JARGON.findall(text) for where, text in texts.items()}
    assert {where: words for where, words in found.items() if words} == {}


def test_a_cs231n_layer_run_with_relu_is_told_the_config_key():
    from convcheck.checker import run_check
    from convcheck.spec import Activation, CheckSpec, ConvShape, ImplRef, Layout, Method, Signature

    ref = ImplRef(
        module=str(ROOT / "examples" / "cs231n_naive.py"),
        forward="conv_forward_naive",
        backward="conv_backward_naive",
        signature=Signature.CS231N,
    )
    spec = CheckSpec(
        "cs231n", ConvShape(2, 7, 6, 3, 4, 3, 2, 1), Activation.RELU, method=Method.FULL, impl=ref, layout=Layout.NCHW
    )
    result = run_check(spec)
    assert not result.passed
    assert any("activation: none" in str(h) for h in result.diagnosis), result.diagnosis


def test_convcheck_alone_prints_its_help():
    result = invoke()
    assert result.exit_code == ExitCode.OK and result.stdout == invoke("-h").stdout
