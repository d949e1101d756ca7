"""Prove the checker: run every planted bug over a small sweep of layers, and the correct layer beside them.

A pass from a gradient checker means something only if the checker fails every realistic wrong layer (in the
tensor that is wrong) and passes the correct one on the same layers. ``run_selftest`` measures both, in
float64 and float32, and returns the evidence as frozen values; rendering it is the CLI's job.

The default sweep is chosen so that every catalogue bug of the seed's 2-D layer is exposed by at least one layer
(``bugs`` states which geometry exposes which bug, and its tests prove it): overlapping windows (s < k), gaps
between windows (s > k), s = k, k = 1, padding 0..2, H ≠ W, outputs that leave a remainder of the padded input,
batch 2, 2-3 channels, and relu, leaky relu and no activation. The bugs of the whole N-d space (``any_geometry``:
dilation, per-axis kernels and strides, per-side and ``same`` padding, groups, no bias) run on
``GEOMETRY_SWEEP`` instead: 1-, 2- and 3-D layers that between them expose each of those bugs and hide each
one somewhere. The correct layer runs on both. The layers are tiny so that the whole selftest costs a few
thousand forward passes of a few hundred multiply-adds each.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from convcheck import bugs
from convcheck.batch.local import run_batch
from convcheck.bugs import TENSOR_ORDER, PlantedBug
from convcheck.checker import run_check
from convcheck.layer import MatrixConvLayer
from convcheck.results import CheckResult, Finding, Status
from convcheck.spec import Activation, CheckSpec, ConvShape, DType, Method

#: What a check can show a bug in: the gradients and the forward (``TENSOR_ORDER``), or the layer's contract
#: (shapes, dtypes, NaN, mutation, repeatability of ``backward``).
FINDINGS = (*TENSOR_ORDER, "contract")

DTYPES = (DType.FLOAT64, DType.FLOAT32)


def _layer(
    batch: int, height: int, width: int, c_in: int, c_out: int, k: int, s: int, p: int, activation: Activation
) -> CheckSpec:
    shape = ConvShape(batch, height, width, c_in, c_out, filter_size=k, stride=s, padding=p)
    name = f"k{k}-s{s}-p{p}-{batch}x{height}x{width}x{c_in}-{c_out}-{activation.value}"
    return CheckSpec(name=name, shape=shape, activation=activation, method=Method.FULL, seed=0)


#: The default sweep (float64; ``run_selftest`` derives the float32 one). What each layer is there for:
DEFAULT_SWEEP: tuple[CheckSpec, ...] = (
    # overlapping windows, padding 1, N·OH·OW = 70 (not a multiple of the chunk size)
    _layer(2, 5, 7, 2, 3, k=3, s=1, p=1, activation=Activation.RELU),
    # stride 2 with overlap, p = 0 (the seed's crop), a column the windows never reach
    _layer(2, 7, 6, 3, 2, k=3, s=2, p=0, activation=Activation.RELU),
    # stride 3 > k = 2: gaps between windows; padding 2 = k, so the last window lies partly in the padding
    _layer(2, 8, 7, 2, 3, k=2, s=3, p=2, activation=Activation.RELU),
    # k = 1 with stride 2: no overlap, no kernel to flip or reorder
    _layer(2, 4, 5, 3, 2, k=1, s=2, p=0, activation=Activation.RELU),
    # no activation: every mask bug is harmless here, every structural bug is not
    _layer(2, 6, 5, 2, 2, k=2, s=1, p=0, activation=Activation.NONE),
    # leaky relu (its forgotten slope), padding 2 = k - 1 ("full" padding)
    _layer(2, 5, 6, 2, 3, k=3, s=1, p=2, activation=Activation.LEAKY_RELU),
    # stride = k: windows tile without overlap; padding 1
    _layer(2, 6, 7, 3, 2, k=3, s=3, p=1, activation=Activation.RELU),
)


def _nd_layer(name: str, shape: ConvShape, activation: Activation = Activation.RELU) -> CheckSpec:
    return CheckSpec(name=f"{name}-{activation.value}", shape=shape, activation=activation, method=Method.FULL, seed=0)


#: The layers the bugs of the whole space run on (float64; ``run_selftest`` derives the float32 one):
GEOMETRY_SWEEP: tuple[CheckSpec, ...] = (
    # torch-style: kernel 3x5, stride 2x1, dilation 2, `same` (even totals here), groups 4 = in_depth, no bias
    _nd_layer("2d-k3x5-s2x1-d2-same-g4-nobias", ConvShape.nd(1, (7, 9), 4, 8, (3, 5), (2, 1), "same", 2, 4, False)),
    # depthwise 1-D, kernel 4 at stride 2: `same` pads (1, 2), the odd row after
    _nd_layer("1d-depthwise-k4-s2-same", ConvShape.nd(2, (11,), 3, 3, 4, 2, "same", 1, 3)),
    # 3-D, per-axis everything, asymmetric padding per side, two groups of one input channel
    _nd_layer(
        "3d-k2x3x2-s1x2x1-d1x1x2-g2",
        ConvShape.nd(1, (4, 5, 6), 2, 4, (2, 3, 2), (1, 2, 1), ((1, 0), (0, 1), (1, 1)), (1, 1, 2), 2),
    ),
    # 2-D, two groups of two channels, 3x2 kernel, dilation along the width only, padding (0, 1) x (1, 0)
    _nd_layer(
        "2d-k3x2-s1x2-d1x2-g2",
        ConvShape.nd(2, (6, 7), 4, 4, (3, 2), (1, 2), ((0, 1), (1, 0)), (1, 2), 2),
        Activation.LEAKY_RELU,
    ),
    # a square, undilated, ungrouped layer with `valid` padding and no bias: every window bug but db is silent
    _nd_layer("2d-k3-s2-valid-nobias", ConvShape.nd(2, (7, 6), 2, 3, 3, 2, "valid", bias=False), Activation.NONE),
)


def sweep_of(bug: PlantedBug, sweep: Sequence[CheckSpec], geometry: Sequence[CheckSpec]) -> tuple[CheckSpec, ...]:
    """The layers a bug runs on: ``geometry`` for a bug of the whole space, ``sweep`` for one of the seed's layer."""
    return tuple(geometry if bug.any_geometry else sweep)


def correct_sweep(
    chosen: Sequence[PlantedBug], sweep: Sequence[CheckSpec], geometry: Sequence[CheckSpec]
) -> tuple[CheckSpec, ...]:
    """The layers the correct layer runs on: every layer some chosen bug runs on (both sweeps when none is)."""
    kinds = {bug.any_geometry for bug in chosen} or {False, True}
    return (*(sweep if False in kinds else ()), *(geometry if True in kinds else ()))


def with_dtype(sweep: Iterable[CheckSpec], dtype: DType) -> tuple[CheckSpec, ...]:
    """The same layers in ``dtype``; names get a ``-float32`` suffix so the sweeps stay distinguishable."""
    suffix = "" if dtype is DType.FLOAT64 else f"-{dtype.value}"
    return tuple(spec.with_overrides(dtype=dtype, name=f"{spec.name}{suffix}") for spec in sweep)


@dataclass(frozen=True)
class LayerOutcome:
    """One check of one layer (a planted bug's or the correct one) on one spec of the sweep."""

    spec: CheckSpec
    status: Status
    findings: tuple[str, ...]  # in FINDINGS order: the failing gradients, "forward", "contract"
    contract: tuple[Finding, ...]  # the checker's contract findings
    error: str | None
    seconds: float
    hints: tuple[str, ...] = ()  # the labels of the check's diagnosis ("a / b" counts as both)

    @property
    def name(self) -> str:
        return self.spec.name


def findings_of(result: CheckResult) -> tuple[str, ...]:
    """What a check showed as wrong: failing gradient tensors, a wrong forward, contract problems."""
    found = {g.name for g in result.gradients if not g.passed}
    if result.forward is not None and not result.forward.ok:
        found.add("forward")
    if result.contract:
        found.add("contract")
    return tuple(f for f in FINDINGS if f in found)


def expected_findings(bug: PlantedBug) -> tuple[str, ...]:
    """What the checker should show, union over the sweep, for this bug.

    Its corrupted tensors, or a contract problem for a bug that breaks the contract instead of returning wrong
    numbers (a wrongly shaped dx, a second ``backward`` call that differs from the first).
    """
    return ("contract",) if bug.breaks_contract else bug.tensors


@dataclass(frozen=True)
class BugOutcome:
    """A planted bug against the whole sweep (every dtype)."""

    bug: PlantedBug
    layers: tuple[LayerOutcome, ...]

    def caught_in(self, dtype: DType) -> bool:
        """Whether some layer of the ``dtype`` sweep failed (an ``error`` status does not count: the layers of
        the catalogue never raise, so an error means the checker could not judge them)."""
        return any(o.status is Status.FAIL for o in self.layers if o.spec.dtype is dtype)

    @property
    def dtypes(self) -> tuple[DType, ...]:
        return tuple(d for d in DTYPES if any(o.spec.dtype is d for o in self.layers))

    @property
    def caught(self) -> bool:
        """Caught in every dtype the sweep ran."""
        return all(self.caught_in(d) for d in self.dtypes)

    def findings_in(self, dtype: DType) -> tuple[str, ...]:
        """Union over the ``dtype`` sweep of what the checks showed."""
        found = {f for o in self.layers if o.spec.dtype is dtype for f in o.findings}
        return tuple(f for f in FINDINGS if f in found)

    @property
    def findings(self) -> tuple[str, ...]:
        """Union over the whole sweep of what the checks showed."""
        found = {f for o in self.layers for f in o.findings}
        return tuple(f for f in FINDINGS if f in found)

    @property
    def as_expected(self) -> bool:
        """Caught, and in exactly the expected tensors, in every dtype."""
        expected = expected_findings(self.bug)
        return self.caught and all(self.findings_in(d) == expected for d in self.dtypes)

    @property
    def exposing(self) -> tuple[str, ...]:
        """Names of the layers (per dtype) whose check failed."""
        return tuple(o.name for o in self.layers if o.status is Status.FAIL)

    @property
    def errors(self) -> tuple[LayerOutcome, ...]:
        return tuple(o for o in self.layers if o.status is Status.ERROR)

    @property
    def exposed(self) -> int:
        """Layers (every dtype) whose geometry exposes the bug (``PlantedBug.exposes``)."""
        return sum(self.bug.exposes(o.spec.shape, o.spec.activation) for o in self.layers)

    @property
    def failed(self) -> int:
        """Layers (every dtype) whose check failed."""
        return sum(o.status is Status.FAIL for o in self.layers)

    @property
    def hinted(self) -> int:
        """Failed checks whose diagnosis names the bug's hint."""
        return sum(o.status is Status.FAIL and self.bug.hint in o.hints for o in self.layers)


@dataclass(frozen=True)
class SelftestRow:
    """Plain data for one line of a selftest table."""

    id: str
    description: str
    caught: bool
    expected: tuple[str, ...]
    tensors: tuple[str, ...]  # what the checker showed (union over the sweep and dtypes)
    as_expected: bool
    layers: tuple[str, ...]  # the layers that exposed it
    hint: str
    errors: int
    exposed_by: str = ""  # the geometry that exposes the bug, in words
    runs: int = 0  # checks run (layers × dtypes)
    exposed: int = 0  # of them, those whose geometry exposes the bug
    failed: int = 0  # of them, those that failed
    hinted: int = 0  # of the failed ones, those whose diagnosis names the bug's hint


@dataclass(frozen=True)
class SelftestReport:
    """Every planted bug over the sweep, and the correct layer over the same sweep."""

    bugs: tuple[BugOutcome, ...]
    correct: tuple[LayerOutcome, ...]
    seconds: float

    @property
    def missed(self) -> tuple[str, ...]:
        """Ids of the bugs some dtype's sweep did not catch."""
        return tuple(b.bug.id for b in self.bugs if not b.caught)

    @property
    def false_alarms(self) -> tuple[LayerOutcome, ...]:
        """Checks of the correct layer that did not pass."""
        return tuple(o for o in self.correct if o.status is not Status.PASS)

    @property
    def errors(self) -> tuple[LayerOutcome, ...]:
        """Checks of planted bugs that ended in ``error`` instead of a verdict."""
        return tuple(o for b in self.bugs for o in b.errors)

    @property
    def ok(self) -> bool:
        """Every bug caught in every dtype, the checker never errored, the correct layer always passed."""
        return not self.missed and not self.false_alarms and not self.errors

    def rows(self) -> tuple[SelftestRow, ...]:
        """One row per bug, then one for the correct layer (id ``correct``, ``caught`` meaning "passed")."""
        rows = [
            SelftestRow(
                id=b.bug.id,
                description=b.bug.description,
                caught=b.caught,
                expected=expected_findings(b.bug),
                tensors=b.findings,
                as_expected=b.as_expected,
                layers=b.exposing,
                hint=b.bug.hint,
                errors=len(b.errors),
                exposed_by=b.bug.exposed_by,
                runs=len(b.layers),
                exposed=b.exposed,
                failed=b.failed,
                hinted=b.hinted,
            )
            for b in self.bugs
        ]
        alarms = self.false_alarms
        shown = {f for o in alarms for f in o.findings}
        rows.append(
            SelftestRow(
                id="correct",
                description="the built-in matrix layer (must pass everywhere)",
                caught=not alarms,
                expected=(),
                tensors=tuple(f for f in FINDINGS if f in shown),
                as_expected=not alarms,
                layers=tuple(o.name for o in alarms),
                hint="",
                errors=sum(o.status is Status.ERROR for o in self.correct),
                runs=len(self.correct),
                failed=len(alarms),
            )
        )
        return tuple(rows)


@dataclass(frozen=True)
class PlantedCheck:
    """Check a spec with the planted bug ``bug_id`` (None: the correct layer); picklable, so that worker
    processes of ``batch.local.run_batch`` can run it.

    A fresh layer is built for every check, so stateful bugs start clean each time.
    """

    bug_id: str | None = None

    def __call__(self, spec: CheckSpec) -> CheckResult:
        s, activation = spec.shape, spec.activation
        if self.bug_id is None:
            return run_check(spec, layer=MatrixConvLayer.for_shape(s, activation))
        bug = bugs.get(self.bug_id)
        layer = bug.make_for(s, activation) if bug.any_geometry else bug.make(s.stride, s.padding, activation)
        return run_check(spec, layer=layer)


def layer_outcome(result: CheckResult) -> LayerOutcome:
    """What the selftest keeps of one check."""
    return LayerOutcome(
        spec=result.spec,
        status=result.status,
        findings=findings_of(result),
        contract=result.contract,
        error=result.error,
        seconds=result.seconds,
        hints=tuple(label for hint in result.diagnosis for label in hint.label.split(" / ")),
    )


def check_layer(spec: CheckSpec, bug_id: str | None = None) -> LayerOutcome:
    """Run the checker on one spec with the planted bug ``bug_id`` (None: the correct layer)."""
    return layer_outcome(PlantedCheck(bug_id)(spec))


def run_selftest(
    sweep: Sequence[CheckSpec] | None = None,
    *,
    geometry_sweep: Sequence[CheckSpec] | None = None,
    bug_ids: Sequence[str] | None = None,
    dtypes: Sequence[DType] = DTYPES,
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> SelftestReport:
    """Check every planted bug (or those in ``bug_ids``) and the correct layer over their sweeps in each dtype.

    Args:
        sweep: the layers of the seed's bugs (their ``dtype`` is replaced by each of ``dtypes``); None:
            ``DEFAULT_SWEEP``.
        geometry_sweep: the layers of the bugs of the whole space (``any_geometry``); None: ``GEOMETRY_SWEEP``.
            The correct layer runs on every layer a chosen bug runs on (``correct_sweep``).
        bug_ids: a subset of the catalogue, in the order given; None: all of it.
        dtypes: the dtypes to run the sweeps in.
        jobs: worker processes; results do not depend on it.
        progress: called as ``progress(done, total)`` after each check (for a progress bar).
    Returns:
        A ``SelftestReport``; ``report.ok`` is the verdict.
    Raises:
        KeyError: an unknown bug id.
    """
    started = time.perf_counter()
    base = DEFAULT_SWEEP if sweep is None else tuple(sweep)
    geometry = GEOMETRY_SWEEP if geometry_sweep is None else tuple(geometry_sweep)
    chosen = bugs.CATALOGUE if bug_ids is None else tuple(bugs.get(i) for i in bug_ids)
    layers = [correct_sweep(chosen, base, geometry), *(sweep_of(bug, base, geometry) for bug in chosen)]
    runs = [
        (bug, tuple(spec for dtype in dtypes for spec in with_dtype(sweep, dtype)))
        for bug, sweep in zip((None, *chosen), layers, strict=True)
    ]
    specs = [spec for _, layers in runs for spec in layers]
    checks = [PlantedCheck(None if bug is None else bug.id) for bug, layers in runs for _ in layers]
    done = 0

    def advance(index: int, result: CheckResult) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, len(checks))

    # The batch's guard: a check that raises, hangs or crashes its worker is an error row, counted in ``errors``.
    batch = run_batch(specs, jobs=jobs, on_result=advance, check=checks)
    if batch.interrupted:  # the report needs every check; Ctrl-C ends the selftest as it ends the command
        raise KeyboardInterrupt
    outcomes = iter(layer_outcome(result) for result in batch.results)
    per_run = [tuple(next(outcomes) for _ in layers) for _, layers in runs]
    bug_outcomes = tuple(BugOutcome(bug, layers) for bug, layers in zip(chosen, per_run[1:], strict=True))
    return SelftestReport(bugs=bug_outcomes, correct=per_run[0], seconds=time.perf_counter() - started)
