"""Durable jobs: the seed's Oban on the store, executed in-process or as Ray tasks.

    from dspex.pipelines.jobs import JobEngine, RayExecutor, register_worker

    register_worker("reindex", reindex, max_attempts=5, unique_period_s=600)
    engine = JobEngine(executor=RayExecutor())
    engine.enqueue("reindex", {"index": "docs"})
    engine.schedule("health", "health_check", every_s=300)
    engine.run_forever(stop_event)

* ``machine``    the job state machine as pure functions (and the backoff: 15 + 2**attempt s, jitter)
* ``registry``   job kinds: ``register_worker(kind, fn)``, ``JobContext``
* ``runner``     one attempt: heartbeat, worker function, outcome by compare-and-set
* ``executors``  inline, threads, Ray tasks
* ``engine``     ``JobEngine``: stage, rescue, periodic schedules, prune, claim and run
* ``workers``    the built-in kinds: optimize, evaluate, health_check, experiment, rollout_tick
* ``inputs``     how job args name programs, datasets, models and metrics

The records live in the store (``dspex.store.jobs``): states scheduled / available /
executing / retryable / completed / discarded / cancelled, attempts with their errors.
"""

from dspex.store.jobs import (
    AttemptEnd,
    Inserted,
    JobAttempt,
    JobRecord,
    JobState,
    JobStore,
    NewJob,
    Schedule,
)

from .engine import JobEngine, TickReport
from .executors import Executor, InlineExecutor, RayExecutor, ThreadExecutor
from .machine import DEFAULT_MAX_ATTEMPTS, backoff_s
from .registry import (
    JobContext,
    WorkerSpec,
    get_worker,
    list_workers,
    register_worker,
    unregister_worker,
)
from .runner import Outcome, run_claimed
from .workers import DEFAULT_ROLLOUT_TICKER, RolloutTicker, set_rollout_ticker

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_ROLLOUT_TICKER",
    "AttemptEnd",
    "Executor",
    "InlineExecutor",
    "Inserted",
    "JobAttempt",
    "JobContext",
    "JobEngine",
    "JobRecord",
    "JobState",
    "JobStore",
    "NewJob",
    "Outcome",
    "RayExecutor",
    "RolloutTicker",
    "Schedule",
    "ThreadExecutor",
    "TickReport",
    "WorkerSpec",
    "backoff_s",
    "get_worker",
    "list_workers",
    "register_worker",
    "run_claimed",
    "set_rollout_ticker",
    "unregister_worker",
]
