"""Rendering: every way convcheck shows results, one module per output format. Rich lives here and in ``cli.py``
only (a ruff rule enforces it).

Text documents, written to files (or stdout), all behind one interface, ``base.Document``:
``render(results, run) -> str`` with ``run`` a ``base.Run`` (version, interrupted, suite name).

- ``json``: the ``--json`` document (plain dicts through the standard library's ``json``).
- ``junit``: the ``--junit`` XML.
- ``html``: the ``--html`` report, one self-contained page (its pieces in ``html_parts``: escaped elements and
  the SVG heatmaps; its style sheet and script in ``html_assets``).
- ``annotations``: GitHub Actions ``::error`` lines for failed checks.
- ``documents``: the table of the formats above that go to files (``DOCUMENTS``) and ``write_documents``.

The terminal (Rich renderables for a console):

- ``table``: the results table, laid out for the width it gets (80 columns first: ``layout_for``).
- ``panels``: a panel per check worth explaining, the digest and summary line (``print_results``),
  ``explain_text``.
- ``heatmap``: where the errors are, as shade characters; ``plot``: the same as PNG files (matplotlib).
- ``selftest``: the table of ``convcheck selftest``.

Shared pieces: ``base`` (indices in the user's layout, counts, the one-line failure message), ``grids`` (the
numpy grids the heatmaps draw), ``files`` (``write_atomic``).

Adding a format is one module: write ``render/NAME.py`` with ``render(results, run) -> str`` built from ``base``
and ``grids``; add it to ``documents.DOCUMENTS`` and give ``cli.run`` an option naming its path.
Findings, hints and notes are shown as their ``str()``; never parse them.
"""
