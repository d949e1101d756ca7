"""Loop-layer mistakes that leave an exact trace: a gradient assigned (=) in the loop where it must accumulate
(+=), a backward that returns after the first sample, and an output whose values are the reference's in
another order (a reshape without its transpose).

The assignment rules are hypotheses at the verified point, built on the reference forward: in the textbook
loop ``for n: for f: for i: for j:``, ``dw[f] = window · dout[n, f, i, j]`` leaves the last window's term
(``n = N − 1``, ``(OH − 1, OW − 1)``), and ``dx_pad[n, window] = w[f] · dout[n, f, i, j]`` leaves, per sample,
the last filter's terms assigned window after window. The order rule needs only the arrays.
"""

from __future__ import annotations

import numpy as np

from convcheck.diagnosis.evidence import FORWARD_SLACK, MIN_EVIDENCE, SHORT, Evidence
from convcheck.results import Hint
from convcheck.spec import ConvShape


def rule_assigned_in_loop(ev: Evidence) -> Hint | None:
    """dw equals the last window's term alone, or dx the last filter's terms assigned window after window."""
    point = ev.gradient_point
    if point is None:
        return None
    dw, dx = ev.failing("weights", complete=True), ev.failing("input", complete=True)
    if dw is not None and dw.equals(np.outer(point.cols[-1], point.dz[-1]).reshape(point.shape.w_shape)):
        return Hint(
            "accumulate",
            "analytic dw equals the last window's term alone (sample N − 1, output (OH − 1, OW − 1)): dw is "
            "assigned (=) in the loop over windows, so each window overwrites the last; accumulate with +=",
            ("weights",),
        )
    if dx is not None and point.shape.out_depth > 1:
        last = point.dz[:, -1:] @ point.weights[:, -1:].T
        if dx.equals(_assign_windows(last, point.shape)):
            return Hint(
                "accumulate",
                "analytic dx equals the last output channel's terms alone, assigned window after window: dx is "
                "assigned (=) inside the loop over filters, so each filter overwrites the others; accumulate "
                "with +=",
                ("input",),
            )
    return None


def rule_first_sample_only(ev: Evidence) -> Hint | None:
    """dx and dw are the gradients of sample 0 alone (dx zero for the other samples): the backward's loop
    over samples ends after the first one (a ``return`` indented into it)."""
    point = ev.gradient_point
    s = ev.shape
    if point is None or s.batch < 2:
        return None
    dx, dw = ev.failing("input", complete=True), ev.failing("weights", complete=True)
    if dx is None and dw is None:
        return None
    rows = s.out_height * s.out_width  # the rows of M that belong to sample 0
    first = point.gradients(np.concatenate([point.dz[:rows], np.zeros_like(point.dz[rows:])]))
    explained = tuple(t.name for t in (dx, dw) if t is not None and t.equals(first[t.name]))
    if len(explained) != sum(t is not None for t in (dx, dw)):
        return None
    verb = "equals" if len(explained) == 1 else "equal"
    return Hint(
        "batch loop",
        f"analytic {' and '.join(SHORT[n] for n in explained)} {verb} the gradient of sample 0 alone (as if dout "
        f"were 0 for the other {s.batch - 1} samples): the backward's loop over samples ends after the first "
        "(a return indented into `for n in range(N)`); return after the loop",
        explained,
    )


def _assign_windows(dcols: np.ndarray, shape: ConvShape) -> np.ndarray:
    """col2im that assigns each window's ``(k, k, C_in)`` block in turn, in ``(n, oh, ow)`` order (the later
    window wins where windows overlap), then crops the padding: ``(R, k·k·C_in)`` → ``(N, H, W, C_in)``."""
    n, h, w, c = shape.x_shape
    k, s, p = shape.filter_size, shape.stride, shape.padding
    padded = np.zeros((n, h + 2 * p, w + 2 * p, c))
    blocks = dcols.reshape(n, shape.out_height, shape.out_width, k, k, c)
    for i in range(shape.out_height):
        for j in range(shape.out_width):
            padded[:, i * s : i * s + k, j * s : j * s + k, :] = blocks[:, i, j]
    return padded[:, p : p + h, p : p + w, :]


def rule_forward_reordered(ev: Evidence) -> Hint | None:
    """The output holds exactly the reference's values, in another order: a reshape to the wrong axis order."""
    f = ev.forward
    if f is None or f.ok or "forward" in ev.explained or f.output is None or f.reference is None:
        return None
    out = np.asarray(f.output, dtype=np.float64)
    ref = f.reference
    if out.shape != ref.shape or np.unique(ref).size < MIN_EVIDENCE:
        return None
    if not np.all(np.abs(np.sort(out, axis=None) - np.sort(ref, axis=None)) <= FORWARD_SLACK * f.allowed):
        return None
    return Hint(
        "reshape order",
        "the output holds exactly the reference's values, every one, in another order: an array was reshaped to "
        "an axis order its data is not in (e.g. an (F, OH·OW·N) product reshaped to (N, F, OH, OW)); reshape to "
        "the order the data has, then transpose",
        ("forward",),
    )
