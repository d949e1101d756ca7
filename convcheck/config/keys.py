"""The keys a check accepts. One :class:`KeyInfo` per key in :data:`CHECK_KEYS` is all the loader knows of it.

The entry drives everything about its key: which parser reads it (by :class:`Kind`), the ``allowed`` text of
its error messages, its JSON Schema (``convcheck schema``), whether a list sweeps it, and where the value goes
(:class:`Target`: a field of ``ConvShape`` or of ``CheckSpec`` with the key's name, or only validated).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from convcheck.spec import Activation, BiasShape, DType, Framework, Layout, Method, Signature


class Kind(str, Enum):
    """What sort of value a key takes: picks the parser, the ``allowed`` text and the schema of its values."""

    INT = "int"
    NUMBER = "number"
    CHOICE = "choice"  # one of the values of KeyInfo.enum
    PADDING = "padding"  # an integer, per-axis or per-side values (1x2, 1-2x0-1), 'same' or 'valid'
    SIZE = "size"  # an integer for every axis, or one per axis such as 3x5
    DIMS = "dims"  # 1, 2 or 3
    TEXT = "text"
    IMPL = "impl"  # 'builtin', a path, a module name, or a mapping of IMPL_KEYS
    MEMORY = "memory"  # bytes, or a size such as '2GB'
    BOOL = "bool"  # true or false
    EXPECTED_ERROR = "expected error"  # an exception class name, or a mapping {type, match}
    DEVICE = "device"  # cpu, cuda, cuda:N, … (a framework layer's device)


class Target(str, Enum):
    """Where a key's value ends up in the expanded check."""

    SHAPE = "shape"  # the ConvShape field of the key's name
    SPEC = "spec"  # the CheckSpec field of the key's name
    NONE = "none"  # used while expanding only (the name is composed; out_height/out_width are checked)


SWEEP_TEXT = ", or a non-empty list of such values to sweep"  # ends the allowed text of sweepable keys

# Upper bounds: every number a config gives is bounded, so that nothing overflows at run time (a 101-digit
# stride, ``timeout: 1e308``) and a typo in a size is refused by ``validate`` instead of estimated in GiB.
MAX_SIZE = 1_000_000  # any size, stride or padding
MAX_SEED = 2**64 - 1
MAX_EPS = 1.0
MAX_TOLERANCE = 1e6  # rtol, atol (rtol ≥ 1 already lets any error of a factor 2 pass: see config.warnings)
MAX_TIMEOUT = 7 * 24 * 3600.0  # a week, in seconds
MAX_MEMORY = 2**50  # 1 PiB
MAX_CHECKS_PER_FILE = 100_000  # a sweep that expands further is almost certainly a mistake
MAX_NAME_LENGTH = 200  # characters of a check's name (the names of a sweep's checks add their values)
MAX_TEXT_LENGTH = 4096  # characters of any other string (an impl path or module name)

# What one value of a kind may be, for the kinds whose text does not depend on the key's bounds or choices.
_VALUE_TEXTS = {
    Kind.DIMS: "1, 2 or 3",
    Kind.IMPL: (
        "'builtin', a path to a .py file (relative to the config file), an importable module name, "
        "or a mapping {module, forward, backward, signature: convcheck|cs231n}, "
        "or {framework: torch|jax, function: FILE.py:NAME} / {framework: torch, module: FILE.py, class: NAME}"
    ),
    Kind.MEMORY: f"a number of bytes (integer ≥ 1 and ≤ {MAX_MEMORY}) or a string such as '2GB' or '512MiB'",
    Kind.BOOL: "true or false",
    Kind.EXPECTED_ERROR: (
        "an exception class name such as ValueError, or a mapping {type: ValueError, match: REGEX} "
        "(match: a regular expression searched for in the error's message)"
    ),
    Kind.DEVICE: "cpu, cuda, cuda:N (torch), or a JAX backend such as cpu, gpu, gpu:N",
}


@dataclass(frozen=True)
class KeyInfo:
    """What one check key accepts. The loader, the JSON Schema and docs/config.md all derive from this table.

    ``default`` is the JSON value used when the key is absent (``None``: derived at run time); it must equal
    the default of the ``ConvShape``/``CheckSpec`` field the key fills (a test holds them together).
    """

    name: str
    kind: Kind
    description: str
    required: bool = False
    default: object = None
    minimum: float | None = None
    exclusive_minimum: bool = False
    maximum: float | None = None  # inclusive; every number key has one
    enum: type[Enum] | None = None  # the choices of a Kind.CHOICE key
    sweepable: bool = True
    target: Target = Target.SPEC

    @property
    def choices(self) -> tuple[str, ...]:
        """The values a choice key accepts, in the enum's order (empty for other kinds)."""
        return tuple(str(member.value) for member in self.enum) if self.enum is not None else ()

    def value_text(self) -> str:
        """What one value of this key may be, such as ``an integer ≥ 1``."""
        if self.kind is Kind.INT:
            return f"an integer ≥ {self.minimum:g}{self.maximum_text()}"
        if self.kind is Kind.NUMBER:
            return f"a number {'>' if self.exclusive_minimum else '≥'} {self.minimum:g}{self.maximum_text()}"
        if self.kind is Kind.SIZE:
            return f"an integer ≥ 1{self.maximum_text()} for every axis, or one per axis such as '3x5' (frames first)"
        if self.kind is Kind.PADDING:
            return (
                f"an integer ≥ 0{self.maximum_text()} for every side, one per axis such as '1x2', a before-after "
                "pair per axis such as '1-2x0-1', 'same' (ceil(in / stride) outputs, the odd row after) or 'valid'"
            )
        if self.kind is Kind.TEXT:
            return f"a non-empty string of at most {MAX_NAME_LENGTH} printable characters"
        if self.kind is Kind.CHOICE:
            return "one of " + ", ".join(self.choices)
        return _VALUE_TEXTS[self.kind]

    def maximum_text(self) -> str:
        """`` and ≤ 1000000`` (integers in full, as a config writes them), or ``""`` without a maximum."""
        if self.maximum is None:
            return ""
        shown = f"{int(self.maximum)}" if float(self.maximum).is_integer() else f"{self.maximum:g}"
        return f" and ≤ {shown}"

    def allowed_text(self) -> str:
        """What this key accepts, as the ``allowed`` part of an error message (and the schema's text)."""
        return self.value_text() + (SWEEP_TEXT if self.sweepable else "")


def _choice(name: str, enum: type[Enum], default: str, description: str) -> KeyInfo:
    return KeyInfo(name, Kind.CHOICE, description, default=default, enum=enum)


_SHAPE_KEYS = {
    "batch": "number of input examples N",
    "in_height": "input height H (not for dims 1)",
    "in_width": "input width W (the length of a 1-D layer)",
    "in_depth": "input channels C_in",
    "out_depth": "output channels C_out (number of filters)",
}

CHECK_KEYS: Mapping[str, KeyInfo] = {
    info.name: info
    for info in (
        KeyInfo(
            "name", Kind.TEXT, "name of the check; default: file stem and index", sweepable=False, target=Target.NONE
        ),
        *(
            KeyInfo(key, Kind.INT, text, required=True, minimum=1, maximum=MAX_SIZE, target=Target.SHAPE)
            for key, text in _SHAPE_KEYS.items()
        ),
        KeyInfo(
            "dims",
            Kind.DIMS,
            "spatial axes: 1 (width), 2 (height, width), 3 (frames, height, width)",
            default=2,
            target=Target.SHAPE,
        ),
        KeyInfo(
            "in_frames",
            Kind.INT,
            "input frames F (dims 3 only)",
            default=1,
            minimum=1,
            maximum=MAX_SIZE,
            target=Target.SHAPE,
        ),
        *(
            KeyInfo(
                key,
                Kind.SIZE,
                text,
                required=key == "filter_size",
                default=None if key == "filter_size" else 1,
                minimum=1,
                maximum=MAX_SIZE,
                target=Target.SHAPE,
            )
            for key, text in (
                ("filter_size", "filter size k per axis"),
                ("stride", "step s between filter positions"),
                ("dilation", "spacing d between filter taps"),
            )
        ),
        KeyInfo(
            "padding",
            Kind.PADDING,
            "zero rows added before and after each axis",
            default=0,
            minimum=0,
            maximum=MAX_SIZE,
            target=Target.SHAPE,
        ),
        KeyInfo(
            "groups",
            Kind.INT,
            "channel groups g (divides in_depth and out_depth; g = in_depth: depthwise)",
            default=1,
            minimum=1,
            maximum=MAX_SIZE,
            target=Target.SHAPE,
        ),
        KeyInfo(
            "bias",
            Kind.BOOL,
            "the layer has a bias b (false: b is None, db must be None)",
            default=True,
            target=Target.SHAPE,
        ),
        *(
            KeyInfo(
                f"out_{axis}",
                Kind.INT,
                f"expected output {axis}, checked against ({size} + before + after − d·(k − 1) − 1)//s + 1",
                minimum=1,
                maximum=MAX_SIZE,
                sweepable=False,
                target=Target.NONE,
            )
            for axis, size in (("frames", "F"), ("height", "H"), ("width", "W"))
        ),
        _choice("activation", Activation, "relu", "nonlinearity applied after conv(x, w) + b"),
        _choice("method", Method, "auto", "how numeric gradients are obtained"),
        _choice("dtype", DType, "float64", "floating-point type the layer runs in"),
        KeyInfo(
            "seed", Kind.INT, "seed of the random inputs, weights and dout", default=0, minimum=0, maximum=MAX_SEED
        ),
        KeyInfo(
            "eps",
            Kind.NUMBER,
            "finite-difference step; default: by dtype",
            minimum=0,
            exclusive_minimum=True,
            maximum=MAX_EPS,
        ),
        KeyInfo("rtol", Kind.NUMBER, "relative tolerance; default: by dtype", minimum=0, maximum=MAX_TOLERANCE),
        KeyInfo("atol", Kind.NUMBER, "absolute tolerance; default: by dtype", minimum=0, maximum=MAX_TOLERANCE),
        KeyInfo("impl", Kind.IMPL, "implementation to check", default="builtin"),
        _choice("layout", Layout, "nhwc", "memory layout of the implementation's arrays; default nchw for torch"),
        _choice("bias_shape", BiasShape, "flat", "shape of the implementation's b and db"),
        KeyInfo(
            "device",
            Kind.DEVICE,
            "device a torch or jax layer runs on; default: the framework's",
            target=Target.NONE,  # part of the impl's ImplRef (the isolated process gets the reference alone)
        ),
        KeyInfo(
            "timeout",
            Kind.NUMBER,
            "seconds allowed for this check; default: the checker's",
            minimum=0,
            exclusive_minimum=True,
            maximum=MAX_TIMEOUT,
            sweepable=False,
        ),
        KeyInfo(
            "max_memory",
            Kind.MEMORY,
            "memory budget in bytes, or a string like '2GB'; default: by machine",
            minimum=1,
            maximum=MAX_MEMORY,
            sweepable=False,
        ),
        KeyInfo("strict", Kind.BOOL, "warnings fail the check too (as --strict does)", default=False, sweepable=False),
        KeyInfo(
            "expected_error",
            Kind.EXPECTED_ERROR,
            "an error the layer raises by design for some geometries; checks where it does are skipped",
            sweepable=False,
        ),
    )
}

# The keys of an expected_error: mapping, with what each accepts.
EXPECTED_ERROR_ALLOWED: Mapping[str, str] = {
    "type": "an exception class name, such as ValueError (a base class matches its subclasses)",
    "match": "a regular expression searched for in the error's message",
}

# The keys of an impl: mapping, with what each accepts.
IMPL_ALLOWED: Mapping[str, str] = {
    "module": "a path to a .py file (relative to the config file) or an importable module name",
    "forward": "a Python function name",
    "backward": "a Python function name",
    "signature": ", ".join(member.value for member in Signature),
    "framework": ", ".join(member.value for member in Framework),
    "function": "a function or torch.autograd.Function, as NAME (with module:) or FILE.py:NAME",
    "class": "a torch.nn.Module subclass, as NAME (with module:) or FILE.py:NAME",
}
IMPL_KEYS = tuple(IMPL_ALLOWED)
SUITE_KEYS = ("defaults", "checks")  # the top-level keys of a file that lists its checks

__all__ = [
    "CHECK_KEYS",
    "MAX_CHECKS_PER_FILE",
    "MAX_EPS",
    "MAX_MEMORY",
    "MAX_NAME_LENGTH",
    "MAX_SEED",
    "MAX_SIZE",
    "MAX_TEXT_LENGTH",
    "MAX_TIMEOUT",
    "MAX_TOLERANCE",
    "EXPECTED_ERROR_ALLOWED",
    "IMPL_ALLOWED",
    "IMPL_KEYS",
    "SUITE_KEYS",
    "SWEEP_TEXT",
    "KeyInfo",
    "Kind",
    "Target",
]
