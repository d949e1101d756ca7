"""What a check found, as frozen values: the terminal table, the JSON and the JUnit file all render these."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from convcheck.spec import CheckSpec, Method

TENSORS = ("input", "weights", "bias")


class Status(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"


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
    contract: tuple[str, ...] = ()  # contract violations (shapes, dtypes, NaN, mutation, repeatability)
    diagnosis: tuple[str, ...] = ()  # what the error pattern suggests
    notes: tuple[str, ...] = ()  # informational: fallbacks taken, method chosen, …
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.status is Status.PASS

    def gradient(self, name: str) -> TensorResult | None:
        return next((g for g in self.gradients if g.name == name), None)
