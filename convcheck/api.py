"""The Python API for test suites: check a layer given as two functions, and assert on the result.

    def test_my_conv_backward():
        convcheck.assert_gradients_ok(my_forward, my_backward, filter_size=3, stride=2, padding=1)

``check`` returns the ``CheckResult``; ``assert_gradients_ok`` raises ``AssertionError`` carrying the same table
and failure panel the command prints.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convcheck.checker import run_check
from convcheck.data import CheckData
from convcheck.results import CheckResult
from convcheck.spec import Activation, CheckSpec, ConvShape, DType, ImplRef, Layout, Method, Signature

if TYPE_CHECKING:
    from convcheck.user.adapter import LoadedImpl


def check_layer(spec: CheckSpec, data: CheckData | None = None) -> CheckResult:
    """Check the layer ``spec`` names (``spec.impl``; None: convcheck's built-in matrix layer).

    A torch or JAX layer runs in its own process, as ``convcheck run`` runs it (this process never imports the
    framework); ``data`` must then be None (the check draws its seeded point there). Other layers run here.
    """
    if spec.impl is not None and spec.impl.framework is not None and data is None:
        from convcheck.isolation.check import isolated_check

        return isolated_check(spec)
    return run_check(spec, data=data)


def check(
    forward: Callable[..., Any],
    backward: Callable[..., Any],
    *,
    filter_size: int = 3,
    stride: int = 1,
    padding: int = 0,
    batch: int = 2,
    in_height: int = 7,
    in_width: int = 8,
    in_depth: int = 3,
    out_depth: int = 4,
    activation: Activation | str = Activation.RELU,
    layout: Layout | str = Layout.NHWC,
    signature: Signature | str = Signature.CONVCHECK,
    dtype: DType | str = DType.FLOAT64,
    method: Method | str = Method.AUTO,
    seed: int = 0,
    eps: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    name: str | None = None,
) -> CheckResult:
    """Check a user's ``forward``/``backward`` pair on one layer geometry.

    Args:
        forward: ``forward(x, w, b, stride, padding) -> (out, cache)`` (or ``forward(x, w, b, conv_param)`` with
            ``signature="cs231n"``); it must apply ``activation`` itself.
        backward: ``backward(dout, cache) -> (dx, dw, db)``.
        filter_size, stride, padding, batch, in_height, in_width, in_depth, out_depth: the geometry, named as
            in configs; the defaults make a small, fast layer.
        activation, layout, signature, dtype, method, seed, eps, rtol, atol: as in configs (None: derived).
    Returns:
        The ``CheckResult``; ``result.passed`` is the verdict.
    """
    from convcheck.user.adapter import UserLayer

    impl = _loaded(forward, backward, Signature(signature))
    ref = impl.ref
    spec = CheckSpec(
        name=name or f"{ref.forward}/{ref.backward}",
        shape=ConvShape(batch, in_height, in_width, in_depth, out_depth, filter_size, stride, padding),
        activation=Activation(activation),
        method=Method(method),
        dtype=DType(dtype),
        seed=seed,
        eps=eps,
        rtol=rtol,
        atol=atol,
        impl=ref,
        layout=Layout(layout),
    )
    problems = spec.shape.problems()
    if problems:
        raise ValueError("; ".join(problems))
    return run_check(spec, layer=UserLayer(impl, stride=stride, padding=padding, layout=spec.layout))


def _loaded(forward: Callable[..., Any], backward: Callable[..., Any], signature: Signature) -> LoadedImpl:
    """The two functions as if loaded from their module (named by it, its folder searched for imports)."""
    from convcheck.user.adapter import LoadedImpl

    module = inspect.getmodule(forward) or sys.modules[__name__]
    source = inspect.getsourcefile(forward) or "<unknown>"
    ref = ImplRef(
        module=getattr(module, "__name__", "<functions>"),
        forward=getattr(forward, "__name__", "forward"),
        backward=getattr(backward, "__name__", "backward"),
        signature=signature,
    )
    return LoadedImpl(forward, backward, ref, module, source, (Path(source).resolve().parent,))


def explain(result: CheckResult, width: int = 120) -> str:
    """The table row and, unless it passed, the failure panel, as plain text (what the command prints)."""
    from convcheck.render.panels import explain_text  # Rich, imported when there is something to explain

    return explain_text(result, width)


def assert_gradients_ok(forward: Callable[..., Any], backward: Callable[..., Any], **settings: Any) -> CheckResult:
    """``check(forward, backward, **settings)``, raising ``AssertionError`` with ``explain``'s text unless it
    passed. Returns the result when it passed."""
    result = check(forward, backward, **settings)
    if not result.passed:
        raise AssertionError("convcheck: the layer failed its check\n" + explain(result))
    return result
