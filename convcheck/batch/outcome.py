"""What every executor of a batch shares: the outcome it returns, the error rows it makes, and the fail-fast rule.

A check that could not run to its end is a ``CheckResult`` with status ``error`` (``error_result``), whether it
raised, timed out, or killed its process; the batch goes on. ``Tally`` collects results as they come back (in
any order) and applies ``fail_fast`` the one way every executor does: the checks kept are exactly those up to
the first one, in spec order, that did not pass, so results do not depend on where or how fast checks ran.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from convcheck.results import CheckResult, error_result
from convcheck.spec import CheckSpec

__all__ = [
    "BatchOutcome",
    "CheckFunction",
    "ResultCallback",
    "Tally",
    "crash_message",
    "error_result",
    "timeout_message",
]

CheckFunction = Callable[[CheckSpec], CheckResult]
ResultCallback = Callable[[int, CheckResult], None]  # (index of the spec, its result), in completion order


@dataclass(frozen=True)
class BatchOutcome:
    """The results of a batch, in spec order.

    ``results`` holds one result per check that ran. All checks ran unless ``interrupted`` (KeyboardInterrupt:
    the results so far) or ``stopped_early`` (``fail_fast``: every check up to the first one, in spec order,
    that did not pass; the same set whatever ``jobs`` is). ``not_run`` names the checks that did not run.
    """

    results: tuple[CheckResult, ...]
    interrupted: bool = False
    stopped_early: bool = False
    not_run: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """True when every check ran and passed."""
        return not self.interrupted and not self.not_run and all(r.status.ok for r in self.results)


def timeout_message(seconds: float) -> str:
    """The error of a check stopped after its timeout of ``seconds``."""
    return (
        f"timed out after {seconds:g} s: the implementation did not finish within the check's timeout "
        "(raise it with timeout: in the config)"
    )


def crash_message(cause: str, *, own_process: bool) -> str:
    """The error of a check whose process died under it; ``cause`` says how (an exit code, a signal).

    ``own_process``: the check had the process to itself (a ``--jobs`` worker), which the message says.
    """
    isolation = "the check ran in its own process, so the other checks" if own_process else "the other checks"
    return f"the implementation crashed the worker process ({cause}); {isolation} were not affected"


class Tally:
    """A batch's results as they come back, in any order, and the fail-fast rule.

    ``record`` each result as it arrives; before starting (or while waiting for) a check, ask ``wanted(index)``:
    after a failure with ``fail_fast``, only the checks before it are, and running ones after it can be dropped.
    ``outcome`` is the ``BatchOutcome`` once the executor is done (or was interrupted).
    """

    def __init__(self, specs: Sequence[CheckSpec], fail_fast: bool, on_result: ResultCallback | None) -> None:
        self.specs = list(specs)
        self.fail_fast = fail_fast
        self.on_result = on_result
        self.results: dict[int, CheckResult] = {}
        self.first_failure: int | None = None  # fail_fast: the smallest index that did not pass

    def record(self, index: int, result: CheckResult) -> bool:
        """Keep ``result`` and tell ``on_result``; True when it moved the fail-fast cut (drop what is unwanted)."""
        self.results[index] = result
        if self.on_result is not None:
            self.on_result(index, result)
        if not self.fail_fast or result.status.ok:
            return False
        if self.first_failure is not None and index >= self.first_failure:
            return False
        self.first_failure = index
        return True

    def wanted(self, index: int) -> bool:
        """Whether the check at ``index`` is still needed. Checks after the first failure are not; earlier ones
        still are, so that the results are the same as when the checks run one after another."""
        return self.first_failure is None or index <= self.first_failure

    def outcome(self, *, interrupted: bool) -> BatchOutcome:
        """The results kept, in spec order, and which checks did not run."""
        kept = {i: r for i, r in self.results.items() if self.wanted(i)}
        stopped = not interrupted and self.first_failure is not None and len(kept) < len(self.specs)
        return BatchOutcome(
            results=tuple(kept[i] for i in sorted(kept)),
            interrupted=interrupted,
            stopped_early=stopped,
            not_run=tuple(spec.name for i, spec in enumerate(self.specs) if i not in kept),
        )
