"""What a sweep says: the simplest hyperparameter condition that tells a batch's failures from its passes.

A sweep of 300 geometries answers 300 times "pass" or "fail"; the pattern ("it fails exactly when
padding = 0") is what the user wants. :func:`find_condition` looks for it by an exact search, never a guess:
it enumerates every *atom* the checks' hyperparameters allow and keeps a condition only when it holds for
every failure and for no pass. The atoms are

- a key's value in a simple set of the values the batch has: one value (``padding = 0``), the values from one
  end (``stride ≥ 2``, ``in_height ≤ 5``), a range (``2 ≤ filter_size ≤ 3``), all values but one
  (``in_depth ≠ 1``);
- a relation between two keys of the same kind (``filter_size > stride``, ``in_height ≠ in_width``), from the
  short table :data:`RELATED`.

A condition is one atom, or the conjunction of two atoms about different keys. The simplest one wins: one atom
before two, then by the atoms' kinds in the order above (a value before an end, before a range, before "all
but one", before a relation), then by the order of the keys in a spec (deterministic, never by chance).

A key takes part only where every check has it: ``stride`` where every layer has one stride on every axis, the
per-axis keys (``kh``, ``stride_w``, ``dilation_h``, ``pad_w_before``, …) where every layer has that axis, so a
sweep over ``3x5`` and ``5x3`` kernels can say ``kh ≠ kw`` and one over ``stride: [1, 2x1]`` ``stride_h ≠
stride_w``.

Checks whose status is neither pass nor fail (an error: the implementation raised, or the check could not
run) are left out of the split and counted: an error says nothing about whether the gradients are right, so
letting it fall on either side could hide the pattern of the wrong gradients. Which keys may appear is read
from the specs themselves (every integer field of ``ConvShape``, the output sizes, and the choices
activation, dtype, layout and method), so a new geometry key takes part without a change here.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum

from convcheck.results import CheckResult, Status
from convcheck.spec import CheckSpec

Value = int | str

#: Choice keys of a spec that take part, besides the geometry.
CHOICE_KEYS = ("activation", "dtype", "layout", "method")
#: The geometry's config keys, in the config's order (an int each when it is the same on every axis and side).
GEOMETRY_KEYS = (
    "batch",
    "in_frames",
    "in_height",
    "in_width",
    "in_depth",
    "out_depth",
    "filter_size",
    "stride",
    "padding",
    "dilation",
    "groups",
)

#: Letters of the per-axis keys (``kh``, ``stride_w``, ``pad_h_before``, …), by spatial axis.
AXIS_LETTERS = {"frames": "f", "height": "h", "width": "w"}

#: Pairs of keys measured in the same unit, whose relations are atoms (pixels along an axis; sizes; channels; the
#: same hyperparameter along the height and the width, or before and after).
RELATED: tuple[tuple[str, str], ...] = (
    ("filter_size", "stride"),
    ("filter_size", "padding"),
    ("stride", "padding"),
    ("in_height", "in_width"),
    ("out_height", "out_width"),
    ("in_depth", "out_depth"),
    ("groups", "in_depth"),
    ("kh", "kw"),
    ("stride_h", "stride_w"),
    ("dilation_h", "dilation_w"),
    ("pad_h_before", "pad_h_after"),
    ("pad_w_before", "pad_w_after"),
    ("pad_f_before", "pad_f_after"),
)

#: Fewer checks than this say nothing: with two or three, almost any key that differs "separates" them.
MIN_CHECKS = 4


class Shape(IntEnum):
    """The kind of a key's value set; the order is the order of simplicity."""

    VALUE = 1  # one value
    END = 2  # the values from the smallest up to one, or from one up to the largest
    RANGE = 3  # consecutive values, touching neither end
    EXCEPT = 4  # every value but one


class Relop(str, Enum):
    """A comparison between two keys; ``negated`` is the comparison that holds exactly when this one fails."""

    # The order breaks ties between relations that split a batch alike: an order before an (in)equality.
    GT = ">"
    LT = "<"
    GE = "≥"
    LE = "≤"
    EQ = "="
    NE = "≠"

    @property
    def negated(self) -> Relop:
        return _NEGATION[self]

    @property
    def test(self) -> Callable[[int, int], bool]:
        return _TESTS[self]


_NEGATION = {
    Relop.LT: Relop.GE,
    Relop.LE: Relop.GT,
    Relop.EQ: Relop.NE,
    Relop.NE: Relop.EQ,
    Relop.GE: Relop.LT,
    Relop.GT: Relop.LE,
}
_TESTS: dict[Relop, Callable[[int, int], bool]] = {
    Relop.LT: operator.lt,
    Relop.LE: operator.le,
    Relop.EQ: operator.eq,
    Relop.NE: operator.ne,
    Relop.GE: operator.ge,
    Relop.GT: operator.gt,
}

RELATION_RANK = len(Shape) + 1  # relations come after every kind of value set


@dataclass(frozen=True)
class KeyCondition:
    """``key`` takes one of ``values``; ``others`` are the batch's other values of the key (sorted, disjoint)."""

    key: str
    values: tuple[Value, ...]
    others: tuple[Value, ...]
    shape: Shape

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key,)

    @property
    def rank(self) -> int:
        return int(self.shape)

    def holds(self, features: Mapping[str, Value]) -> bool:
        return features[self.key] in self.values

    def text(self) -> str:
        """The condition, such as ``padding = 0``."""
        return describe_values(self.key, self.values, self.others)

    def negation(self) -> str:
        """What holds exactly when the condition does not, in the batch: ``padding ≥ 1``."""
        return describe_values(self.key, self.others, self.values)

    def to_json(self) -> dict[str, object]:
        return {"key": self.key, "values": list(self.values)}


@dataclass(frozen=True)
class Relation:
    """``left op right``, such as ``filter_size > stride``."""

    left: str
    op: Relop
    right: str

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.left, self.right)

    @property
    def rank(self) -> int:
        return RELATION_RANK

    def holds(self, features: Mapping[str, Value]) -> bool:
        left, right = features[self.left], features[self.right]
        return isinstance(left, int) and isinstance(right, int) and self.op.test(left, right)

    def text(self) -> str:
        return f"{self.left} {self.op.value} {self.right}"

    def negation(self) -> str:
        return f"{self.left} {self.op.negated.value} {self.right}"

    def to_json(self) -> dict[str, object]:
        return {"left": self.left, "op": self.op.value, "right": self.right}


Atom = KeyCondition | Relation


@dataclass(frozen=True)
class SweepCondition:
    """A condition that holds for every failure of a batch and for no pass.

    ``atoms`` all hold for each failure; for each pass at least one of them does not. ``left_out`` counts the
    checks that were neither pass nor fail (errors), which the split ignores.
    """

    atoms: tuple[Atom, ...]
    failures: int
    passes: int
    left_out: int = 0

    @property
    def condition(self) -> str:
        """The failures' condition, such as ``stride ≥ 2 and padding = 0``."""
        return " and ".join(atom.text() for atom in self.atoms)

    @property
    def sentence(self) -> str:
        """``all 17 failures have padding = 0; all 27 passes have padding ≥ 1``."""
        passes = " or ".join(atom.negation() for atom in self.atoms)
        text = f"{_all(self.failures, 'failure')} {self.condition}; {_all(self.passes, 'pass')} {passes}"
        if self.left_out:
            text += f" ({self.left_out} error{'s' if self.left_out != 1 else ''} not counted)"
        return text

    def __str__(self) -> str:
        return self.sentence

    def to_json(self) -> dict[str, object]:
        """The value as JSON: the condition, its sentence, the counts and the atoms."""
        return {
            "condition": self.condition,
            "sentence": self.sentence,
            "failures": self.failures,
            "passes": self.passes,
            "left_out": self.left_out,
            "atoms": [atom.to_json() for atom in self.atoms],
        }


def _all(count: int, noun: str) -> str:
    """``all 17 failures have``, ``both passes have``, ``the only failure has``."""
    plural = noun + ("es" if noun.endswith("s") else "s")
    if count == 1:
        return f"the only {noun} has"
    if count == 2:
        return f"both {plural} have"
    return f"all {count} {plural} have"


def describe_values(key: str, values: Sequence[Value], others: Sequence[Value]) -> str:
    """``key`` taking one of ``values`` (sorted) in a batch whose other values of it are ``others``, in words.

    One value: ``padding = 0``; from one end of the batch's values: ``stride ≥ 2``; a run of consecutive
    values: ``2 ≤ filter_size ≤ 3``; all but one: ``in_depth ≠ 1``; anything else: ``padding ∈ {0, 3}``.
    """
    shape = value_shape(values, others)
    domain = sorted([*values, *others])
    if shape is Shape.VALUE:
        return f"{key} = {values[0]}"
    if shape is Shape.END:
        return f"{key} ≥ {values[0]}" if values[-1] == domain[-1] else f"{key} ≤ {values[-1]}"
    if shape is Shape.RANGE:
        return f"{values[0]} ≤ {key} ≤ {values[-1]}"
    if shape is Shape.EXCEPT:
        return f"{key} ≠ {others[0]}"
    return f"{key} ∈ {{{', '.join(str(v) for v in values)}}}"


def value_shape(values: Sequence[Value], others: Sequence[Value]) -> Shape | None:
    """The simplest :class:`Shape` of the set ``values`` among ``values + others``; None if it has none.

    Only integer values are ordered: a choice key's sets are one value or all but one.
    """
    if len(values) == 1:
        return Shape.VALUE
    if others and all(isinstance(v, int) for v in (*values, *others)):
        numbers, rest = [int(v) for v in values], [int(v) for v in others]
        lowest, highest = min(numbers), max(numbers)
        if not any(lowest < v < highest for v in rest):  # consecutive among the batch's values
            touches_end = all(v > highest for v in rest) or all(v < lowest for v in rest)
            return Shape.END if touches_end else Shape.RANGE
    if len(others) == 1:
        return Shape.EXCEPT
    return None


def features(spec: CheckSpec) -> dict[str, Value]:
    """The hyperparameters of one check that conditions may name: the geometry's keys that have one integer
    value (:data:`GEOMETRY_KEYS`), the output sizes, the per-axis values (``kh``, ``kw``, ``stride_h``,
    ``dilation_w``, ``pad_h_before``, … with the letters of :data:`AXIS_LETTERS`), ``dims``, then the choices of
    :data:`CHOICE_KEYS` by their values and ``bias`` (``true``/``false``)."""
    found: dict[str, Value] = {}
    shape = spec.shape
    for key in GEOMETRY_KEYS:
        try:
            value = getattr(shape, key)
        except ValueError:  # it differs between axes or sides: there is no one value to name
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            found[key] = value
    found["out_height"] = shape.out_height
    found["out_width"] = shape.out_width
    found["dims"] = shape.dims
    for axis, k, stride, dilation, (before, after) in zip(
        shape.axes, shape.kernel, shape.strides, shape.dilations, shape.pads, strict=True
    ):
        letter = AXIS_LETTERS[axis]
        found[f"k{letter}"] = k
        found[f"stride_{letter}"] = stride
        found[f"dilation_{letter}"] = dilation
        found[f"pad_{letter}_before"] = before
        found[f"pad_{letter}_after"] = after
    for key in CHOICE_KEYS:
        value = getattr(spec, key)
        found[key] = value.value if isinstance(value, Enum) else value
    found["bias"] = "true" if shape.bias else "false"
    return found


def find_condition(specs: Sequence[CheckSpec], statuses: Sequence[Status]) -> SweepCondition | None:
    """The simplest condition on the hyperparameters that holds for every failure and for no pass.

    Args:
        specs: the checks of a batch (e.g. one sweep's expansion), in any order.
        statuses: their statuses, one per spec.
    Returns:
        The condition, or None when there are fewer than :data:`MIN_CHECKS` passes and failures, when either
        class is empty, or when no condition of the forms in this module's docstring separates them exactly.
    Raises:
        ValueError: ``specs`` and ``statuses`` differ in length.
    """
    if len(specs) != len(statuses):
        raise ValueError(f"{len(specs)} specs but {len(statuses)} statuses")
    kept = [(features(spec), status) for spec, status in zip(specs, statuses, strict=True)]
    split = [(feats, status is Status.FAIL) for feats, status in kept if status in (Status.PASS, Status.FAIL)]
    failures = sum(failed for _, failed in split)
    passes = len(split) - failures
    if len(split) < MIN_CHECKS or failures == 0 or passes == 0:
        return None
    # Keys some check lacks (a value that differs between axes, an axis of other layers) cannot be compared.
    common = set.intersection(*(set(feats) for feats, _ in split))
    rows = [{key: value for key, value in feats.items() if key in common} for feats, _ in split]
    target = _mask(failed for _, failed in split)
    atoms = _atoms(rows)
    found = _search(atoms, target)
    if found is None:
        return None
    return SweepCondition(found, failures, passes, left_out=len(kept) - len(split))


def condition_of(results: Sequence[CheckResult]) -> SweepCondition | None:
    """:func:`find_condition` for the results of a batch (their specs and statuses). Checks the layer refused as
    their config expects (``skipped``) reached no verdict to split and are left out."""
    ran = [r for r in results if r.status is not Status.SKIPPED]
    return find_condition([r.spec for r in ran], [r.status for r in ran])


def _mask(bits: Iterable[bool]) -> int:
    """The checks for which ``bits`` is true, as the bits of an int (check ``i`` is bit ``i``)."""
    return sum(1 << i for i, bit in enumerate(bits) if bit)


def _atoms(rows: Sequence[Mapping[str, Value]]) -> dict[int, tuple[tuple[int, ...], Atom]]:
    """Every atom the rows allow, by the set of rows it holds for; of atoms with the same set, the simplest.

    Atoms that hold for every row or for none tell nothing and are dropped. The sort key of an atom is its
    rank, then the positions of its keys in the rows' key order, then its position in the enumeration.
    """
    order = {key: index for index, key in enumerate(rows[0])}
    everything = (1 << len(rows)) - 1
    best: dict[int, tuple[tuple[int, ...], Atom]] = {}
    for position, atom in enumerate(_candidates(rows)):
        mask = _mask(atom.holds(row) for row in rows)
        if mask in (0, everything):
            continue
        key = (atom.rank, *(order[name] for name in atom.keys), position)
        if mask not in best or key < best[mask][0]:
            best[mask] = (key, atom)
    return best


def _candidates(rows: Sequence[Mapping[str, Value]]) -> Iterator[Atom]:
    """Every key condition of a simple shape on the values the rows have, then every relation of RELATED."""
    for key in rows[0]:
        domain = sorted({row[key] for row in rows}, key=_sortable)
        for start, stop in itertools.combinations(range(len(domain) + 1), 2):
            values = tuple(domain[start:stop])
            others = tuple(domain[:start] + domain[stop:])
            shape = value_shape(values, others)
            if others and shape is not None:
                yield KeyCondition(key, values, others, shape)
        for index, left_out in enumerate(domain):
            values = tuple(domain[:index] + domain[index + 1 :])
            if len(domain) > 2:
                yield KeyCondition(key, values, (left_out,), value_shape(values, (left_out,)) or Shape.EXCEPT)
    for left, right in RELATED:
        if left in rows[0] and right in rows[0]:
            yield from (Relation(left, op, right) for op in Relop)


def _sortable(value: Value) -> tuple[int, int, str]:
    """Integers in numeric order, then strings in alphabetical order."""
    return (0, value, "") if isinstance(value, int) else (1, 0, value)


def _search(atoms: Mapping[int, tuple[tuple[int, ...], Atom]], target: int) -> tuple[Atom, ...] | None:
    """The simplest one or two atoms whose rows, intersected, are exactly ``target``; None if there are none.

    One atom must hold for exactly the target rows. Two atoms must each hold for every target row (a superset
    mask) and, together, for no other: only supersets are paired, so the search is quadratic in their number.
    """
    if target in atoms:
        return (atoms[target][1],)
    supersets = sorted((key, mask, atom) for mask, (key, atom) in atoms.items() if mask & target == target)
    best: tuple[tuple[object, ...], tuple[Atom, Atom]] | None = None
    for (key_a, mask_a, a), (key_b, mask_b, b) in itertools.combinations(supersets, 2):
        if mask_a & mask_b != target or _same_subject(a, b):
            continue
        rank = (key_a[0] + key_b[0], key_a, key_b)
        if best is None or rank < best[0]:
            best = (rank, (a, b))
    return None if best is None else best[1]


def _same_subject(a: Atom, b: Atom) -> bool:
    """Two conditions on one key (their conjunction is a set of that key's values, itself an atom or messy),
    or two relations between the same keys."""
    return type(a) is type(b) and a.keys == b.keys


__all__ = [
    "MIN_CHECKS",
    "RELATED",
    "Atom",
    "KeyCondition",
    "Relation",
    "Relop",
    "Shape",
    "SweepCondition",
    "condition_of",
    "describe_values",
    "features",
    "find_condition",
    "value_shape",
]
