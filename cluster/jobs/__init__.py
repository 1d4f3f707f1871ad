"""``dspex.jobs``: entry points for ``ray job submit``, one module per job kind.

    ray job submit --submission-id <job id> --runtime-env-json '...' -- \
        python -m dspex.jobs.optimize --job-id <job id>

``dspex optimize --submit`` (``dspex.cluster.submit``) writes the job record, builds the
runtime environment (the dspex wheel in ``py_modules``) and submits exactly that. Each module
also creates the job itself from ``--args '{...}'``, so a job can be submitted by hand:

    python -m dspex.jobs.optimize --args '{"program": {"signature": "question -> answer"}, ...}'

Modules: ``optimize``, ``evaluate``, ``experiment``, ``health`` (health checks), and
``run`` (any kind, by job id). Exit codes: 0 completed, 1 failed for good (discarded or
cancelled), 2 bad usage, 3 internal error, 75 still retrying when ``--max-wait-s`` ran out
(the job stays in the store for a job engine to finish).
"""

from dspex.jobs._entry import EXIT_FAILED, EXIT_OK, EXIT_RETRYING, EXIT_USAGE, main

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_RETRYING", "EXIT_USAGE", "main"]
