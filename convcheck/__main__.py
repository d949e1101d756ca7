"""``python -m convcheck`` runs the command line."""

from convcheck.cli import entry

entry()
