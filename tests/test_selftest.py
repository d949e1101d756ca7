"""The checker catches every planted bug, in the tensor that is wrong, and passes the correct layer.

One selftest run over the default sweeps (the seed's 2-D layers and the N-d ones, float64 and float32) is shared by
the tests below; each bug gets its own test per dtype so that a regression names the bug it let through.
"""

from __future__ import annotations

import math

import pytest

from convcheck import bugs
from convcheck.bugs import CATALOGUE
from convcheck.checker import run_check
from convcheck.geometry import PaddingMode
from convcheck.render.selftest import selftest_summary, selftest_table
from convcheck.results import Status
from convcheck.selftest import (
    DEFAULT_SWEEP,
    DTYPES,
    FINDINGS,
    GEOMETRY_SWEEP,
    SelftestReport,
    check_layer,
    expected_findings,
    run_selftest,
    sweep_of,
    with_dtype,
)
from convcheck.spec import DType, Method

BUG_IDS = bugs.ids()


@pytest.fixture(scope="module")
def report() -> SelftestReport:
    return run_selftest()


def _outcome(report: SelftestReport, bug_id: str):
    return next(b for b in report.bugs if b.bug.id == bug_id)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.value)
@pytest.mark.parametrize("bug_id", BUG_IDS)
def test_checker_catches_the_bug_in_its_tensors(report: SelftestReport, bug_id: str, dtype: DType):
    outcome = _outcome(report, bug_id)
    shown = {o.name: (o.status.value, o.findings, o.contract, o.error) for o in outcome.layers}
    assert outcome.caught_in(dtype), shown
    assert outcome.findings_in(dtype) == expected_findings(outcome.bug), shown
    assert not outcome.errors, shown


@pytest.mark.parametrize("bug_id", BUG_IDS)
def test_checker_is_silent_where_the_geometry_hides_the_bug(report: SelftestReport, bug_id: str):
    """Where the bug computes exactly what the correct layer does, failing it would be a false alarm."""
    outcome = _outcome(report, bug_id)
    for layer in outcome.layers:
        if not outcome.bug.exposes(layer.spec.shape, layer.spec.activation):
            assert layer.status is Status.PASS, (layer.name, layer.findings, layer.contract)


@pytest.mark.parametrize("bug_id", BUG_IDS)
def test_float64_catches_the_bug_on_every_layer_that_exposes_it(report: SelftestReport, bug_id: str):
    outcome = _outcome(report, bug_id)
    for layer in outcome.layers:
        if layer.spec.dtype is DType.FLOAT64 and outcome.bug.exposes(layer.spec.shape, layer.spec.activation):
            assert layer.status is Status.FAIL, (layer.name, layer.findings)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.value)
def test_correct_layer_passes_the_whole_sweep(report: SelftestReport, dtype: DType):
    for layer in report.correct:
        if layer.spec.dtype is dtype:
            assert layer.status is Status.PASS, (layer.name, layer.findings, layer.contract, layer.error)


def test_report_is_ok_and_covers_the_catalogue_in_both_dtypes(report: SelftestReport):
    assert report.ok, (report.missed, [o.name for o in report.false_alarms], [o.name for o in report.errors])
    assert [b.bug.id for b in report.bugs] == list(BUG_IDS)
    assert len(report.correct) == (len(DEFAULT_SWEEP) + len(GEOMETRY_SWEEP)) * len(DTYPES)
    assert all(len(b.layers) == len(sweep_of(b.bug, DEFAULT_SWEEP, GEOMETRY_SWEEP)) * len(DTYPES) for b in report.bugs)


@pytest.mark.parametrize("bug_id", BUG_IDS)
def test_every_failing_check_is_named_by_the_bugs_hint(report: SelftestReport, bug_id: str):
    outcome = _outcome(report, bug_id)
    unnamed = {o.name: o.hints for o in outcome.layers if o.status is Status.FAIL and outcome.bug.hint not in o.hints}
    assert outcome.hinted == outcome.failed > 0 and not unnamed, unnamed
    assert outcome.failed == outcome.exposed, "caught on exactly the layers that expose it"


def test_selftest_is_fast():
    """The CLI runs it on demand; it must stay a matter of seconds: tiny layers, few forward passes. Counted,
    not timed: every layer of the sweep is checked in full with grouped differences (fewer passes than one
    per entry), and the whole selftest (each bug and the correct layer, in each dtype) stays within a budget of
    50,000 forward passes of layers of at most a few hundred entries (well under a millisecond each)."""
    passes = {}
    for spec in (*DEFAULT_SWEEP, *GEOMETRY_SWEEP):
        s = spec.shape
        entries = math.prod(s.x_shape) + math.prod(s.w_shape) + math.prod(s.b_shape)
        result = run_check(spec)
        assert result.method is Method.FULL and result.forward_passes < entries <= 600, spec.name
        passes[spec.name] = result.forward_passes
    per_sweep = {False: sum(passes[s.name] for s in DEFAULT_SWEEP), True: sum(passes[s.name] for s in GEOMETRY_SWEEP)}
    total = sum(per_sweep.values()) + sum(per_sweep[bug.any_geometry] for bug in CATALOGUE)
    assert total * len(DTYPES) <= 50_000


def test_rows_give_plain_data_per_bug_and_a_row_for_the_correct_layer(report: SelftestReport):
    rows = report.rows()
    assert [r.id for r in rows] == [*BUG_IDS, "correct"]
    for row in rows[:-1]:
        bug = bugs.get(row.id)
        assert row.description == bug.description and row.hint == bug.hint
        assert row.caught and row.as_expected
        assert row.tensors == row.expected == expected_findings(bug)
        assert set(row.tensors) <= set(FINDINGS)
        assert row.layers and all(isinstance(name, str) for name in row.layers)
        assert row.runs == len(sweep_of(bug, DEFAULT_SWEEP, GEOMETRY_SWEEP)) * len(DTYPES)
        assert 0 < row.failed == row.exposed == row.hinted <= row.runs and row.exposed_by == bug.exposed_by
    correct = rows[-1]
    assert correct.caught and correct.layers == () and correct.tensors == ()
    assert correct.runs == len(report.correct) and correct.failed == 0


def test_the_table_and_summary_show_counts_and_the_layers_run(report: SelftestReport):
    table = selftest_table(report)
    headers = [str(column.header) for column in table.columns]
    assert headers == ["bug", "caught", "failed / exposed / run", "hinted", "showed in", "exposed by"]
    assert table.row_count == len(BUG_IDS) + 1
    caption = str(table.caption)
    assert all(spec.shape.describe() in caption for spec in (*DEFAULT_SWEEP, *GEOMETRY_SWEEP))
    failed = sum(b.failed for b in report.bugs)
    summary = selftest_summary(report)
    assert f"{len(BUG_IDS)} of {len(BUG_IDS)} planted bugs caught ({failed} of {failed} failing checks" in summary


def test_float32_sweep_runs_the_same_layers_in_float32():
    sweep = with_dtype(DEFAULT_SWEEP, DType.FLOAT32)
    assert [s.shape for s in sweep] == [s.shape for s in DEFAULT_SWEEP]
    assert all(s.dtype is DType.FLOAT32 and s.name.endswith("-float32") for s in sweep)
    assert len({s.name for s in sweep} | {s.name for s in DEFAULT_SWEEP}) == 2 * len(DEFAULT_SWEEP)


def test_default_sweep_covers_the_geometries_the_bugs_need():
    shapes = [s.shape for s in DEFAULT_SWEEP]
    assert {s.stride for s in shapes} >= {1, 2, 3}
    assert {s.filter_size for s in shapes} >= {1, 2, 3}
    assert {s.padding for s in shapes} >= {0, 1, 2}
    assert all(s.in_height != s.in_width for s in shapes)
    assert all(s.batch == 2 and 2 <= s.in_depth <= 3 and 2 <= s.out_depth <= 3 for s in shapes)


def test_parallel_run_gives_the_same_results():
    chosen = ("col2im-assign", "weights-accumulate", "padding-crop-unguarded")
    serial = run_selftest(bug_ids=chosen, dtypes=(DType.FLOAT64,))
    parallel = run_selftest(bug_ids=chosen, dtypes=(DType.FLOAT64,), jobs=2)
    summary = [[(o.name, o.status, o.findings) for o in b.layers] for b in serial.bugs]
    assert summary == [[(o.name, o.status, o.findings) for o in b.layers] for b in parallel.bugs]
    assert [o.status for o in serial.correct] == [o.status for o in parallel.correct]


def test_geometry_sweep_covers_the_whole_space_and_hides_each_bug_somewhere():
    shapes = [s.shape for s in GEOMETRY_SWEEP]
    assert {s.dims for s in shapes} == {1, 2, 3}
    assert any(max(s.dilations) > 1 for s in shapes) and any(len(set(s.kernel)) > 1 for s in shapes)
    assert any(len(set(s.strides)) > 1 for s in shapes) and any(s.groups == s.in_depth > 1 for s in shapes)
    assert {s.padding_mode for s in shapes} == set(PaddingMode)
    assert any(before != after for s in shapes for before, after in s.pads)
    assert any(not s.bias for s in shapes) and any(s.bias for s in shapes)
    assert not any(s.is_basic for s in shapes[:-1])
    for bug in CATALOGUE:
        if bug.any_geometry:
            exposed = [bug.exposes(spec.shape, spec.activation) for spec in GEOMETRY_SWEEP]
            assert any(exposed) and not all(exposed), bug.id


def test_a_subset_runs_only_the_named_bugs_and_unknown_ids_are_refused():
    sub = run_selftest(DEFAULT_SWEEP[:1], bug_ids=["bias-grad-mean"], dtypes=(DType.FLOAT64,))
    assert [b.bug.id for b in sub.bugs] == ["bias-grad-mean"] and len(sub.correct) == 1
    nd = run_selftest(geometry_sweep=GEOMETRY_SWEEP[:2], bug_ids=["depthwise-dx-summed"], dtypes=(DType.FLOAT64,))
    assert [o.spec for o in nd.correct] == list(GEOMETRY_SWEEP[:2]) and nd.ok
    with pytest.raises(KeyError, match="no-such-bug"):
        run_selftest(bug_ids=["no-such-bug"])


def test_a_missed_bug_or_a_false_alarm_makes_the_report_not_ok():
    spec = DEFAULT_SWEEP[3]  # k = 1: a flipped kernel is the same kernel, so the bug is not exposed
    assert not bugs.get("kernel-flipped-backward").exposes(spec.shape, spec.activation)
    missed = run_selftest([spec], bug_ids=["kernel-flipped-backward"], dtypes=(DType.FLOAT64,))
    assert not missed.ok and missed.missed == ("kernel-flipped-backward",)
    assert check_layer(spec).status is Status.PASS


@pytest.mark.parametrize("bug", CATALOGUE, ids=lambda b: b.id)
def test_expected_findings_are_the_tensors_or_the_contract(bug):
    expected = expected_findings(bug)
    assert expected == (("contract",) if bug.breaks_contract else bug.tensors)


def test_progress_counts_every_check():
    seen = []
    run_selftest(DEFAULT_SWEEP[:2], bug_ids=["bias-grad-mean"], progress=lambda done, total: seen.append((done, total)))
    total = 2 * 2 * len(DTYPES)  # (correct layer + one bug) × two layers × dtypes
    assert seen == [(i, total) for i in range(1, total + 1)]
