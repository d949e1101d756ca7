"""GitHub workflow commands: names and messages with the characters that end a command are escaped."""

from __future__ import annotations

import re

from convcheck.render.annotations import escape_data, escape_property, github_annotations
from convcheck.results import CheckResult, Status
from convcheck.spec import CheckSpec, ConvShape, SourceLocation

NASTY = "sweep[stride=1,padding=0]: 100% of\nrows\r"


def unescape(text: str) -> str:
    return re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), text)


def test_escapes_round_trip_and_leave_no_command_character_behind():
    for text in (NASTY, "%0A already escaped?", "a:b,c"):
        data, prop = escape_data(text), escape_property(text)
        assert unescape(data) == text and unescape(prop) == text
        assert not set("\r\n") & set(data) and not set("\r\n:,") & set(prop)


def test_an_annotation_is_one_line_whatever_the_check_is_called():
    spec = CheckSpec(NASTY, ConvShape(1, 3, 3, 1, 1, 1), source=SourceLocation("dir,1/a:b.yaml", 7, 3))
    result = CheckResult(NASTY, Status.ERROR, spec, 0.0, error="line one\nline two: 5%")
    (line,) = github_annotations([result])
    assert "\n" not in line and "\r" not in line
    match = re.fullmatch(r"::error file=([^,:]*),line=7,title=([^,:]*)::(.*)", line)
    assert match is not None, line
    assert unescape(match.group(1)) == "dir,1/a:b.yaml"
    assert unescape(match.group(2)) == f"convcheck {NASTY}"
    assert unescape(match.group(3)) == "line one\nline two: 5%"
