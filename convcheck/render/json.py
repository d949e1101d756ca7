"""The ``--json`` document: plain dicts written with the standard library's ``json`` (never through Rich).

The layout is the contract in DESIGN.md; keys may be added, never renamed. Findings, hints and notes are written
as their ``str()``, the sentences users read; indices are in the user's layout.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from convcheck.render.base import Run, counts, user_index
from convcheck.results import CheckResult, Entry, TensorResult
from convcheck.spec import Layout
from convcheck.sweeps import condition_of

__all__ = ["check_json", "render", "to_json"]


def _finite(value: float | None) -> float | str | None:
    """JSON has no NaN/Infinity: write them as strings."""
    if value is None:
        return None
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _entry_json(e: Entry, tensor: str, layout: Layout) -> dict[str, object]:
    return {
        "index": list(user_index(tensor, e.index, layout)),
        "analytic": _finite(e.analytic),
        "numeric": _finite(e.numeric),
        "abs_error": _finite(e.abs_error),
        "rel_error": _finite(e.rel_error),
        "allowed": _finite(e.allowed),
        "at_kink": e.at_kink,
    }


def _tensor_json(g: TensorResult, layout: Layout) -> dict[str, object]:
    return {
        "passed": g.passed,
        "max_abs_error": _finite(g.max_abs_error),
        "max_rel_error": _finite(g.max_rel_error),
        "checked": g.checked,
        "total": g.total,
        "projections": g.projections,
        "kinks": g.kinks,
        "over_tolerance": g.over_tolerance,
        "worst": _entry_json(g.worst[0], g.name, layout) if g.worst else None,
        "worst_entries": [_entry_json(e, g.name, layout) for e in g.worst],
    }


def _forward_json(r: CheckResult) -> dict[str, object] | None:
    f = r.forward
    if f is None:
        return None
    return {
        "max_abs_error": _finite(f.max_abs_error),
        "allowed": _finite(f.allowed),
        "ok": f.ok,
        "worst_index": list(user_index("input", f.worst_index, r.spec.layout)) if f.worst_index else None,
    }


def check_json(r: CheckResult) -> dict[str, object]:
    """One check's entry in ``checks``."""
    layout = r.spec.layout
    config = dict(r.spec.config) if r.spec.config else _spec_config(r)
    return {
        "name": r.name,
        "status": r.status.value,
        "config": config,
        "layer": r.spec.shape.describe(),
        "method": r.method.value if r.method else None,
        "forward_passes": r.forward_passes,
        "tolerance": None
        if r.tolerance is None
        else {"eps": r.tolerance.eps, "rtol": r.tolerance.rtol, "atol": r.tolerance.atol},
        "gradients": {g.name: _tensor_json(g, layout) for g in r.gradients},
        "forward": _forward_json(r),
        "contract": [str(finding) for finding in r.contract],
        "warnings": [str(finding) for finding in r.warnings],
        "diagnosis": [str(hint) for hint in r.diagnosis],
        "notes": [str(note) for note in r.notes],
        "error": r.error,
        "seconds": round(r.seconds, 6),
        "source": None if r.spec.source is None else {"file": r.spec.source.file, "line": r.spec.source.line},
    }


def _spec_config(r: CheckResult) -> dict[str, object]:
    """The check's settings, for a result whose spec did not come from a config file (the Python API)."""
    s = r.spec.shape
    flat = {p for pair in s.pads for p in pair}
    config: dict[str, object] = {
        "batch": s.batch,
        "in_height": s.in_height,
        "in_width": s.in_width,
        "in_depth": s.in_depth,
        "out_depth": s.out_depth,
        "filter_size": _per_axis(s.kernel),
        "stride": _per_axis(s.strides),
        "padding": flat.pop() if len(flat) == 1 else [list(pair) for pair in s.pads],
        "activation": r.spec.activation.value,
        "method": r.spec.method.value,
        "dtype": r.spec.dtype.value,
        "seed": r.spec.seed,
        "layout": r.spec.layout.value,
    }
    if not s.is_basic:  # the geometry keys beyond the seed's, as a config writes them
        config.update(dims=s.dims, in_frames=s.in_frames, dilation=_per_axis(s.dilations), groups=s.groups)
        config["bias"] = s.bias
    return config


def _per_axis(values: tuple[int, ...]) -> object:
    return values[0] if len(set(values)) == 1 else list(values)


def to_json(results: Sequence[CheckResult], run: Run) -> dict[str, object]:
    """The ``--json`` document as plain dicts (the contract in DESIGN.md; extra keys are additions)."""
    document: dict[str, object] = {
        "convcheck": run.version,
        "summary": counts(results, run.not_run),
        "checks": [check_json(r) for r in results],
    }
    sweep = condition_of(results)  # what the whole batch says: the condition that separates failures from passes
    document["sweep"] = sweep.to_json() if sweep is not None else None
    if run.interrupted:
        document["interrupted"] = True
    if run.not_run:
        document["not_run"] = list(run.not_run)  # the checks counted as skipped
    return document


def render(results: Sequence[CheckResult], run: Run) -> str:
    """The ``--json`` document as text, indented, ending in a newline."""
    return json.dumps(to_json(results, run), indent=2, allow_nan=False) + "\n"
