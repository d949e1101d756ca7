"""YAML configs → validated, expanded :class:`~convcheck.spec.CheckSpec` lists, and the JSON Schema of the format.

The config format is a contract with users (DESIGN.md, "Config (contract)"; reference in docs/config.md), so
loading is strict and explains itself: every problem becomes a :class:`ConfigError` naming the file, line,
column and field and saying what is allowed, and all problems of a file are reported at once.

The pipeline, one module per stage (:mod:`~convcheck.config.loader` runs them):

1. ``loader``: files and folders → text;
2. ``tree``: text → YAML values that keep their line and column (safe: only plain YAML is constructed);
3. ``document``: the top level → ``defaults:`` and the checks;
4. ``values``: each key of a check parsed by its kind → settings (one value, or the values a list sweeps);
5. ``expand``: settings → the cartesian product of the sweeps, each combination's geometry checked → specs;
   ``sanity`` adds warnings for valid values that make a check meaningless (a tolerance that passes a 2× error).

``paths`` reads files within bounds (size, what a path is) for stage 1.

``keys`` is the table every stage reads and ``schema`` turns into the JSON Schema; ``errors`` holds
:class:`ConfigError` and the wording helpers the stages share.

To add a config key, add one ``KeyInfo`` to ``CHECK_KEYS`` in ``convcheck/config/keys.py`` (with a field of
the same name on ``CheckSpec`` or ``ConvShape``, and its row in docs/config.md, which a test checks).
"""

from convcheck.config.errors import ConfigError, ConfigWarning
from convcheck.config.loader import ConfigLoad, load_configs, load_file, load_text

__all__ = ["ConfigError", "ConfigLoad", "ConfigWarning", "load_configs", "load_file", "load_text"]
