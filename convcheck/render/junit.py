"""The ``--junit`` document: one ``testcase`` per check, for CI systems that read JUnit XML.

A failed check is a ``failure`` whose message is ``base.failure_message`` and whose body is the failure panel
as plain text (what failed, the hint, the worst entries, the tolerance); a check that could not run is an
``error`` with its message; a check the layer refused as its config expects, or that the run stopped before, is
``skipped`` with the reason. Checks from a config file carry its file and line, and its stem as the class name.
When a condition on the hyperparameters separates the failures from the passes (``convcheck.sweeps``), the
suite's ``properties`` carry it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from convcheck.render.base import Run, counts, failure_message
from convcheck.render.panels import explain_text
from convcheck.results import CheckResult, Status
from convcheck.sweeps import condition_of

__all__ = ["render"]

PANEL_WIDTH = 100  # columns of the failure panel in a failure's body (CI systems show it in a fixed-width font)

#: JUnit attribute → ``counts`` key: the same numbers as the summary line and the JSON.
_ATTRIBUTES = (("tests", "total"), ("failures", "failed"), ("errors", "errors"), ("skipped", "skipped"))


def render(results: Sequence[CheckResult], run: Run) -> str:
    """The JUnit XML document (``run.suite`` names the suite), with its XML declaration, ending in a newline."""
    suite = run.suite
    c = counts(results, run.not_run)
    numbers = {key: str(c[name]) for key, name in _ATTRIBUTES}
    root = ET.Element("testsuites", {"name": suite, **numbers})
    time = f"{sum(r.seconds for r in results):.3f}"
    ts = ET.SubElement(root, "testsuite", {"name": suite, **numbers, "time": time})
    sweep = condition_of(results)
    if sweep is not None:
        properties = ET.SubElement(ts, "properties")
        ET.SubElement(properties, "property", name="convcheck.sweep", value=sweep.condition)
        ET.SubElement(properties, "property", name="convcheck.sweep.sentence", value=sweep.sentence)
    for r in results:
        classname = Path(r.spec.source.file).stem if r.spec.source else suite
        case = ET.SubElement(ts, "testcase", name=r.name, classname=classname, time=f"{r.seconds:.3f}")
        if r.spec.source:
            case.set("file", r.spec.source.file)
            case.set("line", str(r.spec.source.line))
        if r.status is Status.FAIL:
            ET.SubElement(case, "failure", message=failure_message(r)).text = explain_text(r, width=PANEL_WIDTH)
        elif r.status is Status.ERROR:
            ET.SubElement(case, "error", message=r.error or "error").text = r.error or "error"
        elif r.status is Status.SKIPPED:
            reason = "; ".join(map(str, r.notes)) or "skipped"
            ET.SubElement(case, "skipped", message=reason).text = reason
    for name in run.not_run:
        case = ET.SubElement(ts, "testcase", name=name, classname=suite, time="0.000")
        ET.SubElement(case, "skipped", message="not run: the run stopped before this check")
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
