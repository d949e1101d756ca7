"""What one check is: the layer's geometry, how to check it, and which implementation to load.

Shape vocabulary used everywhere in convcheck (internal layout is NHWC, as in the seed):

    x:   (N, H, W, C_in)          input feature map
    w:   (k, k, C_in, C_out)      filters; the seed's weight matrix is w.reshape(k*k*C_in, C_out)
    b:   (C_out,)                 bias
    out: (N, OH, OW, C_out)       with OH = (H + 2p - k) // s + 1 and OW = (W + 2p - k) // s + 1
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

AXES = ("height", "width")  # the spatial axes, named as in the keys in_height/in_width and out_height/out_width


def output_size(size: int, filter_size: int, stride: int, padding: int) -> int:
    """Window positions along one axis: ``(size + 2·padding − filter_size) // stride + 1`` (``OH`` from ``H``).

    For ``stride ≥ 1`` this is at least 1 exactly when ``filter_size ≤ size + 2·padding``, the condition
    :meth:`ConvShape.oversized_axes` checks.
    """
    return (size + 2 * padding - filter_size) // stride + 1


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

    ``full``: every entry, by grouped perturbation (2·(2·k²·C_in + 1) forward passes).
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


@dataclass(frozen=True)
class ConvShape:
    """Hyperparameters of one convolution layer, named as in the seed."""

    batch: int
    in_height: int
    in_width: int
    in_depth: int
    out_depth: int
    filter_size: int
    stride: int = 1
    padding: int = 0

    @property
    def out_height(self) -> int:
        return output_size(self.in_height, self.filter_size, self.stride, self.padding)

    @property
    def out_width(self) -> int:
        return output_size(self.in_width, self.filter_size, self.stride, self.padding)

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.in_height, self.in_width, self.in_depth)

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        return (self.filter_size, self.filter_size, self.in_depth, self.out_depth)

    @property
    def b_shape(self) -> tuple[int]:
        return (self.out_depth,)

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.out_height, self.out_width, self.out_depth)

    def problems(self) -> list[str]:
        """Why this geometry is impossible (empty when it is fine)."""
        found = []
        for name in ("batch", "in_height", "in_width", "in_depth", "out_depth", "filter_size", "stride"):
            if getattr(self, name) < 1:
                found.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.padding < 0:
            found.append(f"padding must be at least 0, got {self.padding}")
        if not found:
            found += [
                f"filter_size {self.filter_size} is larger than the padded input {axis} {self.padded_size(axis)} "
                f"(in_{axis} + 2·padding); the output would be empty"
                for axis in self.oversized_axes()
            ]
        return found

    def padded_size(self, axis: str) -> int:
        """``in_height + 2·padding`` (``axis="height"``) or ``in_width + 2·padding`` (``"width"``)."""
        size: int = getattr(self, f"in_{axis}")
        return size + 2 * self.padding

    def oversized_axes(self) -> tuple[str, ...]:
        """The axes of :data:`AXES` along which the filter is larger than the padded input.

        Along such an axis no window fits, so the output would be empty. Both the config loader's message and
        :meth:`problems` come from this one check.
        """
        return tuple(axis for axis in AXES if self.filter_size > self.padded_size(axis))

    def describe(self) -> str:
        """Compact text such as ``8×32×48×16 → 32, k3 s1 p1``."""
        return (
            f"{self.batch}×{self.in_height}×{self.in_width}×{self.in_depth} → {self.out_depth}, "
            f"k{self.filter_size} s{self.stride} p{self.padding}"
        )


@dataclass(frozen=True)
class ImplRef:
    """Where to find a user's implementation.

    ``module`` is a path to a ``.py`` file (resolved against ``base_dir``, the config file's folder) or an
    importable module name. ``forward``/``backward`` name the functions in it.
    """

    module: str
    forward: str = "forward"
    backward: str = "backward"
    signature: Signature = Signature.CONVCHECK
    base_dir: Path | None = None

    def describe(self) -> str:
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
    timeout: float | None = None  # seconds; None: the default in checker.DEFAULT_TIMEOUT
    max_memory: int | None = None  # bytes; None: a fraction of this machine's RAM
    strict: bool = False  # warnings fail the check too
    expected_error: ExpectedError | None = None  # an error the layer may raise by design: the check is skipped
    source: SourceLocation | None = field(default=None, compare=False)
    # The config values this check was expanded from (for JSON output and messages).
    config: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    def with_overrides(self, **changes: object) -> CheckSpec:
        return replace(self, **changes)  # type: ignore[arg-type]
