"""A torch layer: convcheck's full check vs torch's own ``gradcheck``, in one run.

    python benchmarks/frameworks.py                 # alone (about 2 minutes on 2 quiet cores)
    python benchmarks/run.py --only framework       # the same, as one of run.py's benchmarks

The layer is the seed layer's geometry (8×32×48×16 → 32, k3 s1 p1, ReLU, float64) as a
``torch.autograd.Function`` with a hand-written backward (``Unfold2d`` in ``tests/fixtures/frameworks/
torch_layers.py``: unfold, one matrix product, fold), and the same data for every checker:

- convcheck's full check (every entry), run as the command runs it: the layer in a fresh process, the run's
  first torch check, so torch's import is counted (it is part of what a user waits for), while the verdict is
  computed in this one, and the built-in layer's full check right after it (a calibration of the machine's
  speed at that moment);
- the small checks of the planted bugs below, each in a fresh process that starts with torch imported (the
  framework's fork server), against the import itself in a fresh process;
- torch ``gradcheck(fast_mode=True)`` (one random projection per input), warm;
- slow ``gradcheck``'s cost, estimated: it needs two forwards per input entry and one backward per output entry
  (two dense float64 Jacobians), each kind of pass timed on a sample done as gradcheck does them;
- which planted torch bugs (the same file) each checker catches, on a small layer.

convcheck's checks run first, before this process imports torch: a process that has run torch's thread pools
should not fork (the checks' processes are forked from this one).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from rows import SEED_SHAPE, Row, print_rows, seed_data  # noqa: E402 - after the path set-up above

from convcheck.checker import run_check  # noqa: E402
from convcheck.isolation.remote import remote_layer  # noqa: E402
from convcheck.spec import CheckSpec, ConvShape, Framework, ImplRef, Layout, Method  # noqa: E402

__all__ = ["bench_framework"]

TORCH_LAYER = HERE.parent / "tests" / "fixtures" / "frameworks" / "torch_layers.py"
SMALL = ConvShape(2, 7, 6, 3, 4, 3, 1, 1)
# The correct layer first, then the planted bugs (tests/fixtures/frameworks/torch_layers.py).
ZOO = ("Unfold2d", "BugNoMask", "BugDwOrder", "BugDbFirstItem", "BugFloat32", "BugDbKeepdims", "BugMaskInPlace",
       "BugAccumulates", "BugNaN", "BugInputInPlace")  # fmt: skip


def _spec(name: str, shape: ConvShape) -> CheckSpec:
    impl = ImplRef(module=str(TORCH_LAYER), framework=Framework.TORCH, function=name)
    return CheckSpec(name, shape, method=Method.FULL, impl=impl, layout=Layout.NCHW, timeout=3600.0)


def _convcheck(spec: CheckSpec, data: Any = None) -> tuple[Any, float, float]:
    """The check as the command runs it; its wall time and this process's CPU time plus the child's."""
    start, cpu = time.perf_counter(), time.process_time()
    with remote_layer(spec, None) as layer:
        result = run_check(spec, layer=layer, data=data)
        child = layer.child_seconds()
    return result, time.perf_counter() - start, time.process_time() - cpu + child


def _clean(result: Any) -> bool:
    """Whether a check let the layer through: it passed with no contract finding (a warning such as an argument
    modified in place is a finding: it fails under ``--strict``)."""
    return bool(result.passed and not result.contract)


def bench_framework(rounds: int = 1) -> list[Row]:
    """The figures of the module docstring (``rounds`` is accepted for ``run.py``; one run is made)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return [Row("framework", "skipped: torch is not installed (pip install 'convcheck[torch]')", 0, "")]
    spec, data = seed_data()
    seed = _spec("Unfold2d", SEED_SHAPE)
    check, wall, cpu = _convcheck(seed, data)
    start, builtin_cpu = time.perf_counter(), time.process_time()
    builtin = run_check(spec, data=data)  # the built-in layer at the same moment: how loaded the machine is
    builtin_wall, builtin_cpu = time.perf_counter() - start, time.process_time() - builtin_cpu
    zoo, zoo_walls = {}, []
    for name in ZOO:  # after the seed check: torch is imported in its fork server already
        result, zoo_wall, _ = _convcheck(_spec(name, SMALL))
        zoo[name] = _clean(result)
        zoo_walls.append(zoo_wall)
    import_wall = _import_seconds("torch")

    import torch  # only now: see the module docstring

    module = _torch_module()
    fn = module.Unfold2d
    threads = torch.get_num_threads()
    x, w, b = _torch_inputs(torch, data)
    start = time.perf_counter()
    fast = torch.autograd.gradcheck(lambda x, w, b: fn.apply(x, w, b, 1, 1), (x, w, b), fast_mode=True)
    fast_wall = time.perf_counter() - start
    slow = _slow_gradcheck(torch, fn, (x, w, b))
    checked = sum(g.checked for g in check.gradients)
    total = sum(g.total for g in check.gradients)
    return [
        Row("framework", "convcheck full check, seed layer as torch Function", wall, "s",
            note=f"status {check.status.value}; {checked:,} of {total:,} entries; {check.forward_passes} forward "
            f"passes; {cpu:.1f} s CPU (both processes); torch imported in the layer's process"),
        Row("framework", "calibration: the built-in layer's full check, same data", builtin_wall, "s",
            note=f"status {builtin.status.value}; {builtin.forward_passes} passes; {builtin_cpu:.1f} s CPU"),
        Row("framework", f"a small torch check after the first ({SMALL.batch}×{SMALL.in_height}×{SMALL.in_width}×"
            f"{SMALL.in_depth} → {SMALL.out_depth}), mean of {len(ZOO)}", float(np.mean(zoo_walls)), "s",
            note=f"fastest {min(zoo_walls):.2f} s; each in a fresh process forked with torch imported"),
        Row("framework", "python -c 'import torch' (what each check's process paid before)", import_wall, "s"),
        Row("framework", f"torch {torch.__version__} gradcheck(fast_mode=True)", fast_wall, "s",
            note=f"passed: {fast}; {threads} torch threads; one random projection per input"),
        Row("framework", "slow gradcheck, estimated from a sample", slow["seconds"] / 3600, "h",
            note=f"{slow['forwards']:,} forwards × {1e3 * slow['forward']:.1f} ms + {slow['backwards']:,} "
            f"backwards × {1e3 * slow['backward']:.1f} ms; two dense Jacobians of {slow['jacobian_gb']:.0f} GB each"),
        Row("framework", "slow gradcheck / convcheck", slow["seconds"] / wall, "×"),
        *_zoo_rows(torch, module, zoo),
    ]  # fmt: skip


def _import_seconds(module: str, rounds: int = 3) -> float:
    """The best wall time of ``python -c 'import module'`` in a fresh process, of ``rounds``."""
    import subprocess

    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
        best = min(best, time.perf_counter() - start)
    return best


def _torch_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_torch_layers", TORCH_LAYER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torch_inputs(torch: Any, data: Any) -> tuple[Any, ...]:
    """The check's own x, w, b in torch's layout (NCHW, (C_out, C_in, kh, kw))."""
    x = torch.from_numpy(np.ascontiguousarray(data.x.transpose(0, 3, 1, 2))).requires_grad_()
    w = torch.from_numpy(np.ascontiguousarray(data.w.transpose(3, 2, 0, 1))).requires_grad_()
    b = torch.from_numpy(data.b.copy()).requires_grad_()
    return x, w, b


def _zoo_rows(torch: Any, module: Any, convcheck: dict[str, bool]) -> list[Row]:
    """Which planted bugs each checker catches (an exception counts as caught; the correct layer must pass)."""
    verdicts: dict[str, dict[str, bool]] = {"convcheck": convcheck, "fast gradcheck": {}, "slow gradcheck": {}}
    generator = torch.Generator().manual_seed(0)
    sizes = ((SMALL.batch, SMALL.in_depth, SMALL.in_height, SMALL.in_width), (4, 3, 3, 3), (4,))
    inputs = [torch.randn(*size, dtype=torch.float64, generator=generator) for size in sizes]
    for name in ZOO:
        fn = getattr(module, name)
        for mode, fast in (("fast gradcheck", True), ("slow gradcheck", False)):
            leaves = [t.clone().requires_grad_() for t in inputs]
            try:
                ok = torch.autograd.gradcheck(
                    lambda x, w, b, fn=fn: fn.apply(x, w, b, 1, 1), leaves, fast_mode=fast, raise_exception=False
                )
            except Exception:  # noqa: BLE001 - torch refused the gradient: caught
                ok = False
            verdicts[mode][name] = bool(ok)
    rows = []
    for checker_name, found in verdicts.items():
        missed = [name for name in ZOO[1:] if found[name]]
        rows.append(
            Row("framework", f"planted torch bugs caught by {checker_name}", len(ZOO) - 1 - len(missed), "",
                note=f"of {len(ZOO) - 1}; correct layer {'passes' if found[ZOO[0]] else 'FAILS'}; "
                f"missed: {', '.join(missed) or 'none'}")
        )  # fmt: skip
    return rows


def _slow_gradcheck(torch: Any, fn: Any, inputs: tuple[Any, ...], sample: int = 20) -> dict[str, float]:
    """Slow gradcheck's cost: its numerical Jacobian takes two forwards per input entry (central differences,
    one entry perturbed in place at a time) and its analytical Jacobian one backward per output entry
    (``autograd.grad`` with a one-hot ``grad_outputs``); both Jacobians are dense float64. Each kind of pass is
    timed on ``sample`` of them, done as gradcheck does them."""
    x, w, b = inputs
    out = fn.apply(x, w, b, 1, 1)
    n_in = sum(t.numel() for t in inputs)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    with torch.no_grad():
        for flat in rng.integers(0, x.numel(), sample):
            entry = x.view(-1)
            entry[flat] += 1e-6
            fn.apply(x, w, b, 1, 1)
            entry[flat] -= 2e-6
            fn.apply(x, w, b, 1, 1)
            entry[flat] += 1e-6
    forward = (time.perf_counter() - start) / (2 * sample)
    start = time.perf_counter()
    for flat in rng.integers(0, out.numel(), sample):
        onehot = torch.zeros_like(out).view(-1)
        onehot[flat] = 1.0
        torch.autograd.grad(out, inputs, onehot.view_as(out), retain_graph=True)
    backward = (time.perf_counter() - start) / sample
    forwards, backwards = 2 * n_in, out.numel()
    return {
        "forward": forward,
        "backward": backward,
        "forwards": forwards,
        "backwards": backwards,
        "seconds": forwards * forward + backwards * backward,
        "jacobian_gb": n_in * out.numel() * 8 / 1e9,
    }


if __name__ == "__main__":
    print_rows(bench_framework())
