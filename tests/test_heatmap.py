"""Heatmaps show where errors are: the grids the renderers draw have the planted bug's pattern, exactly.

The grids are pure functions of a result, so the patterns are asserted on numpy arrays: the border a loop
that stops one window short leaves, the overlap an assigning col2im leaves, nothing for a correct layer. The
Rich rendering is smoke-tested with a recording console and colour off (the shade characters carry the
pattern); PNGs are written only when matplotlib is installed.
"""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
from rich.console import Console

from convcheck import bugs
from convcheck.checker import run_check
from convcheck.layer import MatrixConvLayer
from convcheck.render import grids, heatmap, plot
from convcheck.render.grids import Measure, entry_errors, forward_grid, input_grid, weight_grids
from convcheck.render.heatmap import MAX_COLUMNS, MAX_ROWS, SHADES, heatmaps, render_grid, shade_levels
from convcheck.render.plot import PlotUnavailable, write_pngs
from convcheck.results import CheckResult
from convcheck.spec import Activation, CheckSpec, ConvShape, Method


def _result(bug_id: str | None, shape: ConvShape, activation=Activation.NONE, method=Method.FULL) -> CheckResult:
    """A checked layer; no activation by default, so every entry a bug touches is wrong (no masked zeros)."""
    spec = CheckSpec(name=f"{bug_id or 'correct'}", shape=shape, activation=activation, method=method)
    layer = (
        MatrixConvLayer(shape.stride, shape.padding, activation)
        if bug_id is None
        else bugs.get(bug_id).make(shape.stride, shape.padding, activation)
    )
    return run_check(spec, layer=layer)


def _window_rows(i: int, size: int, k: int, s: int, p: int) -> np.ndarray:
    rows = np.arange(size) + p
    return (rows >= i * s) & (rows < i * s + k)


def _coverage(size: int, k: int, s: int, p: int, count: int) -> np.ndarray:
    return sum(_window_rows(i, size, k, s, p).astype(int) for i in range(count))


def _text(renderables, width: int = 100) -> str:
    console = Console(record=True, width=width, no_color=True, color_system=None, force_terminal=False)
    for r in renderables:
        console.print(r)
    return console.export_text()


def test_last_window_bug_lights_exactly_the_bottom_right_border() -> None:
    shape = ConvShape(2, 6, 7, 2, 3, filter_size=3, stride=1, padding=1)
    result = _result("col2im-last-window-dropped", shape)
    grid = input_grid(result)
    assert grid.shape == (6, 7)
    rows = _window_rows(shape.out_height - 1, 6, 3, 1, 1)
    cols = _window_rows(shape.out_width - 1, 7, 3, 1, 1)
    np.testing.assert_array_equal(grid > 0, rows[:, None] | cols[None, :])


def test_assigning_col2im_lights_exactly_where_windows_overlap() -> None:
    shape = ConvShape(2, 7, 6, 3, 2, filter_size=3, stride=2, padding=0)
    grid = input_grid(_result("col2im-assign", shape))
    overlap = np.outer(_coverage(7, 3, 2, 0, shape.out_height), _coverage(6, 3, 2, 0, shape.out_width)) > 1
    np.testing.assert_array_equal(grid > 0, overlap)


def test_stride_bug_lights_positions_no_window_reaches() -> None:
    """Stride 3 > k = 2 leaves every third row and column unreached (a periodic pattern); placing windows
    without the stride puts gradient there."""
    shape = ConvShape(1, 8, 8, 2, 2, filter_size=2, stride=3, padding=0)
    grid = input_grid(_result("col2im-ignores-stride", shape))
    unreached = np.outer(_coverage(8, 2, 3, 0, 3), _coverage(8, 2, 3, 0, 3)) == 0
    assert np.all(grid[unreached & (np.arange(8)[:, None] < 4) & (np.arange(8)[None, :] < 4)] > 0)


def test_weight_bug_shows_in_the_weight_grids_only() -> None:
    shape = ConvShape(2, 5, 6, 3, 2, filter_size=3, stride=1, padding=1)
    result = _result("weights-row-order", shape)
    assert not np.any(input_grid(result))
    grids = weight_grids(result)
    assert grids.shape == (3, 3, 3)  # (C_in, k, k)
    assert np.any(grids > 0)


def test_correct_layer_grids_are_zero_and_forward_grid_too() -> None:
    result = _result(None, ConvShape(2, 5, 6, 2, 3, filter_size=3, stride=2, padding=1), Activation.RELU)
    assert result.passed
    assert not np.any(input_grid(result)) and not np.any(weight_grids(result)) and not np.any(forward_grid(result))
    assert "no entry over tolerance" not in _text(heatmaps(result))  # passing tensors show error/allowed instead


def test_forward_bug_gets_an_output_grid() -> None:
    result = _result("forward-flipped-kernel", ConvShape(2, 5, 5, 2, 2, filter_size=3), Activation.RELU)
    grid = forward_grid(result)
    assert grid.shape == (3, 3) and np.any(grid > 0)
    assert "output error over (oh, ow)" in _text(heatmaps(result))


def test_unchecked_entries_are_nan_and_drawn_blank() -> None:
    shape = ConvShape(2, 9, 9, 3, 2, filter_size=3, stride=1, padding=1)
    result = _result("relu-mask-missing", shape, Activation.RELU, method=Method.SAMPLED)
    values = entry_errors(result.gradient("input"))
    assert np.isnan(values).any() and np.isfinite(values).any()
    assert np.all(shade_levels(np.array([[np.nan]])) == -1)


@pytest.mark.parametrize("measure", list(Measure))
def test_every_measure_gives_a_grid(measure: Measure) -> None:
    result = _result("grads-scaled-by-batch", ConvShape(2, 5, 5, 2, 2, filter_size=3, padding=1))
    grid = input_grid(result, measure)
    assert grid.shape == (5, 5) and np.all(grid >= 0) and np.any(grid > 0)
    if measure is Measure.RATIO:
        assert np.all(grid >= input_grid(result, Measure.EXCESS))


def test_shade_levels_are_decades_below_the_maximum() -> None:
    grid = np.array([[0.0, 1e-9, 1.5e-3, 2e-2, 0.5, 1.0, np.inf, np.nan]])
    assert shade_levels(grid, top=1.0).tolist() == [[0, 1, 2, 3, 4, 4, 4, -1]]


def test_render_grid_draws_the_levels_with_coordinates() -> None:
    grid = np.zeros((3, 4))
    grid[2, :] = 1.0  # a bottom border
    lines = render_grid(grid).plain.splitlines()
    assert lines[0].split()[1:] == ["0", "1", "2", "3"]
    assert lines[1].split() == ["0", SHADES[0] * 8] and lines[3].split() == ["2", SHADES[4] * 8]


def test_large_grids_are_pooled_and_keep_thin_lines() -> None:
    grid = np.zeros((70, 150))
    grid[69, :] = 1.0  # one row of errors at the very bottom
    lines = render_grid(grid).plain.splitlines()
    assert len(lines) - 1 <= MAX_ROWS
    body = [line.split(" ", 1)[1] if " " in line.strip() else "" for line in lines[1:]]
    assert SHADES[4] in lines[-1] and all(SHADES[4] not in b for b in body[:-1])
    assert max(len(line) for line in lines) <= MAX_COLUMNS + 6


def test_heatmaps_render_without_colour() -> None:
    """With colour off the pattern is still there, in the shade characters, and the legend explains them."""
    shape = ConvShape(2, 6, 7, 2, 3, filter_size=3, stride=1, padding=1)
    text = _text(heatmaps(_result("col2im-last-window-dropped", shape)))
    assert "input gradient error over (h, w)" in text and "weight gradient error over (kh, kw)" in text
    assert "≥ max/10" in text and "over tolerance" in text
    grid_lines = [line for line in text.splitlines() if line[:3].strip().isdigit()][:6]
    assert grid_lines[0].rstrip().endswith(SHADES[4] * 4)  # the last two columns (two characters per cell)
    assert SHADES[0] * 8 in grid_lines[0]


def test_seed_sized_layer_fits_the_terminal() -> None:
    shape = ConvShape(1, 32, 48, 2, 2, filter_size=3, stride=1, padding=1)
    text = _text(heatmaps(_result("padding-crop-off-by-one", shape)), width=100)
    assert max(len(line) for line in text.splitlines()) <= 100


def test_plot_unavailable_has_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    result = _result("col2im-assign", ConvShape(1, 5, 5, 1, 1, filter_size=3, stride=2))
    with pytest.raises(PlotUnavailable, match=r"pip install 'convcheck\[plot\]'"):
        write_pngs(result, "unused")
    assert issubclass(PlotUnavailable, ImportError)


def test_write_pngs(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    result = _result("forward-flipped-kernel", ConvShape(2, 5, 5, 2, 2, filter_size=3), Activation.RELU)
    result = type(result)(**{**result.__dict__, "name": "seed/k3 s1"})
    paths = write_pngs(result, tmp_path / "plots")
    stem = plot.file_stem(result)
    assert stem.startswith("seed_k3_s1-")
    assert [p.name for p in paths] == [f"{stem}-forward.png", f"{stem}-input.png", f"{stem}-weights.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("module", [grids, heatmap, plot], ids=lambda m: m.__name__)
def test_module_lists_its_public_names(module) -> None:
    assert all(hasattr(module, name) for name in module.__all__)


def test_a_passing_checks_heatmap_is_shaded_against_its_tolerance_not_solid() -> None:
    spec = CheckSpec("ok", ConvShape(2, 8, 9, 3, 4, 3, 1, 1), Activation.RELU, method=Method.FULL)
    result = run_check(spec)
    assert result.passed
    console = Console(width=100, record=True, color_system=None)
    for part in heatmaps(result):
        console.print(part)
    text = console.export_text()
    cells = "".join(line.split(" ", 1)[1] for line in text.splitlines() if re.match(r"\s*\d+ [·░▒▓█]", line))
    assert cells and cells.count("█") < len(cells) / 2  # errors ≪ the bound: never a solid block
    assert "every entry at its bound" in text
    ratio = grids.input_grid(result, Measure.RATIO)
    g = result.gradient("input")
    assert np.nanmax(ratio) <= g.analytic.shape[0] * g.analytic.shape[3]  # the top of the scale bounds every cell


def test_has_pattern_means_some_cells_wrong_and_some_right() -> None:
    assert grids.has_pattern(np.array([[0.0, 1.0], [np.nan, 2.0]]))
    assert not grids.has_pattern(np.array([[1.0, 1.0], [3.0, np.nan]]))
    assert not grids.has_pattern(np.zeros((2, 2))) and not grids.has_pattern(None)
