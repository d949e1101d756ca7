"""What one check is: the layer's geometry, how to check it, and which implementation to load.

Shape vocabulary used everywhere in convcheck (internal layout is channels-last, as in the seed). For the seed's
2-D layer:

    x:   (N, H, W, C_in)          input feature map
    w:   (k, k, C_in, C_out)      filters; the seed's weight matrix is w.reshape(k*k*C_in, C_out)
    b:   (C_out,)                 bias
    out: (N, OH, OW, C_out)       with OH = (H + 2p - k) // s + 1 and OW = (W + 2p - k) // s + 1

and in general (``ConvShape``; 1-D layers have the width only, 3-D ones frames before the height):

    x:   (N, *spatial_in, C_in)                 w:   (*kernel, C_in/groups, C_out)
    b:   (C_out,), or absent                    out: (N, *spatial_out, C_out)
    out size per axis = (in + before + after − d·(k − 1) − 1) // s + 1   (``output_size``)
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

# Re-exported: the names the rest of convcheck has always read from here.
from convcheck.geometry import AXES as AXES
from convcheck.geometry import AXES_BY_DIMS, PaddingArg, PaddingMode, Pads, Size, Window, per_axis
from convcheck.geometry import output_size as output_size


class Activation(str, Enum):
    """The nonlinearity applied after ``conv(x, w) + b``."""

    RELU = "relu"
    NONE = "none"
    LEAKY_RELU = "leaky_relu"
    SIGMOID = "sigmoid"
    TANH = "tanh"

    @property
    def piecewise_linear(self) -> bool:
        """True when the activation has kinks and no curvature (finite differences are exact off the kinks)."""
        return self in (Activation.RELU, Activation.NONE, Activation.LEAKY_RELU)


class Method(str, Enum):
    """How the numeric gradient is obtained.

    ``full``: every entry, by grouped perturbation (2·(2·∏k·C_in/groups + 1) forward passes; 2·(2·k²·C_in + 1) for
    the seed's layer).
    ``entrywise``: every entry, one central difference each (2 passes per entry; tiny layers only).
    ``sampled``: a random subset of entries, one central difference each.
    ``directional``: random projections ⟨∇L, v⟩ compared with one central difference along v.
    ``auto``: ``full`` when its estimated cost fits the time budget, else ``sampled``.
    """

    AUTO = "auto"
    FULL = "full"
    ENTRYWISE = "entrywise"
    SAMPLED = "sampled"
    DIRECTIONAL = "directional"


class Layout(str, Enum):
    """Memory layout of the user's arrays. ``nhwc``: the seed's; ``nchw``: PyTorch's and CS231n's."""

    NHWC = "nhwc"
    NCHW = "nchw"


class BiasShape(str, Enum):
    """How a user's layer shapes its bias b (and must shape db): ``flat`` ``(C_out,)``, ``column`` ``(C_out, 1)``,
    ``row`` ``(1, C_out)``, ``broadcast`` the shape that broadcasts against out in the layer's layout
    (``(1, …, 1, C_out)`` channels last, ``(1, C_out, 1, …, 1)`` channels first)."""

    FLAT = "flat"
    COLUMN = "column"
    ROW = "row"
    BROADCAST = "broadcast"


class DType(str, Enum):
    """Floating-point type the layer runs in."""

    FLOAT64 = "float64"
    FLOAT32 = "float32"


class Signature(str, Enum):
    """Calling convention of a user's functions.

    ``convcheck``: ``forward(x, w, b, stride, padding) -> (out, cache)``, ``backward(dout, cache) -> (dx, dw, db)``.
    ``cs231n``: ``forward(x, w, b, conv_param) -> (out, cache)`` with ``conv_param = {"stride": s, "pad": p}``,
    NCHW input and weights ``(C_out, C_in, k, k)``.
    """

    CONVCHECK = "convcheck"
    CS231N = "cs231n"


@dataclass(frozen=True, init=False)
class ConvShape:
    """Hyperparameters of one convolution layer: the space ``torch.nn.Conv1d/2d/3d`` covers with zero padding.

    Constructor forms:

    * ``ConvShape(batch, in_height, in_width, in_depth, out_depth, filter_size, stride, padding)`` — the seed's
      names and meaning (2-D); ``filter_size``, ``stride`` and ``padding`` may also be per-axis sequences,
      ``padding`` per-axis ``(before, after)`` pairs or ``"same"``/``"valid"``; keywords ``dilation``, ``groups``,
      ``bias``, ``dims`` (1: the width only, with ``in_height`` 1; 3: ``in_frames`` before the height).
    * ``ConvShape.nd(batch, spatial_in, in_depth, out_depth, kernel, …)`` — the spatial sizes as one tuple.

    Stored normalized (fields): ``batch``, ``spatial_in`` (``(W,)``, ``(H, W)`` or ``(F, H, W)``), ``in_depth``,
    ``out_depth``, ``kernel`` (per axis), ``window`` (strides, dilations, padding, groups) and ``bias``. Layout
    (channels last): x ``(N, *spatial_in, C_in)``, w ``(*kernel, C_in/groups, C_out)``, b ``(C_out,)`` (``(0,)``
    without a bias: no entries), out ``(N, *spatial_out, C_out)``.

    The seed's int attributes (``filter_size``, ``stride``, ``padding``, ``dilation``) are the one value of every
    axis (and side) and raise ``ValueError`` where the axes differ; rules that understand only the seed's
    geometry test ``is_basic`` first. ``in_height``/``out_height`` of a 1-D layer, like the frames of a 1- or
    2-D one, are 1.

    Raises (constructor):
        ValueError: a per-axis value with the wrong number of axes, an unknown padding mode, ``dims`` not 1, 2 or 3,
            or a size given for an axis the layer does not have. Impossible values are ``problems()``, not errors.
    """

    batch: int
    spatial_in: tuple[int, ...]
    in_depth: int
    out_depth: int
    kernel: tuple[int, ...]
    window: Window
    bias: bool

    def __init__(
        self,
        batch: int,
        in_height: int,
        in_width: int,
        in_depth: int,
        out_depth: int,
        filter_size: Size,
        stride: Size = 1,
        padding: PaddingArg = 0,
        *,
        dilation: Size = 1,
        groups: int = 1,
        bias: bool = True,
        dims: int = 2,
        in_frames: int = 1,
    ) -> None:
        if dims not in AXES_BY_DIMS:
            raise ValueError(f"dims must be 1, 2 or 3, got {dims}")
        if dims < 3 and in_frames != 1:
            raise ValueError(f"a {dims}-D layer has no frames (in_frames {in_frames})")
        if dims < 2 and in_height != 1:
            raise ValueError(f"a 1-D layer has no height (in_height {in_height}): give its length as in_width")
        spatial = ((in_frames, in_height, in_width))[3 - dims :]
        window = Window.of(dims, stride, padding, dilation, groups)
        self._assign(batch, spatial, in_depth, out_depth, per_axis(filter_size, dims, "filter_size"), window, bias)

    @classmethod
    def nd(
        cls,
        batch: int,
        spatial_in: Sequence[int],
        in_depth: int,
        out_depth: int,
        kernel: Size,
        stride: Size = 1,
        padding: PaddingArg = 0,
        dilation: Size = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> ConvShape:
        """A layer of ``len(spatial_in)`` spatial axes (1 to 3), sizes in the order frames, height, width."""
        dims = len(spatial_in)
        if dims not in AXES_BY_DIMS:
            raise ValueError(f"a layer has 1, 2 or 3 spatial axes, got {dims}")
        shape = cls.__new__(cls)
        window = Window.of(dims, stride, padding, dilation, groups)
        shape._assign(
            batch, tuple(spatial_in), in_depth, out_depth, per_axis(kernel, dims, "filter_size"), window, bias
        )
        return shape

    def _assign(
        self,
        batch: int,
        spatial_in: tuple[int, ...],
        in_depth: int,
        out_depth: int,
        kernel: tuple[int, ...],
        window: Window,
        bias: bool,
    ) -> None:
        values = (batch, tuple(map(operator.index, spatial_in)), in_depth, out_depth, kernel, window, bool(bias))
        for name, value in zip(
            ("batch", "spatial_in", "in_depth", "out_depth", "kernel", "window", "bias"), values, strict=True
        ):
            object.__setattr__(self, name, value)  # frozen: the dataclass's own __init__ does the same

    # -- per-axis geometry ------------------------------------------------------------------------------------

    @property
    def dims(self) -> int:
        return len(self.spatial_in)

    @property
    def axes(self) -> tuple[str, ...]:
        """The spatial axes' names, in array order: ``("width",)``, ``("height", "width")`` or with ``"frames"``."""
        return AXES_BY_DIMS[self.dims]

    @property
    def strides(self) -> tuple[int, ...]:
        return self.window.strides

    @property
    def dilations(self) -> tuple[int, ...]:
        return self.window.dilations

    @property
    def groups(self) -> int:
        return self.window.groups

    @property
    def padding_mode(self) -> PaddingMode:
        return self.window.mode

    @property
    def pads(self) -> Pads:
        """``(before, after)`` zero padding per axis (``same`` resolved for these sizes)."""
        return self.window.resolve_pads(self.spatial_in, self.kernel)

    @property
    def spatial_out(self) -> tuple[int, ...]:
        """Output positions per axis (``output_size``; less than 1 where the filter does not fit)."""
        return self.window.output_sizes(self.spatial_in, self.kernel)

    @property
    def padded_in(self) -> tuple[int, ...]:
        """``in + before + after`` per axis."""
        return tuple(size + before + after for size, (before, after) in zip(self.spatial_in, self.pads, strict=True))

    @property
    def effective_kernel(self) -> tuple[int, ...]:
        """Rows one window spans per axis: ``dilation·(k − 1) + 1``."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilations, strict=True))

    @property
    def fan_in(self) -> int:
        """Products one pre-activation sums: ``∏k · C_in/groups`` (the bias not counted)."""
        return math.prod(self.kernel) * (self.in_depth // max(1, self.groups))

    @property
    def is_basic(self) -> bool:
        """True for the seed's geometry: 2-D, square kernel, one stride, one padding on every side, no dilation,
        one group, a bias. Rules and fast paths that understand only that space test this first."""
        return (
            self.bias and len(set(self.kernel)) == 1 and self.window.uniform(self.spatial_in, self.kernel) is not None
        )

    # -- the seed's names ---------------------------------------------------------------------------------------

    def _named(self, sizes: tuple[int, ...], axis: str) -> int:
        return sizes[self.axes.index(axis)] if axis in self.axes else 1

    @property
    def in_frames(self) -> int:
        return self._named(self.spatial_in, "frames")

    @property
    def in_height(self) -> int:
        return self._named(self.spatial_in, "height")

    @property
    def in_width(self) -> int:
        return self._named(self.spatial_in, "width")

    @property
    def out_frames(self) -> int:
        return self._named(self.spatial_out, "frames")

    @property
    def out_height(self) -> int:
        return self._named(self.spatial_out, "height")

    @property
    def out_width(self) -> int:
        return self._named(self.spatial_out, "width")

    @property
    def filter_size(self) -> int:
        """The kernel size of every axis (``ValueError`` when the kernel is not square: read ``kernel``)."""
        return _one("filter_size", self.kernel, "kernel")

    @property
    def stride(self) -> int:
        """The stride of every axis (``ValueError`` when they differ: read ``strides``)."""
        return _one("stride", self.strides, "strides")

    @property
    def dilation(self) -> int:
        """The dilation of every axis (``ValueError`` when they differ: read ``dilations``)."""
        return _one("dilation", self.dilations, "dilations")

    @property
    def padding(self) -> int:
        """The padding of every axis and side (``ValueError`` when they differ: read ``pads``)."""
        return _one("padding", tuple(p for pair in self.pads for p in pair), "pads")

    @property
    def x_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.spatial_in, self.in_depth)

    @property
    def w_shape(self) -> tuple[int, ...]:
        return (*self.kernel, self.in_depth // max(1, self.groups), self.out_depth)

    @property
    def b_shape(self) -> tuple[int]:
        """``(C_out,)``, or ``(0,)`` for a layer without a bias (no entries to check)."""
        return (self.out_depth if self.bias else 0,)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.spatial_out, self.out_depth)

    # -- validity -------------------------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """Why this geometry is impossible (empty when it is fine).

        Impossible: a size, kernel, stride, dilation or group count below 1, padding below 0; ``groups`` not
        dividing ``in_depth`` or ``out_depth``; a dilated filter ``dilation·(k − 1) + 1`` larger than the padded
        input along some axis (the output would be empty). Everything else is possible, including windows made
        of padding only and rows no window reads. ``same`` padding always has a solution (``same_pads``).
        """
        found = [f"{name} must be at least 1, got {value}" for name, value in _counts(self) if value < 1]
        found += [f"{name} must be at least 0, got {value}" for name, value in _paddings(self) if value < 0]
        if found:
            return found
        for name, size in (("in_depth", self.in_depth), ("out_depth", self.out_depth)):
            if size % self.groups:
                found.append(f"groups {self.groups} does not divide {name} {size}: every group needs as many channels")
        return found + [_oversized(self, axis) for axis in self.oversized_axes()]

    def padded_size(self, axis: str) -> int:
        """``in + padding before + after`` along ``axis`` (a name in ``axes``), e.g. ``in_height + 2·padding``."""
        return self.padded_in[self.axes.index(axis)]

    def oversized_axes(self) -> tuple[str, ...]:
        """The axes along which the dilated filter is larger than the padded input.

        Along such an axis no window fits, so the output would be empty. Both the config loader's message and
        :meth:`problems` come from this one check.
        """
        spans = zip(self.axes, self.effective_kernel, self.padded_in, strict=True)
        return tuple(axis for axis, span, padded in spans if span > padded)

    def describe(self, channels_first: bool = False) -> str:
        """Compact text such as ``8×32×48×16 → 32, k3 s1 p1`` (per-axis values as ``3x5``); the input's sizes in
        channels-first order (``8×16×32×48``) with ``channels_first``."""
        ordered = (self.in_depth, *self.spatial_in) if channels_first else (*self.spatial_in, self.in_depth)
        sizes = "×".join(map(str, (self.batch, *ordered)))
        if self.is_basic:
            return f"{sizes} → {self.out_depth}, k{self.filter_size} s{self.stride} p{self.padding}"
        parts = [f"k{_axes_text(self.kernel)}", f"s{_axes_text(self.strides)}"]
        if set(self.dilations) != {1}:
            parts.append(f"d{_axes_text(self.dilations)}")
        if self.padding_mode is PaddingMode.EXPLICIT:
            symmetric = all(before == after for before, after in self.pads)
            parts.append(f"p{_axes_text(tuple(b for b, _ in self.pads) if symmetric else self.pads)}")
        else:
            parts.append(f"p-{self.padding_mode.value}")
        if self.groups != 1:
            parts.append(f"g{self.groups}")
        return f"{sizes} → {self.out_depth}, {' '.join(parts)}" + ("" if self.bias else ", no bias")


def _counts(shape: ConvShape) -> list[tuple[str, int]]:
    """``(name, value)`` of every number that must be at least 1, named per axis where the axes differ."""
    sizes = [(f"in_{axis}", size) for axis, size in zip(shape.axes, shape.spatial_in, strict=True)]
    named = [("batch", shape.batch), *sizes, ("in_depth", shape.in_depth), ("out_depth", shape.out_depth)]
    for name, values in (("filter_size", shape.kernel), ("stride", shape.strides), ("dilation", shape.dilations)):
        named += _by_axis(shape, name, values)
    return [*named, ("groups", shape.groups)]


def _paddings(shape: ConvShape) -> list[tuple[str, int]]:
    flat = tuple(p for pair in shape.pads for p in pair)
    if len(set(flat)) == 1:
        return [("padding", flat[0])]
    sides = (("before", 0), ("after", 1))
    return [
        (f"padding {side} along {axis}", pair[i])
        for axis, pair in zip(shape.axes, shape.pads, strict=True)
        for side, i in sides
    ]


def _by_axis(shape: ConvShape, name: str, values: tuple[int, ...]) -> list[tuple[str, int]]:
    if len(set(values)) == 1:
        return [(name, values[0])]
    return [(f"{name} along {axis}", value) for axis, value in zip(shape.axes, values, strict=True)]


def _oversized(shape: ConvShape, axis: str) -> str:
    i = shape.axes.index(axis)
    (before, after), d = shape.pads[i], shape.dilations[i]
    if d == 1 and before == after:
        return (
            f"filter_size {shape.kernel[i]} is larger than the padded input {axis} {shape.padded_size(axis)} "
            f"(in_{axis} + 2·padding); the output would be empty"
        )
    return (
        f"the filter along {axis} spans {shape.effective_kernel[i]} rows (dilation·(filter_size − 1) + 1 with "
        f"filter_size {shape.kernel[i]}, dilation {d}), more than the padded input {axis} "
        f"{shape.padded_size(axis)} (in_{axis} + padding before + after); the output would be empty"
    )


def _one(name: str, values: tuple[int, ...], read: str) -> int:
    """The single value of ``values`` (every axis alike), else ``ValueError`` naming the per-axis attribute."""
    if len(set(values)) != 1:
        raise ValueError(f"{name} differs between the axes ({_axes_text(values)}): read {read}")
    return values[0]


def _axes_text(values: tuple[object, ...]) -> str:
    """``3`` when every axis has it, else ``3x5`` (pairs as ``(0,1)``)."""
    if len(set(values)) == 1:
        values = values[:1]
    return "x".join(f"({v[0]},{v[1]})" if isinstance(v, tuple) else str(v) for v in values)


class Framework(str, Enum):
    """The deep-learning framework a layer is written in (``impl: {framework: …}``); numpy layers have none.

    ``torch``: a ``torch.autograd.Function``, a function whose graph has a custom backward, or an ``nn.Module``;
    gradients from ``torch.autograd.grad``. ``jax``: a function (typically with ``jax.custom_vjp``); gradients
    from ``jax.vjp``.
    """

    TORCH = "torch"
    JAX = "jax"

    @property
    def default_layout(self) -> Layout:
        """The layout the framework's own convolutions use: NCHW for torch, channels-last for JAX."""
        return Layout.NCHW if self is Framework.TORCH else Layout.NHWC


@dataclass(frozen=True)
class ImplRef:
    """Where to find a user's implementation.

    ``module`` is a path to a ``.py`` file (resolved against ``base_dir``, the config file's folder) or an
    importable module name. ``forward``/``backward`` name the functions in it. A framework layer
    (``framework`` set) is instead one object of the module: the function (or ``torch.autograd.Function``)
    named ``function``, or the ``torch.nn.Module`` subclass named ``class_name``, run on ``device`` (``cpu``,
    ``cuda``, ``cuda:1``, a JAX backend; None: the framework's default). The device is part of the reference
    because the process that runs the layer (``convcheck.isolation``) receives the reference alone.
    """

    module: str
    forward: str = "forward"
    backward: str = "backward"
    signature: Signature = Signature.CONVCHECK
    base_dir: Path | None = None
    framework: Framework | None = None
    function: str | None = None
    class_name: str | None = None
    device: str | None = None

    def describe(self) -> str:
        if self.framework is not None:
            where = f" on {self.device}" if self.device is not None else ""
            return f"{self.module}:{self.function or self.class_name} ({self.framework.value}{where})"
        names = "" if (self.forward, self.backward) == ("forward", "backward") else f":{self.forward}/{self.backward}"
        sig = "" if self.signature is Signature.CONVCHECK else f" ({self.signature.value})"
        return f"{self.module}{names}{sig}"


@dataclass(frozen=True)
class SourceLocation:
    """Where a check was declared, for messages and CI annotations."""

    file: str
    line: int  # 1-based
    column: int = 1


@dataclass(frozen=True)
class ExpectedError:
    """An error the layer may raise by design for some geometries (a layer that refuses strides that do not
    divide its input, say): a check where it does is ``skipped``, not an error.

    ``type``: the exception's class name (``ValueError``) or that of a base class; ``match``: a regular expression
    searched for in its message. None matches anything; at least one of them is set.
    """

    type: str | None = None
    match: str | None = None

    def matches(self, lineage: tuple[str, ...], message: str) -> bool:
        """True for an exception whose class and base-class names are ``lineage`` and whose text is ``message``."""
        if self.type is not None and self.type not in lineage:
            return False
        return self.match is None or re.search(self.match, message) is not None


@dataclass(frozen=True)
class CheckSpec:
    """Everything needed to run one check. ``None`` for eps/rtol/atol means "derive from the dtype"."""

    name: str
    shape: ConvShape
    activation: Activation = Activation.RELU
    method: Method = Method.AUTO
    dtype: DType = DType.FLOAT64
    seed: int = 0
    eps: float | None = None
    rtol: float | None = None
    atol: float | None = None
    impl: ImplRef | None = None  # None: convcheck's built-in matrix layer
    layout: Layout = Layout.NHWC
    bias_shape: BiasShape = BiasShape.FLAT  # how a user's layer shapes b and db
    timeout: float | None = None  # seconds; None: the default in checker.DEFAULT_TIMEOUT
    max_memory: int | None = None  # bytes; None: a fraction of this machine's RAM
    strict: bool = False  # warnings fail the check too
    expected_error: ExpectedError | None = None  # an error the layer may raise by design: the check is skipped
    source: SourceLocation | None = field(default=None, compare=False)
    # The config values this check was expanded from (for JSON output and messages).
    config: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    def with_overrides(self, **changes: object) -> CheckSpec:
        return replace(self, **changes)  # type: ignore[arg-type]
