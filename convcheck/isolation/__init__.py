"""Running a user's layer so that it cannot buy a verdict: its own process per check, verdicts outside it.

Threat model. The code under check is treated as hostile. It runs in a process forked, for one check alone, from a
clean convcheck process that never imported user code (the fork server of a ``--jobs`` or Dask worker,
``forkserver``); it holds no part of the verdict: the finite differences, tolerances, contract checks and
verdicts are computed in the worker from the raw arrays the child returns over a framed, per-check keyed channel
(``channel``), and its forward outputs are audited against the reference convolution at a seeded random sample of
the points it was called at (``convcheck.points``), not only where it was first inspected. So a layer can patch
convcheck's modules, write on its channel, keep state between calls, or end its process: each is at worst a
failed check or an error row of its own, and the next check starts from a fresh process. The child's address
space is limited to ``max_memory`` on top of what it maps at the start, and it maps the shared memory of its own
check only (``channel.Arena.forked_with``).

What a hostile layer running as the same user can still do is outside any Python process's reach to stop: signal
or kill other processes of that user (ending the run, never with a passing exit code), or read and write that
user's files. The workers are non-dumpable (``batch.guard.non_dumpable``), and so is the fork server, so an
unprivileged layer cannot read their memory or open their descriptors through ``/proc``; root can.
``--in-process`` gives all of this up on purpose (to run the layer under a debugger): convcheck then says that it
trusts the layer, and the run exits non-zero if its process ends before the summary (``supervise``).
"""
