"""Diagnosis hints: read a failed check's error pattern and name the likely bug, with the evidence.

Every rule is a small pure function of a check's evidence that returns a hint or nothing. A hint is a
``convcheck.results.Hint``: a label, its evidence and likely cause, and the tensors it explains; ``str()`` is
the one sentence users read, ``"<label>: <evidence>: <likely cause>"``. The label comes from a small
vocabulary (``LABELS``) so tests and tools can ask whether a planted bug got the right one. Rules are exact
tests, in three kinds:

1. **Transforms** (need only the arrays): the analytic gradient equals the numeric one after a named
   transformation — a constant factor, a shift by a row and column, the kernel flipped, the weight axes
   permuted — entry by entry within ``MATCH_SLACK`` times the tolerance each entry was allowed
   (``TensorResult.allowed``). The output is compared with the reference the same way (transposed, shifted,
   offset per channel, without activation).
2. **Hypotheses** (need the point of the check): the analytic gradient equals, entry by entry, the gradient a
   specific common mistake produces at the point the check was made — no activation mask or one taken from the
   wrong tensor, dout walked in (n, ow, oh) order, dx computed with the kernel flipped, col2im assigning
   instead of accumulating, reading dM rows in another order, placing windows without the stride, dropping the
   last row and column of windows. The point is rebuilt from the spec's seed (``data.make_data``) and used
   only if the reference output recomputed from it is bit-identical to the one the check stored, so a check
   run at a caller-supplied point gets no hint it cannot back up. Gradient hypotheses are built on the
   reference forward and only tried when the layer's forward matches it.
3. **Places** (fallbacks for what no exact test explains): every entry over tolerance lies in a region the
   geometry defines — where windows overlap, the footprint of the last row and column of windows, of the last
   ``m`` windows in row order, beyond where stride-1 windows would end, a thin frame at the edges — and at
   least ``MIN_EVIDENCE`` positions outside it were checked, have a clearly nonzero gradient, and are right.

Rules run in that order, after the contract rules (shapes and dtypes with a known cause: a crop, a size
formula, a keepdims bias, a permuted weight layout, buffers without a dtype, an integer mask) and the forward
rules (the reference with a parameter changed, windows placed with the wrong step or offset, one index used for
both coordinates, only one sample or channel computed, values in another order); between transforms and
hypotheses come two whole-tensor facts (only db is wrong; a gradient is exactly zero everywhere). A hint
names the tensors it explains exactly, and later rules leave those alone, so one cause is not reported twice
under different names; at most one hint per label is kept. A tensor that passed is never blamed: a passing
check gets no hint.

Shapes follow ``convcheck.spec`` (internal NHWC): dx ``(N, H, W, C_in)``, dw ``(k, k, C_in, C_out)``,
db ``(C_out,)``, output ``(N, OH, OW, C_out)``; ``R = N·OH·OW`` rows of the im2col matrix ``M`` in
``(n, oh, ow)`` order, each window laid out ``(kh, kw, c_in)``.

Rules whose mistake means the same on any layer run on the whole space (1-3 axes, per-axis kernels and strides,
dilation, per-side and ``same`` padding, groups, no bias): the transforms (a constant ratio, dx shifted per axis,
dw rearranged, without groups), only db wrong, the activation hypotheses, and the dx hypotheses (flipped kernel,
col2im assigning, row order, stride, crop, last window; dout transposed on any 2-D layer), which use
``window.NdPoint`` off the seed's geometry; the output-size and crop rules of any geometry (``rule_output_size_nd``,
``rule_crop_shape_nd``, off the seed's geometry, where the seed's own words do not apply); and the forward rules that compare whole outputs (the reference with
the kernel reversed on every axis, the filter read in ``(c_in, *k)`` order, the channels swapped, no bias, no or
another activation; a constant per channel; the output shifted by one along an axis; transposed on 2-D). Rules
whose formulas, regions or words assume the seed's 2-D square, symmetric geometry (the shape-contract rules, the
forward rules that read window patterns, the loop and place rules) are ``basic_only`` (silent elsewhere); there
the ``window`` hypotheses name the mistakes of each new hyperparameter, and a contract rule a db returned by a
layer without a bias.

The package is one module per rule family (``contract``, ``shapes``, ``forward``, ``patterns``, ``loops``,
``transforms``, ``facts``, ``hypotheses``, ``places``, ``window``) over ``evidence`` (what rules read), ``geometry`` and
``wording``; ``RULES`` below is the table of contents, in the order the rules run. A new rule goes into its
family's module and into ``RULES``; a new label into ``evidence.LABELS``. ``batch`` holds the one hint made
across a batch's checks (a condition shared by the checks that crashed), applied after a batch has finished.
"""

from __future__ import annotations

from convcheck.diagnosis.contract import (
    rule_bias_without_bias,
    rule_crop_shape,
    rule_crop_shape_nd,
    rule_repeatability,
)
from convcheck.diagnosis.evidence import LABELS, MATCH_SLACK, Evidence, Rule, basic_only
from convcheck.diagnosis.facts import rule_all_zero, rule_only_bias
from convcheck.diagnosis.forward import (
    rule_forward_activation,
    rule_forward_bias,
    rule_forward_hypotheses,
    rule_forward_rearranged,
)
from convcheck.diagnosis.hypotheses import rule_activation_mask, rule_dout_order, rule_dx_hypotheses
from convcheck.diagnosis.loops import rule_assigned_in_loop, rule_first_sample_only, rule_forward_reordered
from convcheck.diagnosis.patterns import rule_forward_diagonal, rule_forward_one_index, rule_forward_windows
from convcheck.diagnosis.places import (
    rule_dx_frame,
    rule_dx_last_windows,
    rule_dx_overlap,
    rule_dx_stride,
    rule_dx_tail,
)
from convcheck.diagnosis.shapes import (
    rule_bias_shape,
    rule_dtype_buffers,
    rule_fixed_crop,
    rule_input_size,
    rule_integer_mask,
    rule_output_size,
    rule_output_size_nd,
    rule_weight_layout,
)
from convcheck.diagnosis.transforms import rule_constant_ratio, rule_dw_rearranged, rule_dx_shifted
from convcheck.diagnosis.window import rule_grouped_dw, rule_same_padding, rule_window_dx
from convcheck.results import CheckResult, Hint

__all__ = ["LABELS", "MATCH_SLACK", "RULES", "diagnose"]

#: The rules, in order: contract (shapes, dtypes), forward (patterns), transforms, only-bias, all-zero, hypotheses,
#: places. Rules whose formulas assume the seed's 2-D square, symmetric geometry are ``basic_only``; the others
#: read the whole space, and the ``window`` rules name the new hyperparameters' mistakes.
RULES: tuple[Rule, ...] = (
    rule_bias_without_bias,
    basic_only(rule_crop_shape),
    rule_crop_shape_nd,
    basic_only(rule_fixed_crop),
    basic_only(rule_input_size),
    basic_only(rule_output_size),
    rule_output_size_nd,
    basic_only(rule_bias_shape),
    basic_only(rule_weight_layout),
    rule_integer_mask,
    rule_dtype_buffers,
    rule_repeatability,
    rule_same_padding,
    rule_forward_hypotheses,
    rule_forward_bias,
    rule_forward_activation,
    basic_only(rule_forward_windows),
    rule_forward_rearranged,
    basic_only(rule_forward_diagonal),
    basic_only(rule_forward_one_index),
    basic_only(rule_forward_reordered),
    rule_window_dx,
    rule_grouped_dw,
    rule_constant_ratio,
    rule_dx_shifted,
    rule_dw_rearranged,
    rule_only_bias,
    rule_all_zero,
    rule_activation_mask,
    rule_dout_order,
    rule_dx_hypotheses,
    basic_only(rule_assigned_in_loop),
    basic_only(rule_first_sample_only),
    basic_only(rule_dx_overlap),
    basic_only(rule_dx_tail),
    basic_only(rule_dx_last_windows),
    basic_only(rule_dx_stride),
    basic_only(rule_dx_frame),
)


def diagnose(result: CheckResult) -> tuple[Hint, ...]:
    """Short hints, each naming a likely cause with its evidence; empty for a passing check.

    Args:
        result: a finished check (any status); its gradient and forward arrays and contract problems are read.
    Returns:
        ``Hint`` values (``str()``: ``"<label>: <evidence>: <cause>"``), most specific first, at most one per
        label. A rule that raises on an unusual result is skipped: ``run_check`` calls this, and a hint is never
        worth losing the verdict.
    """
    ev = Evidence(result)
    hints: list[Hint] = []
    seen: set[str] = set()
    for rule in RULES:
        try:
            hint = rule(ev)
        except Exception:  # noqa: BLE001 - a rule that cannot read an odd result must not turn a verdict into an error
            continue
        if hint is None:
            continue
        ev.explained.update(hint.explains)
        if hint.label not in seen:
            seen.add(hint.label)
            hints.append(hint)
    return tuple(hints)
