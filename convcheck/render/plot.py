"""PNG heatmaps (``convcheck run --plot DIR``), drawn with matplotlib, an optional extra.

The same grids as the terminal's heatmaps (``grids``), on a log colour scale spanning four decades below the
largest cell, as the terminal's shades do. matplotlib's object-oriented API is used, so no global pyplot state
or backend is touched.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from convcheck.render.files import write_atomic
from convcheck.render.grids import Measure, finite_top, forward_grid, gradient_grid, shown_channels
from convcheck.results import CheckResult, TensorResult

__all__ = ["PlotUnavailable", "file_stem", "write_pngs"]


class PlotUnavailable(ImportError):
    """PNG heatmaps need matplotlib, which is an optional extra."""

    def __init__(self) -> None:
        super().__init__(
            "PNG heatmaps need matplotlib, which is not installed: pip install 'convcheck[plot]' "
            "(or pip install matplotlib)"
        )


def _matplotlib() -> tuple[Any, Any]:
    """``(Figure, FigureCanvasAgg)``, imported on demand; raises ``PlotUnavailable`` without matplotlib.

    The object-oriented API is used so that no global pyplot state or backend is touched.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailable() from exc
    return Figure, FigureCanvasAgg


def file_stem(result: CheckResult) -> str:
    """The start of a check's PNG file names: its name made file-safe, and a hash that keeps it unique.

    Making a name file-safe is not one-to-one (``α`` and ``β``, ``a[x=1]`` and ``a(x=1)`` would share a file),
    and two config files may each have a check of the same name, so 8 hex digits of a hash of the config file
    and the name follow: the same check gets the same files on every run, two checks never share one.
    """
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", result.name).strip("._")[:80] or "check"
    source = result.spec.source.file if result.spec.source is not None else ""
    digest = hashlib.sha256(f"{source}\0{result.name}".encode()).hexdigest()[:8]
    return f"{readable}-{digest}"


def _draw(ax: Any, grid: np.ndarray, title: str, xlabel: str, ylabel: str, top: float, calm: bool = False) -> Any:
    """One heatmap on a log colour scale spanning four decades below ``top`` (as the terminal's shades);
    zero cells are white, unchecked cells grey, infinite ones (non-finite analytic values) full; greens for a
    tensor that passed."""
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.ticker import MaxNLocator

    cmap = colormaps["Greens" if calm else "magma_r"].with_extremes(under="white", bad="lightgrey")
    norm = LogNorm(vmin=top * 1e-4, vmax=top) if top > 0 else Normalize(vmin=0, vmax=1)
    shown = np.where(np.isinf(grid), max(top, 1.0), grid)
    shown = np.where(shown > 0, shown, 0.0 if top <= 0 else top * 1e-6)  # below vmin: drawn as "under"
    shown = np.where(np.isnan(grid), np.nan, shown)
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return image


def _short_what(measure: Measure) -> str:
    """A colorbar label."""
    return {
        Measure.EXCESS: "Σ error/allowed, entries over tolerance",
        Measure.RATIO: "Σ error/allowed",
        Measure.ABS: "Σ |analytic − numeric|",
    }[measure]


def _png_status(g: TensorResult | None) -> str:
    return " — within tolerance" if g is not None and g.passed else ""


def _forward_figure(result: CheckResult, figure: Any) -> Any | None:
    """The output's error over ``(oh, ow)``, when the forward failed."""
    f = result.forward
    grid = forward_grid(result)
    if grid is None or f is None or f.ok:
        return None
    fig = figure(figsize=(5, 4), layout="constrained")
    ax = fig.add_subplot()
    image = _draw(ax, grid, f"{result.name}: output error (Σ over n, c_out)", "ow", "oh", finite_top(grid))
    fig.colorbar(image, ax=ax, label="Σ |output − reference| / allowed, over tolerance")
    return fig


def _input_figure(result: CheckResult, measure: Measure | None, figure: Any) -> Any | None:
    """The input gradient's error over ``(h, w)``."""
    g, m, grid = gradient_grid(result, "input", measure)
    if grid is None:
        return None
    fig = figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.add_subplot()
    calm = g is not None and g.passed
    title = f"{result.name}: input gradient error (Σ over n, c_in){_png_status(g)}"
    image = _draw(ax, grid, title, "w", "h", finite_top(grid), calm)
    fig.colorbar(image, ax=ax, label=_short_what(m))
    return fig


def _weights_figure(result: CheckResult, measure: Measure | None, figure: Any) -> Any | None:
    """The weight gradient's error over ``(kh, kw)``, one panel per input channel (up to ``MAX_CHANNELS``)."""
    g, m, grids = gradient_grid(result, "weights", measure)
    if grids is None:
        return None
    channels = shown_channels(grids)
    cols = min(4, len(channels))
    rows = math.ceil(len(channels) / cols)
    fig = figure(figsize=(2.4 * cols + 1, 2.2 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    top = finite_top(grids)
    image = None
    for ax, c in zip(axes.flat, channels, strict=False):
        image = _draw(ax, grids[c], f"c_in {c}", "kw", "kh", top, g is not None and g.passed)
    for ax in list(axes.flat)[len(channels) :]:
        ax.set_axis_off()
    fig.suptitle(f"{result.name}: weight gradient error (Σ over c_out){_png_status(g)}", fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=axes, label=_short_what(m))
    return fig


def write_pngs(result: CheckResult, directory: str | Path, measure: Measure | None = None) -> list[Path]:
    """Write PNG heatmaps of ``result`` into ``directory`` (created if missing).

    Files are named after the check (``file_stem``: ``<name>-<hash>``): ``<stem>-forward.png`` (when the
    forward failed), ``<stem>-input.png`` and ``<stem>-weights.png`` (one panel per input channel, up to
    ``MAX_CHANNELS``). Each file is written atomically (``files.write_atomic``).

    Args:
        result: any finished check; nothing is written for tensors without arrays.
        directory: where to write.
        measure: as for ``heatmap.heatmaps``.
    Returns:
        The paths written.
    Raises:
        PlotUnavailable: matplotlib is not installed (the ``plot`` extra).
        OSError: a file could not be written (``filename`` and ``strerror`` say which and why).
    """
    figure, canvas = _matplotlib()
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = file_stem(result)
    figures = {
        "forward": _forward_figure(result, figure),
        "input": _input_figure(result, measure, figure),
        "weights": _weights_figure(result, measure, figure),
    }
    written: list[Path] = []
    for suffix, fig in figures.items():
        if fig is not None:
            path = out_dir / f"{stem}-{suffix}.png"
            canvas(fig)
            png = io.BytesIO()
            fig.savefig(png, format="png", dpi=120)
            write_atomic(path, png.getvalue())
            written.append(path)
    return written
