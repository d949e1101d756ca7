"""The pytest plugin, run by pytest itself (``pytester``): a ``convcheck.yaml`` next to a user's layer becomes red
and green test items that ``-k``, ``-x``, ``--lf`` and ``--junitxml`` treat like any other test.

Each inner run loads the plugin with ``-p`` and plugin autoloading off, so the tests behave the same whether
or not convcheck is installed (installed, pytest would also find it through its entry point).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import userproject
from userproject import CONFIG, REPO, write_project

import convcheck.api
import convcheck.batch.guard
import convcheck.config
from convcheck.pytest_plugin import MARKER, is_config

pytest_plugins = ["pytester"]

# pytester's in-process runs forget the modules each run imports; numpy cannot be imported twice in a process,
# so what the plugin imports to run a check is imported here, once.
PRELOADED = (convcheck.api, convcheck.config, convcheck.batch.guard)

RAISING = """\
def forward(x, w, b, stride, padding):
    raise RuntimeError("not written yet")


def backward(dout, cache):
    pass
"""

GREEN = [f"convcheck.yaml::{name}" for name in userproject.GREEN]
RED = f"convcheck.yaml::{userproject.RED}"


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A user's repository: a correct layer, a buggy one and a ``convcheck.yaml`` checking both."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    write_project(pytester.path)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # The plugin module is imported already (by this file), so pytest cannot rewrite its asserts: it has none.
    ignore = "ignore::pytest.PytestAssertRewriteWarning"
    return pytester.runpytest("-p", "convcheck.pytest_plugin", "-W", ignore, "-rA", *args)


def test_every_expanded_check_is_an_item_named_after_it(project: pytest.Pytester):
    result = run(project)
    result.assert_outcomes(passed=4, failed=1)
    for nodeid in GREEN:
        result.stdout.fnmatch_lines([f"PASSED {nodeid}"])
    result.stdout.fnmatch_lines([f"FAILED {RED} - fail: bias gradient: * entries over tolerance*"])


def test_a_failing_item_reports_the_failure_panel_not_a_traceback(project: pytest.Pytester):
    result = run(project)
    text = result.stdout.str()
    failures = text[text.index("= FAILURES =") : text.index("short test summary")]
    for part in ("bias gradient:", "over tolerance", "index (c_out)", "analytic", "numeric", "hint: ", "eps "):
        assert part in failures, part
    assert "Traceback" not in failures and "def runtest" not in failures


def test_k_selects_checks_by_name(project: pytest.Pytester):
    run(project, "-k", "right and not wrong").assert_outcomes(passed=4)
    run(project, "-k", "wrong").assert_outcomes(failed=1)


def test_x_stops_at_the_first_failing_check(project: pytest.Pytester):
    wrong_first = CONFIG.replace("checks:\n", "checks:\n  - name: first\n    impl: buggy.py\n    padding: 0\n")
    project.makefile(".yaml", convcheck=wrong_first)
    result = run(project, "-x")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["FAILED convcheck.yaml::first *", "*stopping after 1 failures*"])


def test_lf_reruns_only_the_failed_check(project: pytest.Pytester):
    run(project).assert_outcomes(passed=4, failed=1)
    result = run(project, "--lf")
    result.assert_outcomes(failed=1)  # and no pass: the green checks were left out (how pytest counts them varies)
    result.stdout.fnmatch_lines([f"FAILED {RED} *"])


def test_node_ids_are_the_same_in_every_collection(project: pytest.Pytester):
    """What ``--lf`` and pytest-xdist rely on: each worker collects the same ids in the same order."""
    first = run(project, "--collect-only", "-q").stdout.lines
    second = run(project, "--collect-only", "-q").stdout.lines
    ids = [line for line in first if "::" in line]
    assert ids == [*GREEN, RED] and [line for line in second if "::" in line] == ids


def test_pytest_xdist_workers_run_the_same_items(project: pytest.Pytester):
    pytest.importorskip("xdist")
    result = run(project, "-p", "xdist", "-n", "2")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines([f"FAILED {RED} - fail: bias gradient: * entries over tolerance*"])


def test_junitxml_has_one_testcase_per_check_and_the_panel_in_the_failure(project: pytest.Pytester):
    run(project, "--junitxml=report.xml")
    suite = ET.parse(project.path / "report.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "5" and suite.get("failures") == "1"
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert set(cases) == {
        "right[stride=1,padding=0]",
        "right[stride=1,padding=1]",
        "right[stride=2,padding=0]",
        "right[stride=2,padding=1]",
        "wrong",
    }
    failure = cases["wrong"].find("failure")
    assert failure is not None and failure.get("message", "").startswith("fail: bias gradient")
    assert "hint: " in (failure.text or "") and "eps " in (failure.text or "")
    statuses = {case.get("name"): case.find("properties/property").get("value") for case in cases.values()}  # type: ignore[union-attr]
    assert statuses["wrong"] == "fail" and statuses["right[stride=1,padding=0]"] == "pass"


def test_items_carry_the_convcheck_marker(project: pytest.Pytester):
    project.makepyfile(test_plain="def test_plain():\n    pass\n")
    run(project, "-m", MARKER).assert_outcomes(passed=4, failed=1, deselected=1)
    run(project, "-m", f"not {MARKER}").assert_outcomes(passed=1, deselected=5)


def test_a_layer_that_raises_is_a_failed_item_saying_why(project: pytest.Pytester):
    project.makefile(".py", raising=RAISING)
    project.makefile(
        ".yaml",
        convcheck="{name: unfinished, impl: raising.py, batch: 1, in_height: 4, in_width: 4, "
        "in_depth: 1, out_depth: 1, filter_size: 3}",
    )
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*unfinished (error)*", "*not written yet*"])


def test_a_config_error_is_a_collection_error_with_convchecks_message(project: pytest.Pytester):
    project.makefile(".yaml", convcheck=CONFIG.replace("padding: 1\n", "paddin: 1\n"))
    result = run(project)
    result.assert_outcomes(errors=1)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            f"convcheck.yaml:{userproject.RED_LINE + 2}:5: checks[[]1[]].paddin: unknown key*did you mean 'padding'?*",
            "1 problem in this config file; none of its checks was collected.",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_the_ini_option_adds_configs_with_other_names(project: pytest.Pytester):
    (project.path / "convcheck.yaml").unlink()
    configs = project.mkdir("configs")
    (configs / "layers.yaml").write_text(CONFIG.replace("layer.py", "../layer.py").replace("buggy.py", "../buggy.py"))
    (project.path / "notes.yaml").write_text("not: a convcheck config\n")
    run(project).assert_outcomes()  # without the option, neither YAML file is a config
    project.makeini("[pytest]\nconvcheck_paths = configs/*.yaml\n")
    result = run(project)
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["PASSED configs/layers.yaml::right[[]stride=1,padding=0[]]"])


def test_a_yaml_file_named_on_the_command_line_is_collected(project: pytest.Pytester):
    (project.path / "convcheck.yaml").rename(project.path / "mine.yaml")
    run(project, "mine.yaml").assert_outcomes(passed=4, failed=1)


def test_no_file_of_this_repository_is_collected_as_a_config():
    """With the plugin installed, convcheck's own suite collects no config (``-p no:convcheck`` also opts out)."""
    yaml_files = [p for p in REPO.rglob("*.y*ml") if ".git" not in p.parts]
    assert yaml_files
    assert not [p for p in yaml_files if is_config(p, REPO, [])]


def test_the_entry_point_is_declared_in_the_pytest11_group():
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert '[project.entry-points.pytest11]\nconvcheck = "convcheck.pytest_plugin"' in text
