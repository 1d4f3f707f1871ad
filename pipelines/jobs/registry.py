"""Job kinds: ``register_worker(kind, fn)`` and what a worker function is given.

A worker is a plain function ``fn(args: dict, ctx: JobContext) -> dict | None``. It must be
idempotent: a job runs at least once, and again after its worker died mid-run (the seed's
Oban has the same contract). What it returns is stored as the job's ``result`` (JSON). To stop
without retries (bad args, something no retry can fix) raise ``JobError(..., discard=True)``;
any other exception fails the attempt and the job is retried with backoff.

The built-in kinds (the seed's workers: ``optimize``, ``evaluate``, ``health_check``,
``experiment``, ``rollout_tick``) are registered by ``dspex.pipelines.jobs.workers`` the first
time a kind is looked up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from dspex.errors import JobError, NotFound
from dspex.store.engine import Store
from dspex.store.jobs import JobRecord

__all__ = [
    "JobContext",
    "WorkerFn",
    "WorkerSpec",
    "get_worker",
    "list_workers",
    "register_worker",
    "unregister_worker",
]


@dataclass
class JobContext:
    """What a running job can see: its record (args, attempt, ...), the store, the clock, and
    whether it should stop (cancelled, timed out, or rescued away from this worker)."""

    job: JobRecord
    store: Store
    clock: Callable[[], float]
    stop_event: threading.Event = field(default_factory=threading.Event)

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def attempt(self) -> int:
        return self.job.attempt

    def should_stop(self) -> bool:
        """True once the job was cancelled, timed out or handed to another worker: long
        workers check it between steps and return early."""
        return self.stop_event.is_set()


class WorkerFn(Protocol):
    def __call__(self, args: dict[str, Any], ctx: JobContext) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class WorkerSpec:
    """A job kind: its function and defaults for the jobs of that kind.

    ``timeout_s``: an attempt running longer fails (and its Ray task is cancelled);
    ``unique_period_s``: equal (kind, args) jobs inserted within it are one job;
    ``num_cpus``: Ray CPUs reserved for the attempt's task (LM work waits on I/O: a fraction).
    """

    kind: str
    fn: WorkerFn
    queue: str = "default"
    max_attempts: int = 20
    priority: int = 0
    timeout_s: float | None = None
    unique_period_s: float | None = None
    num_cpus: float = 0.25
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "function": f"{getattr(self.fn, '__module__', '?')}:{getattr(self.fn, '__qualname__', repr(self.fn))}",
            "queue": self.queue,
            "max_attempts": self.max_attempts,
            "priority": self.priority,
            "timeout_s": self.timeout_s,
            "unique_period_s": self.unique_period_s,
            "num_cpus": self.num_cpus,
            "description": self.description,
        }


_lock = threading.Lock()
_workers: dict[str, WorkerSpec] = {}
_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    from dspex.pipelines.jobs import workers

    workers.register_builtins()


def register_worker(
    kind: str,
    fn: WorkerFn | Callable[..., Any],
    *,
    replace: bool = False,
    queue: str = "default",
    max_attempts: int = 20,
    priority: int = 0,
    timeout_s: float | None = None,
    unique_period_s: float | None = None,
    num_cpus: float = 0.25,
    description: str = "",
) -> WorkerSpec:
    """Register ``fn`` as the worker of jobs of ``kind`` (``replace=True`` to swap one)."""
    if not isinstance(kind, str) or not kind or len(kind) > 100 or not kind.replace("_", "").replace(".", "").isalnum():
        raise JobError(f"A job kind is 1-100 letters, digits, '_' or '.', got {kind!r}.")
    if not callable(fn):
        raise JobError(f"The worker of {kind!r} must be a function fn(args, ctx), got {fn!r}.")
    if max_attempts < 1:
        raise JobError(f"max_attempts of {kind!r} must be >= 1, got {max_attempts}.")
    if timeout_s is not None and not timeout_s > 0:
        raise JobError(f"timeout_s of {kind!r} must be > 0 or None, got {timeout_s}.")
    if not num_cpus > 0:
        raise JobError(f"num_cpus of {kind!r} must be > 0, got {num_cpus}.")
    spec = WorkerSpec(
        kind=kind,
        fn=fn,
        queue=queue,
        max_attempts=max_attempts,
        priority=priority,
        timeout_s=timeout_s,
        unique_period_s=unique_period_s,
        num_cpus=num_cpus,
        description=description or (getattr(fn, "__doc__", None) or "").strip().split("\n")[0],
    )
    if kind not in _workers and not replace:
        _load_builtins()  # a user kind named like a built-in must say replace=True
    with _lock:
        if kind in _workers and not replace:
            raise JobError(f"A worker for job kind {kind!r} is already registered; pass replace=True to replace it.")
        _workers[kind] = spec
    return spec


def unregister_worker(kind: str) -> None:
    with _lock:
        _workers.pop(kind, None)


def get_worker(kind: str) -> WorkerSpec:
    _load_builtins()
    with _lock:
        spec = _workers.get(kind)
        kinds = sorted(_workers)
    if spec is None:
        raise NotFound(f"No worker for job kind {kind!r}; the kinds are {kinds}.", kind="job_kind")
    return spec


def list_workers() -> list[WorkerSpec]:
    _load_builtins()
    with _lock:
        return [_workers[k] for k in sorted(_workers)]
