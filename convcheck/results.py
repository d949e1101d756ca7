"""What a check found, as frozen values: the terminal table, the JSON and the JUnit file all render these."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum

import numpy as np

from convcheck.spec import CheckSpec, Method


class Tensor(IntEnum):
    """The three gradients a check compares, in the order ``backward`` returns them (``(dx, dw, db)``)."""

    INPUT = 0
    WEIGHTS = 1
    BIAS = 2

    @property
    def label(self) -> str:
        """The name reports use: ``input``, ``weights``, ``bias``."""
        return self.name.lower()


TENSORS = tuple(t.label for t in Tensor)


class Status(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    SKIPPED = "skipped"  # the layer refused this geometry, as the config's expected_error says it may

    @property
    def ok(self) -> bool:
        """True for the statuses that keep a run green: passed, and skipped as the config expects."""
        return self in (Status.PASS, Status.SKIPPED)


class Severity(str, Enum):
    """How much a contract finding weighs. Warnings are reported but pass the check unless it is strict."""

    ERROR = "error"
    WARNING = "warning"


class FindingKind(str, Enum):
    """What a contract finding is about; diagnosis rules match on these, never on a finding's text."""

    NOT_AN_ARRAY = "not an array"  # a returned value is not an array, or backward did not return (dx, dw, db)
    SHAPE = "shape"  # an array has the wrong shape (``Finding.shape`` holds the shape returned)
    DTYPE = "dtype"  # an array has another dtype than its input (``Finding.dtype`` holds it)
    LOWER_PRECISION = "lower precision"  # a floating dtype narrower than its input's (float32 for float64)
    NOT_FINITE = "not finite"  # NaN or ±Inf in a returned array
    MODIFIED_ARGUMENT = "modified argument"  # a call modified x, w, b or dout in place
    REPEAT_FAILED = "repeat failed"  # a repeated call raised or returned something unusable
    REPEAT_ACCUMULATES = "repeat accumulates"  # a second backward returned exactly twice the first
    REPEAT_DIFFERS = "repeat differs"  # a second backward on the same cache returned other gradients
    STATE_OUTSIDE_CACHE = "state outside cache"  # backward on an old cache changed after another forward call
    OUTPUT_REUSED = "output reused"  # the array one forward returned was overwritten by the next call
    OTHER = "other"  # a contract error raised by an adapter (e.g. a wrong return value in the user's layout)


@dataclass(frozen=True)
class Finding:
    """One contract violation. ``str()`` is the sentence users read; code reads the fields.

    ``tensor`` names the array concerned as the contract does (``"out"``, ``"dx"``, ``"dw"``, ``"db"`` for
    returned arrays; ``"x"``, ``"w"``, ``"b"``, ``"dout"`` for arguments), or None. ``shape`` and ``dtype`` are
    what the layer returned (in the user's layout) where the kind is about them.
    """

    kind: FindingKind
    text: str
    tensor: str | None = None
    shape: tuple[int, ...] | None = None
    dtype: str | None = None

    def __str__(self) -> str:
        return self.text

    @property
    def severity(self) -> Severity:
        """``WARNING`` for the findings that cannot change any gradient: today only ``backward`` modifying the
        caller's ``dout`` in place (the gradients it returns are checked apart, entry by entry). Everything else
        makes the gradients meaningless or bites in training, and fails the check."""
        if self.kind is FindingKind.MODIFIED_ARGUMENT and self.tensor == "dout":
            return Severity.WARNING
        return Severity.ERROR


@dataclass(frozen=True)
class Hint:
    """What an error pattern suggests: a label from ``convcheck.diagnosis.LABELS``, its evidence and likely
    cause, and the tensors (``input``, ``weights``, ``bias``, ``forward``) it accounts for. ``str()`` is the
    sentence the table, the JSON and JUnit show: ``"<label>: <text>"``."""

    label: str
    text: str
    explains: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.label}: {self.text}"


class NoteKind(str, Enum):
    """What a note records; code that reacts to a note (e.g. the Dask executor) matches on these."""

    METHOD_CHOSEN = "method chosen"  # ``auto`` resolved to a method, with its cost estimate
    PRECISION = "precision"  # how a float32 layer was differenced
    FALLBACK = "fallback"  # grouped differences not valid here; another method was used
    TIMEOUT_NOT_ENFORCED = "timeout not enforced"  # the check ran where no alarm could stop it
    REFUSED = "refused"  # the layer raised the error the config expects for this geometry: the check is skipped
    OWN_FORWARD = "own forward"  # the forward is wrong: the gradient verdicts are relative to the layer's own forward
    OTHER = "other"


@dataclass(frozen=True)
class Note:
    """Something informational about how a check ran. ``str()`` is the sentence users read."""

    kind: NoteKind
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Entry:
    """One gradient entry. ``index`` is in convcheck's internal NHWC layout unless a report converts it."""

    index: tuple[int, ...]
    analytic: float
    numeric: float
    abs_error: float
    rel_error: float
    allowed: float  # the absolute error this entry was allowed (atol + rtol·|numeric| + rounding bound)
    at_kink: bool = False


@dataclass(frozen=True)
class TensorResult:
    """Comparison of one gradient (``input`` = dx, ``weights`` = dw, ``bias`` = db)."""

    name: str
    shape: tuple[int, ...]
    checked: int  # entries compared
    total: int  # entries in the tensor
    kinks: int  # checked entries whose differences straddled an activation kink (judged by interval)
    over_tolerance: int  # checked entries whose error exceeds what they were allowed
    max_abs_error: float
    max_rel_error: float
    worst: tuple[Entry, ...]  # the entries with the largest error relative to what they were allowed
    projections: int = 0  # directional method: random projections compared (``checked`` is then 0)
    # Full arrays for diagnosis and heatmaps (NaN where an entry was not checked); not compared, not in JSON.
    analytic: np.ndarray | None = field(default=None, compare=False, repr=False)
    numeric: np.ndarray | None = field(default=None, compare=False, repr=False)
    allowed: np.ndarray | None = field(default=None, compare=False, repr=False)
    error: np.ndarray | None = field(default=None, compare=False, repr=False)  # distance to the kink interval
    kink: np.ndarray | None = field(default=None, compare=False, repr=False)  # bool: judged by a kink interval

    @property
    def passed(self) -> bool:
        return self.over_tolerance == 0


@dataclass(frozen=True)
class ForwardResult:
    """The implementation's forward output against convcheck's reference convolution."""

    max_abs_error: float
    allowed: float
    ok: bool
    worst_index: tuple[int, ...] | None = None
    got: float | None = None
    expected: float | None = None
    output: np.ndarray | None = field(default=None, compare=False, repr=False)
    reference: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Tolerance:
    """The step and tolerances a check used (after deriving defaults from the dtype)."""

    eps: float
    rtol: float
    atol: float


@dataclass(frozen=True)
class CheckResult:
    """Everything one check found. ``status`` is the verdict; ``error`` is set when it could not run."""

    name: str
    status: Status
    spec: CheckSpec
    seconds: float
    method: Method | None = None  # the method actually used (``auto`` resolved)
    forward_passes: int = 0
    tolerance: Tolerance | None = None
    gradients: tuple[TensorResult, ...] = ()
    forward: ForwardResult | None = None
    contract: tuple[Finding, ...] = ()  # contract violations (shapes, dtypes, NaN, mutation, repeatability)
    diagnosis: tuple[Hint, ...] = ()  # what the error pattern suggests
    notes: tuple[Note, ...] = ()  # informational: fallbacks taken, method chosen, …
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.status is Status.PASS

    @property
    def warnings(self) -> tuple[Finding, ...]:
        """The contract findings that are warnings (``Severity.WARNING``): reported, not failing unless strict."""
        return tuple(f for f in self.contract if f.severity is Severity.WARNING)

    @property
    def violations(self) -> tuple[Finding, ...]:
        """The contract findings that fail the check."""
        return tuple(f for f in self.contract if f.severity is Severity.ERROR)

    def gradient(self, name: str) -> TensorResult | None:
        return next((g for g in self.gradients if g.name == name), None)


def error_result(spec: CheckSpec, seconds: float, message: str) -> CheckResult:
    """A result with status ``error`` for a check that could not run to its end; ``message`` is one paragraph."""
    return CheckResult(name=spec.name, status=Status.ERROR, spec=spec, seconds=seconds, error=message)
