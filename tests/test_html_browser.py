"""The ``--html`` report in a real browser: headless Chromium (the system's package) driven by Playwright.

The page must load with no console error and no request beyond its own file; a click on a header sorts the
table (again: the other way), the filter hides the rows that do not match, a failing check's link opens its
panel with its heatmap, and the sweep's grid draws the cells the JSON's verdicts imply, for any two axes chosen.
The test saves a screenshot (``CONVCHECK_HTML_SCREENSHOT=path`` keeps a copy, as docs/html-report.png was made).

Needs ``chromium`` (Debian: ``apt-get install chromium``) and the ``playwright`` package; Playwright's own browser
download is never used (``executable_path`` points at the system's Chromium).
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import pytest
from test_html import run_report

CHROMIUM = os.environ.get("CONVCHECK_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "no Chromium on this machine (apt-get install chromium, or CONVCHECK_CHROMIUM=/path/to/chrome)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test drives Chromium with playwright")

#: The flags of a quiet, isolated headless Chromium (no updates, syncing or first-run pages; no GPU).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: A name with markup in it, which must show as text.
MARKUP = "<b>conv</b>"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("browser")
    _, _, document, _ = run_report(folder, "conv")
    return folder / "report.html", document


@pytest.fixture(scope="module")
def page(report, tmp_path_factory: pytest.TempPathFactory):
    path, _ = report
    problems: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("profile")),  # a fresh profile
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        tab = context.new_page()
        tab.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        tab.on("request", lambda r: requests.append(r.url))
        tab.goto(path.as_uri())
        tab.wait_for_load_state("load")
        yield Loaded(tab, problems, requests)
        context.close()


class Loaded:
    """The open page (its methods are the Playwright page's), with what it logged and requested since loading."""

    def __init__(self, tab, problems: list[str], requests: list[str]) -> None:
        self.tab, self.problems, self.requests = tab, problems, requests

    def __getattr__(self, name: str):
        return getattr(self.tab, name)


def statuses_shown(page) -> list[str]:
    return page.eval_on_selector_all("#checks tbody tr:not([hidden])", "rows => rows.map(r => r.dataset.status)")


def column(page, index: int) -> list[str]:
    script = "(rows, i) => rows.map(r => r.cells[i].dataset.sort ?? r.cells[i].textContent)"
    return page.eval_on_selector_all("#checks tbody tr", script, index)


def test_the_page_loads_without_errors_or_requests(page, report):
    path, _ = report
    assert page.problems == []
    assert page.requests == [path.as_uri()]  # the page itself, nothing else
    assert page.title().startswith("convcheck report")


def test_markup_in_a_name_shows_as_text(page, tmp_path: Path):
    _, _, document, _ = run_report(tmp_path, MARKUP)
    tab = page.context.new_page()
    tab.goto((tmp_path / "report.html").as_uri())
    names = tab.locator("#checks tbody td.name").all_inner_texts()
    assert sorted(names) == sorted(c["name"] for c in document["checks"]) and all(n.startswith(MARKUP) for n in names)
    assert tab.locator("body b").count() == 0 and tab.locator("script").count() == 2
    tab.close()


def test_a_header_click_sorts_the_table_and_a_second_click_reverses_it(page):
    header = page.locator("#checks thead th").nth(5)  # input: the largest relative error of dx
    header.locator("button").click()
    values = [float(v) for v in column(page, 5)]
    assert values == sorted(values) and header.get_attribute("aria-sort") == "ascending"
    header.locator("button").click()
    assert [float(v) for v in column(page, 5)] == sorted(values, reverse=True)
    page.locator("#checks thead th").nth(1).locator("button").click()
    names = column(page, 1)
    assert names == sorted(names)


def test_the_filter_hides_what_does_not_match(page, report):
    _, document = report
    page.fill("#filter", "stride=2")
    expected = [c for c in document["checks"] if "stride=2" in c["name"]]
    assert len(statuses_shown(page)) == len(expected)
    page.select_option("#status-filter", "pass")
    assert statuses_shown(page) == ["pass"] * sum(c["status"] == "pass" for c in expected)
    assert page.inner_text("#shown").startswith(f"{sum(c['status'] == 'pass' for c in expected)} of 8")
    page.fill("#filter", "")
    page.select_option("#status-filter", "")
    assert len(statuses_shown(page)) == len(document["checks"])


def test_a_failing_checks_link_opens_its_panel_with_a_heatmap(page):
    link = page.locator("#checks a").first
    target = link.get_attribute("href")
    panel = page.locator(target)
    assert panel.get_attribute("open") is None
    link.click()
    page.wait_for_function("id => document.getElementById(id).open", arg=target[1:])
    assert panel.locator("svg.heatmap").first.is_visible()
    assert panel.locator("table.entries").first.is_visible()


def test_the_grid_colours_each_cell_by_its_checks_verdicts(page, report):
    _, document = report
    for rows, cols in [("filter_size", "stride"), ("padding", "")]:
        page.select_option("#grid-rows", rows)
        page.select_option("#grid-cols", cols)
        drawn = page.eval_on_selector_all("#grid-table tbody td", "cells => cells.map(c => c.className)")
        values = [sorted({c["config"][key] for c in document["checks"]}) for key in (rows, cols) if key]
        expected = []
        for cell in itertools.product(*values):
            chosen = dict(zip((rows, cols)[: len(cell)], cell, strict=True))
            inside = [c["status"] for c in document["checks"] if all(c["config"][k] == v for k, v in chosen.items())]
            expected.append("pass" if set(inside) == {"pass"} else "fail" if set(inside) == {"fail"} else "mixed")
        assert drawn == expected, (rows, cols)
    page.select_option("#grid-rows", "filter_size")
    page.select_option("#grid-cols", "stride")


def test_a_click_on_a_grid_cell_shows_its_checks_in_the_table(page, report):
    _, document = report
    page.select_option("#grid-rows", "filter_size")
    page.select_option("#grid-cols", "stride")
    page.locator("#grid-table tbody tr").nth(0).locator("td").nth(1).click()  # filter_size = 2, stride = 2
    inside = [c for c in document["checks"] if c["config"]["filter_size"] == 2 and c["config"]["stride"] == 2]
    assert statuses_shown(page) == [c["status"] for c in inside] and inside
    assert page.locator("#cell-filter").is_visible()
    page.click("#clear-cell")
    assert len(statuses_shown(page)) == len(document["checks"]) and not page.locator("#cell-filter").is_visible()


def test_a_screenshot_of_the_report(page, tmp_path: Path):
    page.reload()  # unsorted, unfiltered, every panel closed
    page.locator("#checks a").first.click()
    height = page.evaluate("document.documentElement.scrollHeight")
    page.set_viewport_size({"width": 1280, "height": height})  # the whole page, the table's header in place
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    keep = os.environ.get("CONVCHECK_HTML_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
