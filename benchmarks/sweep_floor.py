"""Where a sweep's checks of the built-in layer spend their CPU: the layer's own calls, the reference, the rest.

    python benchmarks/sweep_floor.py SWEEP.yaml [--step 3] [--root TREE]

Runs every ``--step``-th check of ``SWEEP.yaml`` one after another in this process (run it with one BLAS
thread, ``OPENBLAS_NUM_THREADS=1``, as each ``--jobs`` worker runs them) from the source tree ``--root`` (this
checkout by default; another tree, e.g. one extracted by ``git archive``, to measure an older engine), after a few
warm-up checks, and prints one line of JSON: the checks' CPU seconds per check, and of those the seconds inside

- the built-in layer's calls: ``MatrixConvLayer.forward``, ``backward``, ``output`` and ``outputs``, whichever
  the tree has (a call made inside another is counted once): the forward passes a check's estimates are made of
  and the calls of its contract run, which every check makes;
- the reference convolution (``reference.convolve``: the forward verdict's reference and the rounding model's
  magnitude ``Σ|x|·|w| + |b|``).

The first two together are the most a faster engine could not remove: a check that did nothing else would cost
them alone. Each is timed with ``time.thread_time`` around the call (about a microsecond each, a few dozen calls a
check).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

WARM_CHECKS = 4  # checks run before timing: imports, buffers and BLAS's first calls


class Stopwatch:
    """CPU seconds spent inside the wrapped functions, per kind; a call inside another wrapped call counts once."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._depth = threading.local()

    def wrap(self, kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        self.seconds.setdefault(kind, 0.0)

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self._depth, "value", 0)
            if depth:
                return fn(*args, **kwargs)
            self._depth.value = 1
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[kind] += time.thread_time() - start
                self._depth.value = 0

        return timed

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)


@contextmanager
def watching(layer_class: type, reference_module: Any) -> Iterator[Stopwatch]:
    """Time the built-in layer's calls (``layer_class``'s ``forward``, ``backward``, ``output``, ``outputs``,
    whichever it defines: ``"layer"``) and ``reference_module.convolve`` (``"reference"``) inside the block."""
    watch = Stopwatch()
    patched = [
        (layer_class, name) for name in ("forward", "backward", "output", "outputs") if name in vars(layer_class)
    ]
    patched.append((reference_module, "convolve"))
    originals = [getattr(owner, name) for owner, name in patched]
    for (owner, name), original in zip(patched, originals, strict=True):
        setattr(owner, name, watch.wrap("reference" if name == "convolve" else "layer", original))
    try:
        yield watch
    finally:
        for (owner, name), original in zip(patched, originals, strict=True):
            setattr(owner, name, original)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--step", type=int, default=3, help="every step-th check of the sweep (3)")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args()
    sys.path.insert(0, str(args.root))
    from convcheck import reference
    from convcheck.checker import run_check
    from convcheck.config import load_file
    from convcheck.layer import MatrixConvLayer

    specs = load_file(args.sweep).specs[:: args.step]
    with watching(MatrixConvLayer, reference) as watch:
        for spec in specs[:WARM_CHECKS]:
            run_check(spec)
        watch.reset()
        start = time.process_time()
        for spec in specs:
            run_check(spec)
        total = time.process_time() - start
    count = len(specs)
    print(json.dumps({"checks": count, "cpu": total / count, **{k: v / count for k, v in watch.seconds.items()}}))


if __name__ == "__main__":
    main()
