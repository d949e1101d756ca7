"""Settings → :class:`~convcheck.spec.CheckSpec` list: sweeps expanded, each combination's geometry checked.

A check whose keys hold lists expands to the cartesian product of them. Every combination is validated on its
own (a filter can fit one input size of a sweep and not another), the file's expansion is capped, and names
must be unique within a file.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import replace
from enum import Enum
from typing import Any

from convcheck.config.document import CheckNode
from convcheck.config.errors import ConfigError, ConfigWarning, join, shorten
from convcheck.config.keys import CHECK_KEYS, MAX_CHECKS_PER_FILE, Target
from convcheck.config.sanity import tolerance_warnings
from convcheck.config.tree import Doc
from convcheck.config.values import Setting, label
from convcheck.geometry import AXES_BY_DIMS
from convcheck.spec import CheckSpec, ConvShape, ExpectedError, ImplRef, Signature, SourceLocation

MAX_PROBLEMS_PER_CHECK = 20  # distinct invalid-combination messages reported for one swept check

# (key, index of its value in the sweep, message, allowed) → names of the combinations that have it
_Problems = dict[tuple[str, int, str, str], list[str]]


class Expansion:
    """The specs of one file, added check by check, within the file's cap on expanded checks."""

    def __init__(self, doc: Doc) -> None:
        self.doc = doc
        self.specs: list[CheckSpec] = []
        self.warnings: list[ConfigWarning] = []  # valid values that make a check meaningless (config.sanity)
        self._owners: list[CheckNode] = []  # the check each spec came from
        self._total: int | None = 0  # checks this file expands to so far; None once past the cap (reported once)

    def add(self, check: CheckNode, settings: dict[str, Setting]) -> list[ConfigError]:
        """Expand one check whose settings all parsed; the errors are its invalid combinations."""
        size = math.prod(len(setting.values) for setting in settings.values())
        if self._total is None:
            return []
        if self._total + size > MAX_CHECKS_PER_FILE:
            message = (
                f"this check expands to {size} checks, bringing the file to {self._total + size}; "
                f"at most {MAX_CHECKS_PER_FILE} are allowed per file"
            )
            self._total = None
            return [self.doc.error(check.node, check.prefix or "(top level)", message, "smaller sweeps")]
        self._total += size
        expanded, errors = _expand(check, settings, self.doc)
        known = set(self.warnings)  # a value in defaults: is warned about once, not for every check
        self.warnings += [w for w in tolerance_warnings(settings, expanded, self.doc) if w not in known]
        self.specs += expanded
        self._owners += [check] * len(expanded)
        return errors

    def duplicate_names(self) -> list[ConfigError]:
        """Names must be unique within a file: results, JUnit test cases and annotations are keyed by them."""
        first: dict[str, CheckNode] = {}
        reported: set[int] = set()
        errors = []
        for spec, owner in zip(self.specs, self._owners, strict=True):
            if spec.name not in first:
                first[spec.name] = owner
                continue
            if id(owner) in reported or first[spec.name] is owner:
                continue
            reported.add(id(owner))
            other = first[spec.name]
            entry = owner.mapping.get("name")
            at = entry.node if entry is not None else owner.node
            message = (
                f"duplicate check name {shorten(spec.name)!r} "
                f"(also {other.prefix or 'the file'}, line {other.node.line})"
            )
            errors.append(self.doc.error(at, join(owner.prefix, "name"), message, "a name used by one check only"))
        return errors


def _expand(check: CheckNode, settings: dict[str, Setting], doc: Doc) -> tuple[list[CheckSpec], list[ConfigError]]:
    """The checks of a sweep: the cartesian product of the list-valued keys, in table order, last fastest.

    Identical problems from different combinations are reported once, naming the combinations.
    """
    swept = [settings[key] for key in CHECK_KEYS if key in settings and settings[key].swept]
    fixed = {key: setting.values[0] for key, setting in settings.items() if not setting.swept}
    base = str(fixed.pop("name", check.default_name))
    source = SourceLocation(doc.file, check.node.line, check.node.column)
    specs = []
    problems: _Problems = {}
    for combo in itertools.product(*(range(len(setting.values)) for setting in swept)):
        values = dict(fixed)
        values.update((setting.key, setting.values[i]) for setting, i in zip(swept, combo, strict=True))
        name = base + _brackets(swept, combo)
        found = geometry_problems(values) + _framework_problems(values)
        chosen = {setting.key: i for setting, i in zip(swept, combo, strict=True)}
        for key, message, allowed in found:
            problems.setdefault((key, chosen.get(key, 0), message, allowed), []).append(name)
        if not found:
            specs.append(_build_spec(name, values, source))
    total = math.prod(len(setting.values) for setting in swept)
    return specs, _combination_errors(problems, settings, check, total, doc)


def _brackets(swept: list[Setting], combo: tuple[int, ...]) -> str:
    """The suffix naming one combination of a sweep, such as ``[stride=2,padding=same]``."""
    if not swept:
        return ""
    return "[" + ",".join(f"{s.key}={label(s.values[i])}" for s, i in zip(swept, combo, strict=True)) + "]"


def _combination_errors(
    problems: _Problems, settings: dict[str, Setting], check: CheckNode, total: int, doc: Doc
) -> list[ConfigError]:
    errors = []
    for (key, index, message, allowed), names in list(problems.items())[:MAX_PROBLEMS_PER_CHECK]:
        setting = settings.get(key)
        at = setting.nodes[index] if setting is not None else check.node
        field = setting.field_of(index) if setting is not None else join(check.prefix, key)
        if total > 1:
            shown = ", ".join(repr(name) for name in names[:2]) + (", …" if len(names) > 2 else "")
            message = f"{message}, in {len(names)} of {total} expanded checks ({shown})"
        errors.append(doc.error(at, field, message, allowed))
    if len(problems) > MAX_PROBLEMS_PER_CHECK:
        last = errors[-1]  # listed right after the problems it continues, also once errors are sorted
        message = f"and {len(problems) - MAX_PROBLEMS_PER_CHECK} more invalid combinations in this sweep"
        errors.append(ConfigError(doc.file, last.line, last.column, last.field, message, "valid geometries"))
    return errors


def geometry_problems(values: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Why a layer with these (validated) values is impossible, as ``(key, message, allowed)`` triples.

    First what the axes need (``dims`` decides which sizes exist and how many per-axis values to give), then
    what :meth:`~convcheck.spec.ConvShape.problems` refuses, each named by the key to change: ``groups`` not
    dividing the channels, a dilated filter larger than the padded input along some axis, and an ``out_*`` that
    does not match. The sizes come from :class:`~convcheck.spec.ConvShape`, so they agree with every other stage.
    ``same`` padding always has a solution (``ceil(in / stride)`` outputs) and is never refused.
    """
    found = _axes_problems(values)
    if found:
        return found
    shape = _shape(values)
    for name, size in (("in_depth", shape.in_depth), ("out_depth", shape.out_depth)):
        if size % shape.groups:
            message = f"groups {shape.groups} does not divide {name} {size}"
            found.append(("groups", message, f"a divisor of in_depth {shape.in_depth} and out_depth {shape.out_depth}"))
    if found:
        return found
    oversized = shape.oversized_axes()
    for i, axis in enumerate(shape.axes):
        if axis in oversized:
            found.append(_oversized(shape, i, axis))
            continue
        given = values.get(f"out_{axis}")
        if given is not None and given != shape.spatial_out[i]:
            found.append(_out_mismatch(shape, i, axis, given))
    return found


def _axes_problems(values: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Sizes of axes the layer does not have (or lacks), and per-axis values of the wrong length."""
    dims = int(values.get("dims", 2))
    axes = AXES_BY_DIMS[dims]
    found = []
    for axis in ("frames", "height"):
        key, given = f"in_{axis}", values.get(f"in_{axis}")
        if axis not in axes and given not in (None, 1):
            found.append((key, f"a {dims}-D layer has no {axis} ({key} {given})", f"leave {key} out, or dims 3"))
        elif axis in axes and given is None:
            found.append((key, f"missing required key {key!r} for a {dims}-D layer", "an integer ≥ 1"))
    for key in ("filter_size", "stride", "dilation", "padding"):
        value = values.get(key)
        if isinstance(value, tuple) and len(value) != dims:
            message = f"{key} {label(value)} gives {len(value)} axes, a {dims}-D layer has {dims} ({', '.join(axes)})"
            found.append((key, message, f"one value for every axis, or {dims} joined by x"))
    return found


def _oversized(shape: ConvShape, i: int, axis: str) -> tuple[str, str, str]:
    (before, after), k, d = shape.pads[i], shape.kernel[i], shape.dilations[i]
    size = shape.spatial_in[i]
    if d == 1 and before == after:
        message = (
            f"filter_size {k} is larger than the padded input {axis} {shape.padded_in[i]} "
            f"(in_{axis} {size} + 2·padding {before})"
        )
        return ("filter_size", message, f"filter_size ≤ in_{axis} + 2·padding")
    message = (
        f"the filter along {axis} spans {shape.effective_kernel[i]} rows (dilation {d}·(filter_size {k} − 1) + 1), "
        f"more than the padded input {axis} {shape.padded_in[i]} (in_{axis} {size} + padding {before} + {after})"
    )
    return ("filter_size", message, f"dilation·(filter_size − 1) + 1 ≤ in_{axis} + padding before + after")


def _out_mismatch(shape: ConvShape, i: int, axis: str, given: object) -> tuple[str, str, str]:
    out, size, k, s = shape.spatial_out[i], shape.spatial_in[i], shape.kernel[i], shape.strides[i]
    (before, after), d = shape.pads[i], shape.dilations[i]
    if d == 1 and before == after:
        formula = f"(in_{axis} + 2·padding − filter_size) // stride + 1 = ({size} + 2·{before} − {k}) // {s} + 1"
    else:
        formula = (
            f"(in_{axis} + before + after − dilation·(filter_size − 1) − 1) // stride + 1 = "
            f"({size} + {before} + {after} − {d}·({k} − 1) − 1) // {s} + 1"
        )
    message = f"out_{axis} {given} does not match the layer: {formula} = {out}"
    return (f"out_{axis}", message, f"{out}, or leave out_{axis} out")


def _framework_problems(values: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """What a framework layer needs of the other keys: ``device`` is a torch or JAX layer's (a numpy layer runs
    where numpy runs), and an ``nn.Module`` is constructed as ``torch.nn.Conv2d`` is, its weight
    ``(C_out, C_in/groups, *k)``: nchw."""
    impl = values.get("impl")
    framework = isinstance(impl, ImplRef) and impl.framework is not None
    if values.get("device") is not None and not framework:
        return [("device", "device applies to torch and jax layers only (impl: {framework: …})", "no device here")]
    if framework and isinstance(impl, ImplRef) and impl.class_name is not None and values.get("layout") == "nhwc":
        message = "an nn.Module layer is constructed as torch.nn.Conv2d is (x NCHW, weight (C_out, C_in, kh, kw))"
        return [("layout", message, "nchw (the default for torch), or function: for a channels-last layer")]
    return []


def _shape(values: Mapping[str, Any]) -> ConvShape:
    """The layer of one combination from its ``Target.SHAPE`` keys (a 1-D layer's height is 1)."""
    given = {key: values[key] for key, info in CHECK_KEYS.items() if info.target is Target.SHAPE and key in values}
    given.setdefault("in_height", 1)
    return ConvShape(**given)


def _build_spec(name: str, values: Mapping[str, Any], source: SourceLocation) -> CheckSpec:
    """The spec of one valid combination; keys absent from ``values`` take CheckSpec's defaults (a framework
    layer's layout: its framework's; its ``device`` goes into its ``ImplRef``)."""
    impl = values.get("impl")
    shape = _shape(values)
    given = {key: values[key] for key, info in CHECK_KEYS.items() if info.target is Target.SPEC and key in values}
    if isinstance(impl, ImplRef) and impl.framework is not None:
        given["impl"] = replace(impl, device=values.get("device"))
        if "layout" not in values:
            values = {**values, "layout": impl.framework.default_layout}
            given["layout"] = values["layout"]
    return CheckSpec(name=name, shape=shape, source=source, config=_config_dict(name, shape, values), **given)


def _config_dict(name: str, shape: ConvShape, values: Mapping[str, object]) -> dict[str, object]:
    """The check's resolved values as JSON scalars: every key, defaults filled in, padding as an integer."""
    config: dict[str, object] = {"name": name}
    for key, info in CHECK_KEYS.items():
        if key != "name":
            config[key] = _json_value(values[key]) if key in values else info.default
    for key, per_axis in (("filter_size", shape.kernel), ("stride", shape.strides), ("dilation", shape.dilations)):
        config[key] = per_axis[0] if len(set(per_axis)) == 1 else list(per_axis)
    config["padding"] = _padding_json(shape)
    config.update((f"out_{axis}", getattr(shape, f"out_{axis}")) for axis in ("frames", "height", "width"))
    if "impl" in values:
        config["impl"] = _impl_json(values["impl"])
    return config


def _padding_json(shape: ConvShape) -> object:
    """The resolved padding: one int when every side has it, else ``[before, after]`` per axis."""
    flat = {p for pair in shape.pads for p in pair}
    return flat.pop() if len(flat) == 1 else [list(pair) for pair in shape.pads]


def _json_value(value: object) -> object:
    if isinstance(value, ExpectedError):
        return {key: getattr(value, key) for key in ("type", "match") if getattr(value, key) is not None}
    return value.value if isinstance(value, Enum) else value


def _impl_json(ref: object) -> object:
    """An impl as the config would write it: ``builtin``, the module alone, or the full mapping."""
    if not isinstance(ref, ImplRef):
        return "builtin"
    if ref.framework is not None:
        key = "function" if ref.function is not None else "class"
        return {"framework": ref.framework.value, "module": ref.module, key: ref.function or ref.class_name}
    if (ref.forward, ref.backward, ref.signature) == ("forward", "backward", Signature.CONVCHECK):
        return ref.module
    return {
        "module": ref.module,
        "forward": ref.forward,
        "backward": ref.backward,
        "signature": ref.signature.value,
    }


__all__ = ["MAX_CHECKS_PER_FILE", "MAX_PROBLEMS_PER_CHECK", "Expansion", "geometry_problems"]
