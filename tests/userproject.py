"""A user's repository in miniature, shared by the CI tests: a correct layer, a buggy one and a config of both.

The correct layer is the im2col example; the buggy one averages the bias gradient instead of summing it, so
only db is wrong. The layers are tiny and every entry is checked: each check takes a few milliseconds.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORRECT = (REPO / "examples" / "im2col_nhwc.py").read_text(encoding="utf-8")
BUGGY = CORRECT.replace("db = dz.sum(axis=0)", "db = dz.mean(axis=0)")

CONFIG = """\
defaults: {batch: 1, in_height: 4, in_width: 5, in_depth: 2, out_depth: 2, filter_size: 3, method: full}
checks:
  - name: right
    impl: layer.py
    stride: [1, 2]
    padding: [0, 1]
  - name: wrong
    impl: buggy.py
    padding: 1
"""
GREEN = tuple(f"right[stride={s},padding={p}]" for s in (1, 2) for p in (0, 1))
RED = "wrong"
RED_LINE = 7  # the line of the wrong check in CONFIG


def write_project(folder: Path, config: str = CONFIG) -> Path:
    """Write ``layer.py``, ``buggy.py`` and ``convcheck.yaml`` (``config``) into ``folder``; returns the config."""
    assert BUGGY != CORRECT, "the example changed: the buggy layer is no longer buggy"
    (folder / "layer.py").write_text(CORRECT, encoding="utf-8")
    (folder / "buggy.py").write_text(BUGGY, encoding="utf-8")
    path = folder / "convcheck.yaml"
    path.write_text(config, encoding="utf-8")
    return path
