"""Adapting a user's layer to the engine's NHWC layer protocol, and auditing what it does to its arguments.

``UserLayer`` hands the user fresh C-contiguous copies in the user's layout (shapes in
``convcheck.user.shapes``) and converts what comes back with one transpose-copy per array, so nothing the user
does to its arguments or keeps in its cache can reach the engine's arrays. It never repairs what the user
returns: a wrong shape is a ``ContractError`` that says what the shape looks like.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from convcheck.bits import same_bits
from convcheck.geometry import PaddingArg, Size, Window
from convcheck.results import Finding, FindingKind
from convcheck.spec import BiasShape, ConvShape, ImplRef, Layout, Signature
from convcheck.user.arguments import bias_shape as user_bias_shape
from convcheck.user.arguments import call_values, keyword_arguments, needed_keywords
from convcheck.user.errors import (
    ContractError,
    Frame,
    ImplementationError,
    UserCodeError,
    UserFault,
    innermost_frame,
)
from convcheck.user.shapes import expected_shape, layer_dims, shape_problem, to_engine, to_user, user_index

__all__ = ["Change", "Foreign", "ForeignException", "LoadedImpl", "UserCache", "UserLayer", "describe", "modification"]


class Foreign:
    """A value the user's code returned in another process that cannot cross to this one (not a plain numeric
    array): only its description (``describe``) does, so that the contract's messages read the same."""

    def __init__(self, description: str) -> None:
        self.description = description

    def __repr__(self) -> str:
        return f"Foreign({self.description!r})"


class ForeignException(Exception):  # noqa: N818 - it stands for the user's exception, whatever its name
    """The user's code raised in another process: its type's name, its message and the user's frame."""

    def __init__(self, type_name: str, message: str, frame: Frame | None, lineage: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message
        self.frame = frame
        self.lineage = lineage  # the names of its class and its base classes


@dataclass(frozen=True)
class LoadedImpl:
    """A user's two functions, and where they came from (for messages and for locating the user's frames)."""

    forward: Callable[..., Any]
    backward: Callable[..., Any]
    ref: ImplRef
    module: ModuleType
    origin: str  # the file (or module name) as shown in messages
    roots: tuple[Path, ...] = field(default=())  # folders whose frames count as the user's own


@dataclass(frozen=True)
class Change:
    """How an array handed to a layer was modified in place: entries changed, and the first (row-major)."""

    count: int
    first: tuple[int, ...]


def modification(given: np.ndarray, pristine: np.ndarray) -> Change | None:
    """How ``given`` differs from ``pristine``, its copy from before a call, or None when it does not.

    Both arrays have the shape of the argument (any). NaN equals NaN here: a NaN the caller passed in is not a
    modification.
    """
    if same_bits(given, pristine):
        return None  # the usual case, in one pass (the comparison below makes several)
    if given.shape == pristine.shape and np.array_equal(given, pristine, equal_nan=True):
        return None
    changed = np.argwhere(~((given == pristine) | (np.isnan(given) & np.isnan(pristine))))
    return Change(len(changed), tuple(int(i) for i in changed[0]))


@dataclass
class _Handed:
    """An array given to the user, with a pristine copy while auditing (to detect in-place modification)."""

    name: str
    array: np.ndarray
    pristine: np.ndarray | None = None


@dataclass(frozen=True)
class UserCache:
    """What ``UserLayer.forward`` returns as the cache: the user's own cache and the engine-side context."""

    user: Any
    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    handed: tuple[_Handed, ...] = ()  # the forward's arguments, only while auditing
    b_dtype: np.dtype[Any] | None = None  # the engine's b's (a bias-free layer's empty db has it)


class UserLayer:
    """A user's forward/backward as a ``ConvLayer``: NHWC in and out, whatever the user's layout.

    Every call hands the user fresh C-contiguous copies in its layout (``x: (N, C_in, H, W)`` and
    ``w: (C_out, C_in, k, k)`` for nchw) and converts the results back with one transpose-copy each, after
    checking their shapes against the contract (``ContractError`` otherwise; nothing is reshaped or repaired).
    Exceptions raised by the user's functions become ``UserCodeError``.
    """

    def __init__(
        self,
        impl: LoadedImpl,
        *,
        stride: Size = 1,
        padding: PaddingArg = 0,
        layout: Layout = Layout.NHWC,
        window: Window | None = None,
        bias: bool = True,
        bias_shape: BiasShape = BiasShape.FLAT,
    ) -> None:
        self.impl = impl
        self.window = window or Window.of(2, stride, padding)
        self.stride, self.padding = stride, padding  # as given (the seed's ints); the window is what is used
        self.bias, self.bias_shape = bias, bias_shape
        self.signature = impl.ref.signature
        self._keywords = keyword_arguments(impl.forward, self.window, impl.ref.signature)  # dilation, groups
        # CS231n's convention is NCHW whatever the config's layout says.
        self.layout = Layout.NCHW if self.signature is Signature.CS231N else layout
        self._forward = impl.forward
        self._backward = impl.backward
        self._audit: dict[tuple[str, str], Finding] | None = None  # (call, argument) → first finding
        self.points: PointRecorder | None = None  # keeps a sample of the forward calls (``convcheck.isolation``)

    @classmethod
    def for_shape(
        cls, impl: LoadedImpl, shape: ConvShape, layout: Layout, bias_shape: BiasShape = BiasShape.FLAT
    ) -> UserLayer:
        """The user's layer bound to ``shape``'s geometry (stride, padding, dilation, groups, bias).

        Raises:
            ImplementationError: the check needs a dilation or groups the forward function does not accept.
        """
        missing = needed_keywords(impl.forward, shape.window, impl.ref.signature)
        if missing:
            raise ImplementationError(missing, file=None)
        uniform = shape.window.uniform(shape.spatial_in, shape.kernel)
        stride, padding = uniform if uniform is not None else (shape.strides, shape.pads)
        window, bias = shape.window, shape.bias
        return cls(impl, stride=stride, padding=padding, layout=layout, window=window, bias=bias, bias_shape=bias_shape)

    def with_impl(self, impl: LoadedImpl) -> UserLayer:
        """The same layer (geometry, layout, bias) calling ``impl``'s functions."""
        return UserLayer(
            impl,
            stride=self.stride,
            padding=self.padding,
            layout=self.layout,
            window=self.window,
            bias=self.bias,
            bias_shape=self.bias_shape,
        )

    def __repr__(self) -> str:
        return (
            f"UserLayer({self.impl.origin}:{self.impl.ref.forward}/{self.impl.ref.backward}, "
            f"stride={self.stride}, padding={self.padding}, layout={self.layout.value}, "
            f"signature={self.signature.value})"
        )

    # -- the protocol --------------------------------------------------------------------------------------

    def forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, UserCache]:
        """``x: (N, H, W, C_in)``, ``w: (k, k, C_in, C_out)``, ``b: (C_out,)`` → ``(out, cache)`` (any ``dims``:
        ``x: (N, *spatial, C_in)``, ``w: (*k, C_in/g, C_out)``; ``b: (0,)`` without a bias: the user gets None).

        ``out: (N, OH, OW, C_out)``; the cache is a ``UserCache`` holding the user's own cache.

        Raises:
            UserCodeError: the user's forward raised.
            ContractError: it did not return ``(out, cache)`` with ``out`` an array of the contract's shape.
        """
        xu, wu = self._to_user(x, "x"), self._to_user(w, "w")
        bu = b.reshape(self._bias_shape(x.ndim, w.shape[-1])).copy() if self.bias else None
        handed = tuple(self._hand(name, a) for name, a in (("x", xu), ("w", wu), ("b", bu)) if a is not None)
        stride, padding = call_values(self.window, x.shape[1:-1], w.shape[:-2])
        try:
            returned = self._call_forward(xu, wu, bu, stride, padding)
        except UserFault:
            raise  # already the user's fault, in its own words (e.g. the user's process died)
        except (Exception, SystemExit) as exc:
            raise self._user_error("forward", self.impl.ref.forward, exc) from exc
        if self._audit is not None:
            self._check_handed(handed, "forward")
        if not isinstance(returned, tuple | list) or len(returned) != 2:
            raise ContractError(
                f"the implementation's forward must return (out, cache); it returned {_describe(returned)}",
                tensor="out",
                kind=FindingKind.NOT_AN_ARRAY,
            )
        out, user_cache = returned
        dims = layer_dims(x.shape, w.shape, self.window)
        self._check_array("out", "forward's out", "out", out, dims)
        cache = UserCache(user_cache, x.shape, w.shape, handed if self._audit is not None else (), b.dtype)
        engine_out = self._to_engine(out, "out")
        if self.points is not None:
            self.points.offer(x, w, b, engine_out)
        return engine_out, cache

    def backward(self, dout: np.ndarray, cache: UserCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``dout: (N, OH, OW, C_out)`` → ``(dx, dw, db)`` shaped like ``(x, w, b)`` in NHWC.

        Raises:
            UserCodeError: the user's backward raised.
            ContractError: it did not return three arrays of the contract's shapes.
        """
        if not isinstance(cache, UserCache):
            raise TypeError(f"UserLayer.backward needs the cache its forward returned, got {type(cache).__name__}")
        du = self._to_user(dout, "out")
        handed_dout = self._hand("dout", du)
        try:
            returned = self._call_backward(du, cache.user)
        except UserFault:
            raise
        except (Exception, SystemExit) as exc:
            raise self._user_error("backward", self.impl.ref.backward, exc) from exc
        if self._audit is not None:
            self._check_handed((handed_dout, *cache.handed), "backward")
        if not isinstance(returned, tuple | list) or len(returned) != 3:
            raise ContractError(
                f"the implementation's backward must return (dx, dw, db); it returned {_describe(returned)}",
                tensor="dx",
                kind=FindingKind.NOT_AN_ARRAY,
            )
        dims = layer_dims(cache.x_shape, cache.w_shape, self.window)
        for name, tensor, value in zip(("dx", "dw"), ("x", "w"), returned[:2], strict=True):
            self._check_array(name, name, tensor, value, dims)
        dx, dw, db = returned
        return self._to_engine(dx, "x"), self._to_engine(dw, "w"), self._db(db, cache, dims)

    # -- calling the user's functions (a subclass may call them in another process) ---------------------------

    def _call_forward(
        self, xu: np.ndarray, wu: np.ndarray, bu: np.ndarray | None, stride: object, padding: object
    ) -> object:
        """The user's forward on arrays in its layout, with the signature's hyperparameters (``stride`` and
        ``padding`` in their simplest form; ``dilation`` and ``groups`` as keywords where the function takes them)."""
        if self.signature is Signature.CS231N:
            return self._forward(xu, wu, bu, {"stride": stride, "pad": padding, **self._keywords})
        return self._forward(xu, wu, bu, stride, padding, **self._keywords)

    def _call_backward(self, du: np.ndarray, user_cache: Any) -> object:
        """The user's backward on ``dout`` in its layout and the cache its forward returned."""
        return self._backward(du, user_cache)

    # -- auditing (used by convcheck.user.contract) ----------------------------------------------------------

    @contextmanager
    def auditing(self) -> Iterator[dict[tuple[str, str], Finding]]:
        """While active, forward and backward also record in-place modification of the arrays handed to the
        user (including forward's arguments modified later by backward) in the yielded dict: one finding per
        (call, argument), the first seen (every call is audited; later modifications repeat the news)."""
        self._audit = {}
        try:
            yield self._audit
        finally:
            self._audit = None

    def user_index(self, tensor: str, index: tuple[int, ...]) -> tuple[int, ...]:
        """An NHWC index of ``tensor`` (``x``, ``w``, ``b``, ``out``) as an index into the user's layout."""
        return user_index(tensor, index, self.layout)

    # -- helpers -------------------------------------------------------------------------------------------

    def _to_user(self, array: np.ndarray, tensor: str) -> np.ndarray:
        return to_user(array, tensor, self.layout)  # ndarray.copy is C-order: always a fresh array

    def _to_engine(self, array: np.ndarray, tensor: str) -> np.ndarray:
        return to_engine(array, tensor, self.layout)

    def _bias_shape(self, ndim: int, c_out: int) -> tuple[int, ...]:
        """The user's b shape (``bias_shape``) for arrays of ``ndim`` axes."""
        return user_bias_shape(self.bias_shape, self.layout, ndim, c_out)

    def _db(self, db: object, cache: UserCache, dims: dict[str, int]) -> np.ndarray:
        """The user's db as the engine's ``(C_out,)``, or ``(0,)`` for a layer without a bias (db must be None)."""
        if not self.bias:
            if db is not None:
                raise ContractError(
                    f"db must be None for a layer without a bias (bias: false); the implementation returned "
                    f"{_describe(db)}",
                    tensor="db",
                    kind=FindingKind.SHAPE if isinstance(db, np.ndarray) else FindingKind.NOT_AN_ARRAY,
                    shape=tuple(db.shape) if isinstance(db, np.ndarray) else None,
                )
            return np.zeros((0,), dtype=cache.b_dtype)
        if self.bias_shape is BiasShape.FLAT:
            self._check_array("db", "db", "b", db, dims)
            return np.array(db, copy=True)
        wanted = self._bias_shape(len(cache.x_shape), dims["C_out"])
        if not isinstance(db, np.ndarray) or db.shape != wanted:
            got = f"shape {db.shape}" if isinstance(db, np.ndarray) else _describe(db)
            raise ContractError(
                f"db has {got}, but with bias_shape {self.bias_shape.value} the contract wants {wanted}, the "
                "shape of b",
                tensor="db",
                kind=FindingKind.SHAPE if isinstance(db, np.ndarray) else FindingKind.NOT_AN_ARRAY,
                shape=tuple(db.shape) if isinstance(db, np.ndarray) else None,
            )
        return np.array(db, copy=True).reshape(-1)

    def _hand(self, name: str, array: np.ndarray) -> _Handed:
        return _Handed(name, array, array.copy() if self._audit is not None else None)

    def _check_handed(self, handed: tuple[_Handed, ...], role: str) -> None:
        assert self._audit is not None
        for item in handed:
            change = None if item.pristine is None else modification(item.array, item.pristine)
            if change is None:
                continue
            kept = " (kept in its cache from forward)" if role == "backward" and item.name != "dout" else ""
            at = f"{item.name}[{', '.join(map(str, change.first))}]"
            text = (
                f"{role} modified its argument {item.name}{kept} in place ({change.count} of "
                f"{item.array.size} entries changed, first at {at} in the {self.layout.value} layout): "
                "the caller's array must stay as it was; copy before modifying"
            )
            self._audit.setdefault((role, item.name), Finding(FindingKind.MODIFIED_ARGUMENT, text, tensor=item.name))
            item.pristine = item.array.copy()  # a later call's modification is found afresh

    def _check_array(self, key: str, name: str, tensor: str, value: object, dims: dict[str, int]) -> None:
        if not isinstance(value, np.ndarray):
            wanted = expected_shape(tensor, self.layout, dims)
            raise ContractError(
                f"{name} must be a numpy array of shape {wanted}; the implementation returned {_describe(value)}",
                tensor=key,
                kind=FindingKind.NOT_AN_ARRAY,
            )
        problem = shape_problem(name, tensor, value.shape, self.layout, dims)
        if problem is not None:
            raise ContractError(problem, tensor=key, kind=FindingKind.SHAPE, shape=tuple(value.shape))

    def _user_error(self, role: str, function: str, exc: BaseException) -> UserCodeError:
        if isinstance(exc, ForeignException):
            return UserCodeError.from_parts(role, function, exc.type_name, exc.message, exc.frame, exc.lineage)
        return UserCodeError(role, function, exc, innermost_frame(exc.__traceback__, self.impl.roots))


class PointRecorder(Protocol):
    """What ``UserLayer.forward`` offers every call's point and output to (``x, w, b`` and ``out`` in NHWC;
    the recorder copies what it keeps: the caller may change the arrays afterwards)."""

    def offer(self, x: np.ndarray, w: np.ndarray, b: np.ndarray, out: np.ndarray) -> None: ...

    def take(self) -> int | None: ...  # ``offer`` in two steps: count the call, and where to keep it (or None)

    def keep(self, slot: int, x: np.ndarray, w: np.ndarray, b: np.ndarray, out: np.ndarray) -> None: ...


def describe(value: object) -> str:
    """How messages name a value a user's function returned: ``an array of shape (2, 3)``, ``a tuple of 2 (…)``."""
    return _describe(value)


def _describe(value: object) -> str:
    if isinstance(value, Foreign):
        return value.description
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    if isinstance(value, tuple | list):
        inner = ", ".join(_describe(v) for v in value[:4]) + (", …" if len(value) > 4 else "")
        return f"a {type(value).__name__} of {len(value)} ({inner})"
    if value is None:
        return "None"
    return f"a {type(value).__module__}.{type(value).__qualname__}".replace("builtins.", "")
