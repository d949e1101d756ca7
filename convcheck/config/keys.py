"""The keys a check accepts. One :class:`KeyInfo` per key in :data:`CHECK_KEYS` is all the loader knows of it.

The entry drives everything about its key: which parser reads it (by :class:`Kind`), the ``allowed`` text of
its error messages, its JSON Schema (``convcheck schema``), whether a list sweeps it, and where the value goes
(:class:`Target`: a field of ``ConvShape`` or of ``CheckSpec`` with the key's name, or only validated).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from convcheck.spec import Activation, DType, Layout, Method, Signature


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


class Target(str, Enum):
    """Where a key's value ends up in the expanded check."""

    SHAPE = "shape"  # the ConvShape field of the key's name
    SPEC = "spec"  # the CheckSpec field of the key's name
    NONE = "none"  # used while expanding only (the name is composed; out_height/out_width are checked)


SWEEP_TEXT = ", or a non-empty list of such values to sweep"  # ends the allowed text of sweepable keys

# What one value of a kind may be, for the kinds whose text does not depend on the key's bounds or choices.
_VALUE_TEXTS = {
    Kind.PADDING: (
        "an integer ≥ 0 for every side, one per axis such as '1x2', one (before-after) pair per axis such as "
        "'1-2x0-1', 'same' (ceil(in / stride) outputs, the odd row after) or 'valid' (none)"
    ),
    Kind.DIMS: "1, 2 or 3",
    Kind.TEXT: "a non-empty string",
    Kind.IMPL: (
        "'builtin', a path to a .py file (relative to the config file), an importable module name, "
        "or a mapping {module, forward, backward, signature: convcheck|cs231n}"
    ),
    Kind.MEMORY: "a number of bytes (integer ≥ 1) or a string such as '2GB' or '512MiB'",
    Kind.BOOL: "true or false",
    Kind.EXPECTED_ERROR: (
        "an exception class name such as ValueError, or a mapping {type: ValueError, match: REGEX} "
        "(match: a regular expression searched for in the error's message)"
    ),
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
            return f"an integer ≥ {self.minimum:g}"
        if self.kind is Kind.SIZE:
            return f"an integer ≥ {self.minimum:g} for every axis, or one per axis such as '3x5' (frames first in 3-D)"
        if self.kind is Kind.NUMBER:
            return f"a number {'>' if self.exclusive_minimum else '≥'} {self.minimum:g}"
        if self.kind is Kind.CHOICE:
            return "one of " + ", ".join(self.choices)
        return _VALUE_TEXTS[self.kind]

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
            KeyInfo(key, Kind.INT, text, required=True, minimum=1, target=Target.SHAPE)
            for key, text in _SHAPE_KEYS.items()
        ),
        KeyInfo(
            "dims",
            Kind.DIMS,
            "spatial axes: 1 (width), 2 (height, width), 3 (frames, height, width)",
            default=2,
            target=Target.SHAPE,
        ),
        KeyInfo("in_frames", Kind.INT, "input frames F (dims 3 only)", default=1, minimum=1, target=Target.SHAPE),
        KeyInfo("filter_size", Kind.SIZE, "filter size k per axis", required=True, minimum=1, target=Target.SHAPE),
        KeyInfo("stride", Kind.SIZE, "step s between filter positions", default=1, minimum=1, target=Target.SHAPE),
        KeyInfo("dilation", Kind.SIZE, "spacing d between filter taps", default=1, minimum=1, target=Target.SHAPE),
        KeyInfo(
            "padding",
            Kind.PADDING,
            "zero rows added before and after each axis",
            default=0,
            minimum=0,
            target=Target.SHAPE,
        ),
        KeyInfo(
            "groups",
            Kind.INT,
            "channel groups g (divides in_depth and out_depth; g = in_depth: depthwise)",
            default=1,
            minimum=1,
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
                sweepable=False,
                target=Target.NONE,
            )
            for axis, size in (("frames", "F"), ("height", "H"), ("width", "W"))
        ),
        _choice("activation", Activation, "relu", "nonlinearity applied after conv(x, w) + b"),
        _choice("method", Method, "auto", "how numeric gradients are obtained"),
        _choice("dtype", DType, "float64", "floating-point type the layer runs in"),
        KeyInfo("seed", Kind.INT, "seed of the random inputs, weights and dout", default=0, minimum=0),
        KeyInfo("eps", Kind.NUMBER, "finite-difference step; default: by dtype", minimum=0, exclusive_minimum=True),
        KeyInfo("rtol", Kind.NUMBER, "relative tolerance; default: by dtype", minimum=0),
        KeyInfo("atol", Kind.NUMBER, "absolute tolerance; default: by dtype", minimum=0),
        KeyInfo("impl", Kind.IMPL, "implementation to check", default="builtin"),
        _choice("layout", Layout, "nhwc", "memory layout of the implementation's arrays"),
        KeyInfo(
            "timeout",
            Kind.NUMBER,
            "seconds allowed for this check; default: the checker's",
            minimum=0,
            exclusive_minimum=True,
            sweepable=False,
        ),
        KeyInfo(
            "max_memory",
            Kind.MEMORY,
            "memory budget in bytes, or a string like '2GB'; default: by machine",
            minimum=1,
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
}
IMPL_KEYS = tuple(IMPL_ALLOWED)
SUITE_KEYS = ("defaults", "checks")  # the top-level keys of a file that lists its checks

__all__ = [
    "CHECK_KEYS",
    "EXPECTED_ERROR_ALLOWED",
    "IMPL_ALLOWED",
    "IMPL_KEYS",
    "SUITE_KEYS",
    "SWEEP_TEXT",
    "KeyInfo",
    "Kind",
    "Target",
]
