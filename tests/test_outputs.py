"""Output files: never destroy what is there, never lose what was computed.

``files.write_atomic`` replaces regular files atomically and writes *through* everything else (symlinks,
devices, FIFOs); every failure names the path and the reason; a killed write leaves no empty hidden file; the
CLI keeps the verdict in its exit code when an output cannot be written; PNG names never collide.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convcheck.checker import run_check
from convcheck.cli import app
from convcheck.exitcodes import ExitCode
from convcheck.render import plot
from convcheck.render.files import TEMP_SUFFIX, clean_stale_temporaries, write_atomic
from convcheck.spec import CheckSpec, ConvShape, ImplRef

ROOT = Path(__file__).resolve().parent.parent
ENV = {"NO_COLOR": "1", "COLUMNS": "160", "GITHUB_ACTIONS": "false"}
SMALL = "batch: 1\nin_height: 4\nin_width: 4\nin_depth: 1\nout_depth: 2\nfilter_size: 3\n"
HAS_DEV_FULL = os.path.exists("/dev/full") and stat.S_ISCHR(os.stat("/dev/full").st_mode)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env=ENV)


def temporaries(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir() if path.name.endswith(TEMP_SUFFIX)]


# --- what a path is decides how it is written --------------------------------------------------------------


def test_a_regular_file_is_replaced_whole_and_keeps_its_permissions(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "report.json"
    write_atomic(target, "first")
    assert target.read_text() == "first"
    os.chmod(target, 0o640)
    inode = target.stat().st_ino
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert target.stat().st_ino != inode  # replaced by a rename, not rewritten in place
    assert temporaries(target.parent) == []


def test_a_new_file_gets_the_umask_not_the_temporary_files_0600(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        write_atomic(tmp_path / "new.xml", "x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "new.xml").stat().st_mode) == 0o644


def test_a_symlink_is_written_through_and_stays_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real.name)
    write_atomic(link, "new")
    assert link.is_symlink() and os.readlink(link) == real.name
    assert real.read_text() == "new"
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to("made/here.json")
    write_atomic(dangling, "created")
    assert dangling.is_symlink() and (tmp_path / "made" / "here.json").read_text() == "created"


def test_dev_null_is_written_into_never_replaced() -> None:
    before = os.stat("/dev/null")
    write_atomic("/dev/null", "discarded")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert not [name for name in os.listdir("/dev") if name.endswith(TEMP_SUFFIX)]


def test_a_fifo_is_written_into_when_read_and_refused_without_a_reader(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OSError) as info:  # no reader: refused at once, never a hang
        write_atomic(fifo, "nobody")
    assert info.value.errno == errno.ENXIO and "nobody is reading" in info.value.strerror
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    for _ in range(10_000):  # until the reader has opened its end (the open without a reader fails at once)
        try:
            write_atomic(fifo, "through the pipe")
            break
        except OSError as exc:
            assert exc.errno == errno.ENXIO
    reader.join(timeout=30)
    assert received == [b"through the pipe"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.skipif(not HAS_DEV_FULL, reason="needs /dev/full")
def test_a_full_disk_is_reported_with_the_path_and_the_reason() -> None:
    with pytest.raises(OSError) as info:
        write_atomic("/dev/full", "x" * 100_000)
    assert info.value.filename == "/dev/full"
    assert info.value.strerror == "no space left on the device"


def test_folders_loops_and_files_in_the_way_are_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    (tmp_path / "file").write_text("x")
    cases = {tmp_path: "is a folder", tmp_path / "loop1": "symlink loop", tmp_path / "file" / "x.json": "not a folder"}
    for path, reason in cases.items():
        with pytest.raises(OSError) as info:
            write_atomic(path, "x")
        assert info.value.filename == str(path) and reason in info.value.strerror, info.value
    assert (tmp_path / "file").read_text() == "x"


# --- temporary files: never left empty, stale ones cleaned --------------------------------------------------


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def test_stale_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    stale = tmp_path / f".report.json.{dead_pid()}.abcd{TEMP_SUFFIX}"
    live = tmp_path / f".report.json.{os.getppid()}.abcd{TEMP_SUFFIX}"
    other = tmp_path / f".other.json.{dead_pid()}.abcd{TEMP_SUFFIX}"
    for path in (stale, live, other):
        path.write_text("")
    write_atomic(target, "x")
    assert not stale.exists() and live.exists() and other.exists()
    assert clean_stale_temporaries(tmp_path / "other.json") == [other]


WRITER = textwrap.dedent(
    """
    import sys
    from convcheck.render.files import write_atomic
    payload = b"x" * 5_000_000
    n = 0
    while True:
        write_atomic(sys.argv[1], payload)
        n += 1
        if n == 2:
            print("writing", flush=True)
    """
)


@pytest.mark.parametrize("unnamed", [True, False], ids=["O_TMPFILE", "named-temporary"])
def test_kill_9_during_a_write_leaves_no_empty_hidden_file(tmp_path: Path, unnamed: bool) -> None:
    """Whenever the writer dies, the target is whole and no empty temporary file is left; and with O_TMPFILE a
    temporary file only ever has a name once complete. The next write cleans what a killed one left."""
    if unnamed and not hasattr(os, "O_TMPFILE"):
        pytest.skip("no O_TMPFILE on this system")
    target = tmp_path / "report.json"
    script = WRITER if unnamed else "import os; del os.O_TMPFILE\n" + WRITER
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(3):
        writer = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, env=env)
        assert writer.stdout is not None and writer.stdout.readline() == b"writing\n"
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        assert target.stat().st_size == 5_000_000  # the last complete write, never a half
        left = temporaries(tmp_path)
        if unnamed:
            assert all(path.stat().st_size == 5_000_000 for path in left), left
        write_atomic(target, "clean")
        assert temporaries(tmp_path) == []


# --- the command: the verdict survives an output that cannot be written -------------------------------------


def config(tmp_path: Path, impl: str | None = None) -> Path:
    path = tmp_path / "layer.yaml"
    path.write_text(SMALL + (f"impl: {impl}\n" if impl else ""))
    return path


@pytest.mark.skipif(not HAS_DEV_FULL, reason="needs /dev/full")
@pytest.mark.parametrize(
    ("impl", "code"),
    [(None, ExitCode.OK_NOT_WRITTEN), (str(ROOT / "examples" / "buggy_col2im.py"), ExitCode.FAILED_NOT_WRITTEN)],
    ids=["passed", "failed"],
)
def test_a_full_disk_keeps_the_verdict_in_the_exit_code_and_the_other_files(tmp_path: Path, impl, code) -> None:
    junit = tmp_path / "report.xml"
    result = invoke("run", str(config(tmp_path, impl)), "--json", "/dev/full", "--junit", str(junit))
    assert result.exit_code == code, result.stderr
    assert "could not write /dev/full: no space left on the device" in result.stderr
    assert ET.parse(junit).getroot().tag in ("testsuites", "testsuite")  # the other report is still written
    assert code & 1 == (impl is not None)  # the low bit is the verdict, as for 0 and 1


def test_json_through_a_symlink_and_into_dev_null(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    result = invoke("run", str(config(tmp_path)), "--json", str(link), "--junit", "/dev/null")
    assert result.exit_code == ExitCode.OK, result.stderr
    assert link.is_symlink() and json.loads(real.read_text())["summary"]["passed"] == 1
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_exit_codes_4_and_5_are_0_and_1_with_a_report_missing() -> None:
    assert ExitCode.for_results([], written=False) is ExitCode.OK_NOT_WRITTEN
    assert {int(ExitCode.OK_NOT_WRITTEN) & 1, int(ExitCode.FAILED_NOT_WRITTEN) & 1} == {0, 1}
    assert ExitCode.INVALID not in (ExitCode.OK_NOT_WRITTEN, ExitCode.FAILED_NOT_WRITTEN)


# --- PNG heatmaps: one set of files per check ----------------------------------------------------------------


def test_plot_file_names_are_unique_and_stable_per_check(tmp_path: Path) -> None:
    """Names that make the same file-safe text (non-ASCII, brackets) still get their own files."""
    pytest.importorskip("matplotlib")
    buggy = ImplRef("buggy_col2im.py", base_dir=ROOT / "examples")
    shape = ConvShape(1, 5, 5, 1, 1, filter_size=3, stride=2)
    names = ["α", "β", "a[x=1]", "a(x=1)", "a x 1"]
    results = [run_check(CheckSpec(name=name, shape=shape, impl=buggy)) for name in names]
    written = [path for result in results for path in plot.write_pngs(result, tmp_path)]
    assert len(written) == 2 * len(names) and len(set(written)) == len(written)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(path.name for path in written)
    again = run_check(CheckSpec(name="α", shape=shape, impl=buggy))
    assert plot.file_stem(again) == plot.file_stem(results[0])  # stable: the same check, the same files


def test_outputs_are_judged_before_the_run_by_what_they_are(tmp_path: Path) -> None:
    """``--json /dev/null`` and a FIFO are fine (written into); a folder, a loop or a file in the way are not."""
    from convcheck.render.files import output_problem

    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "file").write_text("")
    assert output_problem("/dev/null") is None and output_problem(tmp_path / "pipe") is None
    assert output_problem(tmp_path / "new" / "deeper" / "report.json") is None
    assert output_problem(tmp_path, folder=True) is None
    assert output_problem(tmp_path) == "is a folder"
    assert "symlink loop" in (output_problem(tmp_path / "loop") or "")
    assert output_problem(tmp_path / "file", folder=True) == "is not a folder"
    assert "not a folder" in (output_problem(tmp_path / "file" / "x.json") or "")
