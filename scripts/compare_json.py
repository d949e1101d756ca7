"""Compare the JSON of every bundled config between two versions of convcheck, timings masked.

    python scripts/compare_json.py REF [--other REF2]

runs ``convcheck run CONFIG --json`` for every file in ``configs/`` and ``examples/`` with the code at ``REF``
(checked out into a temporary git worktree) and with this working tree (or ``REF2``), then compares the two
outputs after masking what is measured rather than computed: ``seconds`` and the time estimate in ``auto``'s
note. Prints one line per config and exits 1 when any differs. A refactor that claims "behaviour unchanged"
must leave every line ``same``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMED_NOTE = re.compile(r"^auto chose ")


def masked(value: object) -> object:
    """``value`` with every ``seconds`` zeroed and ``auto``'s measured note reduced to its choice."""
    if isinstance(value, dict):
        return {k: 0 if k == "seconds" else masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    if isinstance(value, str) and TIMED_NOTE.match(value):
        return value.split(":")[0]
    return value


def run_all(tree: Path, out: Path) -> dict[str, object]:
    """Run every bundled config of ``ROOT`` with the package in ``tree``; return the masked JSON per config."""
    results = {}
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "120"}
    for config in sorted([*ROOT.glob("configs/*.yaml"), *ROOT.glob("examples/*.yaml")]):
        target = out / (config.parent.name + "_" + config.stem + ".json")
        subprocess.run(
            [sys.executable, "-m", "convcheck", "run", str(config), "--json", str(target), "--quiet"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            check=False,
        )
        key = str(config.relative_to(ROOT))
        results[key] = masked(json.loads(target.read_text())) if target.exists() else None
    return results


def checkout(ref: str, where: Path) -> Path:
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), ref], check=True, capture_output=True
    )
    return where


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ref", help="the version to compare with (a commit, branch or tag)")
    parser.add_argument("--other", help="compare with this version instead of the working tree")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        trees = [checkout(args.ref, base / "a")]
        trees.append(checkout(args.other, base / "b") if args.other else ROOT)
        try:
            (base / "out-a").mkdir()
            (base / "out-b").mkdir()
            before, after = run_all(trees[0], base / "out-a"), run_all(trees[1], base / "out-b")
        finally:
            for tree in trees:
                if tree != ROOT:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    differing = 0
    for key in before:
        same = before[key] is not None and before[key] == after.get(key)
        differing += not same
        print(f"{'same' if same else 'DIFFERS'}  {key}")
    return 1 if differing else 0


if __name__ == "__main__":
    raise SystemExit(main())
