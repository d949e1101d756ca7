"""Where an isolated check's CPU goes, by process: the judging one, the fork server, the checks' processes.

Usage (from the root of the checkout to measure; run it from each of two checkouts in turn to compare them):

    PYTHONPATH=$PWD python benchmarks/isolation_split.py [--rounds 2]

Checks 36 small user layers (``examples/im2col_nhwc.py``, ``method: full``) isolated, then in-process, in one
process, and prints per check: the CPU of this (judging) process, of the fork server, and of the checks' processes
(read from ``/proc/<fork server>/stat``: a child's CPU is added to its parent's once reaped, at the end of each
check), the in-process check's CPU, and the mean number of requests to a check's process. Linux only.
"""

from __future__ import annotations

import argparse
import os
import resource
from pathlib import Path

from convcheck.checker import run_check
from convcheck.config import load_text
from convcheck.isolation import forkserver, session
from convcheck.isolation.check import isolated_check

SWEEP = """\
defaults: {method: full, impl: im2col_nhwc.py}
checks:
  - {name: a, batch: [2, 4], in_height: 12, in_width: 16, in_depth: [2, 4, 6], out_depth: 6, filter_size: [1, 3, 5],
     stride: [1, 2], padding: 1, activation: relu, seed: 0}
"""


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_cpu() -> tuple[float, float]:
    """CPU seconds of the fork server itself, and of its reaped children."""
    assert forkserver._SERVER is not None  # noqa: SLF001 - a benchmark reads the server's pid
    fields = Path(f"/proc/{forkserver._SERVER.pid}/stat").read_text().rsplit(")", 1)[1].split()  # noqa: SLF001
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    specs = load_text(SWEEP, "sweep.yaml", base_dir=Path.cwd() / "examples").specs
    exchanges: list[int] = []
    close = session.Session.close

    def counted(self: session.Session) -> None:
        exchanges.append(self.exchanges)
        close(self)

    session.Session.close = counted  # type: ignore[method-assign]
    isolated_check(specs[0])
    run_check(specs[0])
    n = len(specs)
    for _ in range(args.rounds):
        exchanges.clear()
        server_before, start = server_cpu(), own_cpu()
        for spec in specs:
            isolated_check(spec)
        judge, server_after = (own_cpu() - start) / n * 1e3, server_cpu()
        start = own_cpu()
        for spec in specs:
            run_check(spec)
        unisolated = (own_cpu() - start) / n * 1e3
        server = (server_after[0] - server_before[0]) / n * 1e3
        children = (server_after[1] - server_before[1]) / n * 1e3
        total = judge + server + children
        print(
            f"isolated: judge {judge:.1f}, fork server {server:.1f}, checks' processes {children:.1f}, together "
            f"{total:.1f} ms CPU per check ({sum(exchanges) / len(exchanges):.1f} requests); in-process "
            f"{unisolated:.1f}; load {os.getloadavg()[0]:.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
