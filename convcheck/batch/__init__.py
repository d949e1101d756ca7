"""Running many checks: locally in worker processes or on a Dask cluster, with the same results either way.

- ``outcome``: what both executors share: the ``BatchOutcome``, the wording of
  timeouts and crashes, and ``Tally`` (results as they come back, and the fail-fast rule).
- ``guard``: one check under the guard (``run_one``): exceptions become error rows, timeouts are enforced.
- ``local``: ``run_batch``, in this process or in a pool of worker processes (``--jobs``).
- ``dask``: ``run_distributed``, one Dask task per check (``--scheduler``).

A new executor is one module beside ``local`` and ``dask``: run each check through ``guard.run_one`` where it
runs, and feed what comes back to a ``Tally``; its ``outcome()`` is the ``BatchOutcome`` to return.

Nothing is imported here, so that importing one executor does not import the others. Error rows themselves are
built by ``convcheck.results.error_result`` (``checker`` builds them too, and sits below this package).
"""
