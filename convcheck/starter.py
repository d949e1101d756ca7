"""What ``convcheck init`` writes: a starter config and the layer file it checks, wired together.

The layer is a correct, plainly written convolution + ReLU (a loop over output positions) in the layout asked
for, with its signature documented at the top; the config's ``impl:`` names it, so the first ``convcheck run``
checks the user's own file, not convcheck's built-in layer.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from convcheck.spec import Layout

__all__ = ["starter_files"]


def _template(name: str) -> str:
    return resources.files("convcheck").joinpath("templates").joinpath(name).read_text(encoding="utf-8")


def starter_files(config: Path, layout: Layout = Layout.NHWC, layer_name: str = "layers.py") -> dict[Path, str]:
    """The files to write: ``config`` and, next to it, ``layer_name`` (a path relative to the config's folder).

    Args:
        config: where the config goes (``convcheck.yaml`` by default).
        layout: the layout of the starter layer (``nhwc``: x ``(N, H, W, C_in)``; ``nchw``: ``(N, C_in, H, W)``).
        layer_name: the layer file's name, as the config's ``impl:`` writes it.
    Returns:
        ``{path: text}`` for the config and the layer file.
    """
    layer = config.parent / layer_name
    return {
        config: _template("convcheck.yaml.txt").format(layer=layer_name, layout=layout.value),
        layer: _template(f"layer_{layout.value}.py.txt"),
    }
