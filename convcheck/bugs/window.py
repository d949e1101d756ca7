"""Window mistakes of the N-d space: dilation, per-axis kernels and strides, per-side and ``same`` padding.

Each is a backward (or, for ``same``, a whole layer) that handles one hyperparameter the way code written for
the seed's 2-D square, undilated, symmetric layer handles it. The fold mistakes are ``fold_variant`` with one
knob turned, and each one's ``exposes`` asks the question that decides it, ``rewires_fold``: does the wrong fold
send some entry of dM to another input entry? On the seed's geometry none of them does (their ``exposed_by``
conditions need a dilation, a non-square kernel, per-axis strides or unequal padding sides).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convcheck.bugs.fold import fold_variant, rewires_fold, same_pads_swapped, swap_height_width
from convcheck.bugs.planted import PlantedBug
from convcheck.bugs.stepwise import StepwiseLayer
from convcheck.geometry import PaddingMode, Window
from convcheck.layer import MatrixCache, MatrixConvLayer
from convcheck.spec import Activation, ConvShape


@dataclass(frozen=True)
class FoldIgnoresDilation(StepwiseLayer):
    """The unfold spaces a window's taps ``d`` apart, the fold (col2im) adds them back 1 apart."""

    def fold(self, dcols: np.ndarray, cache: MatrixCache) -> np.ndarray:
        kernel = cache.w_shape[:-2]
        return fold_variant(dcols, cache.x_shape, kernel, self.window_of(cache), taps=(1,) * len(kernel))


@dataclass(frozen=True)
class DilationTimesStride(StepwiseLayer):
    """The fold places window ``o`` at ``o·s·d``: the dilation multiplied into the stride as well as the taps."""

    def fold(self, dcols: np.ndarray, cache: MatrixCache) -> np.ndarray:
        window = self.window_of(cache)
        starts = tuple(s * d for s, d in zip(window.strides, window.dilations, strict=True))
        return fold_variant(dcols, cache.x_shape, cache.w_shape[:-2], window, starts=starts)


@dataclass(frozen=True)
class KernelAxesSwapped(StepwiseLayer):
    """The fold unpacks ``kh, kw = w.shape[1], w.shape[0]``: each row of dM read as a ``kw × kh`` window."""

    def fold(self, dcols: np.ndarray, cache: MatrixCache) -> np.ndarray:
        kernel = cache.w_shape[:-2]
        return fold_variant(dcols, cache.x_shape, kernel, self.window_of(cache), kernel_read=swap_height_width(kernel))


@dataclass(frozen=True)
class StridesSwapped(StepwiseLayer):
    """The fold unpacks ``sw, sh = stride``: windows placed with the vertical and horizontal strides exchanged."""

    def fold(self, dcols: np.ndarray, cache: MatrixCache) -> np.ndarray:
        window = self.window_of(cache)
        return fold_variant(dcols, cache.x_shape, cache.w_shape[:-2], window, starts=swap_height_width(window.strides))


@dataclass(frozen=True)
class PaddingCroppedSymmetrically(StepwiseLayer):
    """The crop ``dpad[a : a + H]`` with the padding after used for both sides, as if the padding were symmetric."""

    def fold(self, dcols: np.ndarray, cache: MatrixCache) -> np.ndarray:
        window, kernel = self.window_of(cache), cache.w_shape[:-2]
        afters = tuple(after for _, after in window.resolve_pads(cache.x_shape[1:-1], kernel))
        return fold_variant(dcols, cache.x_shape, kernel, window, crop=afters)


@dataclass(frozen=True)
class SamePaddingBefore(StepwiseLayer):
    """``same`` padding with the odd row placed before instead of after, in the forward and the backward alike
    (a layer consistent with its own wrong forward: only the forward check sees it)."""

    def _shifted(self, x_shape: tuple[int, ...], kernel: tuple[int, ...]) -> Window:
        window = self.geometry(len(x_shape) - 2)
        return window if window.mode is not PaddingMode.SAME else same_pads_swapped(window, x_shape[1:-1], kernel)

    def forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, MatrixCache]:
        shifted = self._shifted(x.shape, tuple(w.shape[:-2]))
        return MatrixConvLayer(activation=self.activation, window=shifted).forward(x, w, b)

    def window_of(self, cache: MatrixCache) -> Window:
        return self._shifted(cache.x_shape, tuple(cache.w_shape[:-2]))


def _same_with_odd_total(shape: ConvShape, activation: Activation) -> bool:
    return shape.padding_mode is PaddingMode.SAME and any(before != after for before, after in shape.pads)


#: The window family, in catalogue order.
BUGS: tuple[PlantedBug, ...] = (
    PlantedBug(
        "fold-ignores-dilation",
        "the unfold spaces taps dilation apart, the fold (col2im) adds them back 1 apart",
        ("input",),
        "dilation",
        "dilation > 1 along an axis whose kernel is > 1 (and the moved taps reach real input)",
        lambda shape, activation: rewires_fold(shape, taps=(1,) * shape.dims),
        FoldIgnoresDilation,
        any_geometry=True,
    ),
    PlantedBug(
        "dilation-times-stride",
        "the fold places window o at o·stride·dilation: the dilation applied to the stride too",
        ("input",),
        "dilated stride",
        "dilation > 1 along an axis with more than one output",
        lambda shape, activation: rewires_fold(
            shape, starts=tuple(s * d for s, d in zip(shape.strides, shape.dilations, strict=True))
        ),
        DilationTimesStride,
        any_geometry=True,
    ),
    PlantedBug(
        "kernel-axes-swapped",
        "the fold unpacks kh, kw = w.shape[1], w.shape[0]: dM's rows read as kw × kh windows",
        ("input",),
        "kernel axes",
        "kh ≠ kw (a non-square kernel)",
        lambda shape, activation: rewires_fold(shape, kernel_read=swap_height_width(shape.kernel)),
        KernelAxesSwapped,
        any_geometry=True,
    ),
    PlantedBug(
        "strides-swapped",
        "the fold unpacks sw, sh = stride: windows placed with the vertical and horizontal strides exchanged",
        ("input",),
        "stride axes",
        "stride_h ≠ stride_w",
        lambda shape, activation: rewires_fold(shape, starts=swap_height_width(shape.strides)),
        StridesSwapped,
        any_geometry=True,
    ),
    PlantedBug(
        "padding-cropped-symmetrically",
        "asymmetric padding cropped symmetrically: dx cut from the padded gradient at the padding after",
        ("input",),
        "asymmetric padding",
        "padding before ≠ after along some axis (asymmetric or odd `same` padding)",
        lambda shape, activation: rewires_fold(shape, crop=tuple(after for _, after in shape.pads)),
        PaddingCroppedSymmetrically,
        any_geometry=True,
    ),
    PlantedBug(
        "same-padding-before",
        "`same` padding with the odd row placed before instead of after (forward and backward alike)",
        ("forward",),
        "same padding",
        "`same` padding whose total is odd along some axis",
        _same_with_odd_total,
        SamePaddingBefore,
        any_geometry=True,
    ),
)
