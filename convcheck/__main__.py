"""``python -m convcheck`` runs the command line."""

from convcheck.cli import app

app(prog_name="convcheck")
