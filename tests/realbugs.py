"""A catalogue of realistic buggy conv layers, written the way people write them (loops, index arrays, a crop,
a size formula), each with the geometries it is checked on and the hint label its failing checks must get.

The layers live in ``tests/fixtures/realbugs/`` as self-contained files; none is a transform of the built-in
layer. ``GOOD`` lists correct layers in the same styles: they must pass every geometry with no hint.
``tests/test_real_bugs.py`` proves each entry's hint, and ``benchmarks/hint_rate.py`` measures the hint rate
documented in ``docs/diagnosis.md``. A batch of one entry's checks is the unit of the batch-level crash hint
(``convcheck.diagnosis.batch``): the geometries of an entry that crashes are chosen so that some run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from convcheck.checker import run_check
from convcheck.diagnosis.batch import with_batch_hints
from convcheck.results import CheckResult, Status
from convcheck.spec import Activation, CheckSpec, ConvShape, DType, ImplRef, Layout, Method, Signature

FOLDER = Path(__file__).resolve().parent / "fixtures" / "realbugs"


@dataclass(frozen=True)
class Geometry:
    """One check's layer: ``x (N, H, W, C_in)``, ``k``, stride ``s``, padding ``p``, and the dtype."""

    n: int
    h: int
    w: int
    c_in: int
    c_out: int
    k: int
    s: int
    p: int
    dtype: DType = DType.FLOAT64

    @property
    def shape(self) -> ConvShape:
        return ConvShape(self.n, self.h, self.w, self.c_in, self.c_out, self.k, self.s, self.p)

    @property
    def name(self) -> str:
        return f"{self.n}x{self.h}x{self.w}x{self.c_in}->{self.c_out} k{self.k} s{self.s} p{self.p} {self.dtype.value}"


def g(n: int, h: int, w: int, c_in: int, c_out: int, k: int, s: int, p: int, dtype: str = "float64") -> Geometry:
    return Geometry(n, h, w, c_in, c_out, k, s, p, DType(dtype))


@dataclass(frozen=True)
class RealLayer:
    """A user's layer file and how it is called; ``label`` is the hint every failing check must carry."""

    id: str
    file: str
    label: str
    geometries: tuple[Geometry, ...]
    cs231n: bool = True  # conv_forward_naive(x, w, b, conv_param) without activation; else forward/backward + ReLU
    layout: Layout = Layout.NCHW

    @property
    def activation(self) -> Activation:
        return Activation.NONE if self.cs231n else Activation.RELU

    def ref(self) -> ImplRef:
        if self.cs231n:
            return ImplRef(str(FOLDER / self.file), "conv_forward_naive", "conv_backward_naive", Signature.CS231N)
        return ImplRef(str(FOLDER / self.file))

    def specs(self) -> tuple[CheckSpec, ...]:
        return tuple(
            CheckSpec(
                f"{self.id} {geo.name}",
                geo.shape,
                activation=self.activation,
                method=Method.AUTO,
                dtype=geo.dtype,
                impl=self.ref(),
                layout=self.layout,
            )
            for geo in self.geometries
        )


# Geometries: overlapping windows with and without padding, strides that do and do not tile the input,
# H ≠ W, C_in ≠ C_out, float32.
BASIC = (g(2, 5, 6, 3, 4, 3, 1, 1), g(2, 6, 5, 2, 3, 3, 1, 0), g(2, 7, 8, 3, 2, 3, 2, 1), g(1, 8, 7, 2, 3, 2, 2, 0))
SQUARE = (g(2, 5, 5, 3, 4, 3, 1, 1), g(2, 6, 6, 2, 3, 3, 1, 0), g(2, 7, 7, 3, 2, 3, 2, 1), g(1, 8, 8, 2, 3, 2, 2, 0))
STRIDES = (g(2, 7, 7, 3, 2, 3, 2, 0), g(2, 8, 8, 3, 2, 3, 2, 0), g(2, 8, 7, 2, 3, 3, 2, 1), g(1, 9, 9, 2, 2, 3, 3, 0))
FLOAT32 = (g(2, 5, 6, 3, 4, 3, 1, 1, "float32"), g(2, 7, 6, 2, 3, 3, 2, 0, "float32"), g(2, 5, 6, 3, 4, 3, 1, 1))
PADDINGS = (g(2, 5, 6, 3, 4, 3, 1, 0), g(2, 5, 6, 3, 4, 3, 1, 1), g(2, 6, 5, 2, 3, 3, 1, 2), g(1, 7, 6, 2, 2, 3, 2, 0))

CATALOGUE: tuple[RealLayer, ...] = (
    # -- shape failures ----------------------------------------------------------------------------------------
    RealLayer("crop-minus-pad", "crop_minus_pad.py", "padding", PADDINGS),
    RealLayer("crop-hardcoded", "crop_hardcoded.py", "padding", PADDINGS),
    RealLayer("size-from-dout", "size_from_dout.py", "input size", STRIDES, cs231n=False),
    RealLayer("width-from-height", "width_from_height.py", "output size", (*BASIC[1:2], g(2, 5, 7, 2, 3, 3, 1, 1))),
    RealLayer("im2col-no-plus-one", "im2col_no_plus_one.py", "output size", BASIC, cs231n=False),
    RealLayer("im2col-one-pad", "im2col_one_pad.py", "output size", PADDINGS, cs231n=False),
    RealLayer("bias-column", "bias_column.py", "bias shape", BASIC, cs231n=False),
    RealLayer("bias-row", "bias_row.py", "bias shape", BASIC, cs231n=False, layout=Layout.NHWC),
    RealLayer("dw-torch-layout", "dw_torch_layout.py", "layout", BASIC, cs231n=False, layout=Layout.NHWC),
    # -- dtype failures ----------------------------------------------------------------------------------------
    RealLayer("no-dtype-buffers", "no_dtype_buffers.py", "dtype", FLOAT32),
    RealLayer("int-mask", "int_mask.py", "integer mask", FLOAT32, cs231n=False),
    # -- forward failures --------------------------------------------------------------------------------------
    RealLayer("swapped-window", "swapped_window.py", "transposed", SQUARE),
    RealLayer("same-index", "same_index.py", "window index", (*SQUARE, g(2, 5, 7, 2, 3, 3, 1, 0))),
    RealLayer("return-in-batch-loop", "return_in_batch_loop.py", "batch loop", BASIC),
    RealLayer(
        "return-in-filter-loop", "return_in_filter_loop.py", "channel loop", BASIC, cs231n=False, layout=Layout.NHWC
    ),
    RealLayer("stride-ignored", "stride_ignored.py", "stride", STRIDES),
    RealLayer("padded-twice", "padded_twice.py", "window offset", PADDINGS),
    RealLayer("relu-forgotten", "relu_forgotten.py", "forward activation", BASIC, cs231n=False),
    RealLayer("true-convolution", "true_convolution.py", "flipped kernel", BASIC),
    # -- crashes on geometries the code does not support ---------------------------------------------------------
    RealLayer("refuses-stride", "refuses_stride.py", "unsupported geometry", STRIDES, cs231n=False),
    RealLayer(
        "square-only",
        "square_only.py",
        "unsupported geometry",
        (*BASIC[:2], *SQUARE[:2]),
        cs231n=False,
        layout=Layout.NHWC,
    ),
    RealLayer("stride-twice", "stride_twice.py", "stride", (*BASIC, STRIDES[0])),
    # -- gradient failures the numeric rules know ----------------------------------------------------------------
    RealLayer("db-mean", "db_mean.py", "bias reduction", BASIC),
    RealLayer("dx-assigned", "dx_assigned.py", "col2im accumulate", BASIC),
    RealLayer("relu-mask-forgotten", "relu_mask_forgotten.py", "activation mask", BASIC, cs231n=False),
    # -- loop and reshape mistakes -----------------------------------------------------------------------------------
    RealLayer("dx-assigned-per-filter", "dx_assigned_per_filter.py", "accumulate", BASIC),
    RealLayer("dw-assigned", "dw_assigned.py", "accumulate", BASIC),
    RealLayer("db-first-sample", "db_first_sample.py", "bias reduction", BASIC),
    RealLayer("backward-return-in-batch-loop", "backward_return_in_batch_loop.py", "batch loop", BASIC),
    RealLayer("im2col-reshape-order", "im2col_reshape_order.py", "reshape order", BASIC, cs231n=False),
)

GOOD: tuple[RealLayer, ...] = (
    RealLayer("good-naive", "good_naive.py", "", (*BASIC, *STRIDES, *PADDINGS, *FLOAT32)),
    RealLayer("good-im2col", "good_im2col.py", "", (*BASIC, *STRIDES, *PADDINGS, *FLOAT32), cs231n=False),
    RealLayer(
        "good-nhwc-relu",
        "good_nhwc_relu.py",
        "",
        (*BASIC, *STRIDES, *PADDINGS, *FLOAT32),
        cs231n=False,
        layout=Layout.NHWC,
    ),
)


def get(layer_id: str) -> RealLayer:
    return next(entry for entry in (*CATALOGUE, *GOOD) if entry.id == layer_id)


#: What a crashed check's hint must be: the batch-level condition shared by the checks that raised.
CRASH_LABEL = "unsupported geometry"


def run(entry: RealLayer) -> tuple[CheckResult, ...]:
    """Every check of ``entry``, as one batch (with the batch-level crash hint added)."""
    return with_batch_hints([run_check(spec) for spec in entry.specs()])


def labels(result: CheckResult) -> set[str]:
    """The labels a result's hints name (a hint naming two coinciding causes joins them with " / ")."""
    return {label for hint in result.diagnosis for label in hint.label.split(" / ")}


def expected(entry: RealLayer, result: CheckResult) -> str | None:
    """The label ``result`` must carry: the entry's for a failed check, the crash label for one that raised,
    None for a pass."""
    if result.status is Status.PASS:
        return None
    return CRASH_LABEL if result.status is Status.ERROR else entry.label


def hit(entry: RealLayer, result: CheckResult) -> bool:
    """A failing check got its expected hint."""
    label = expected(entry, result)
    return label is not None and label in labels(result)
