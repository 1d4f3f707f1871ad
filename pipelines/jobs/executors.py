"""Where claimed jobs run: in the engine's thread, in a thread pool, or as Ray tasks.

Every executor runs the same ``run_claimed`` (heartbeat, worker function, outcome recorded by
compare-and-set). They differ in where, and in how a dead attempt is noticed:

- ``InlineExecutor``: in the caller's thread, one at a time (tests, the CLI's local runs).
- ``ThreadExecutor``: up to ``max_workers`` at once in this process.
- ``RayExecutor``: one Ray task per attempt (``max_retries=0``: retrying is the job engine's
  business, with backoff and a record of each attempt). A task whose worker process died
  (killed, out of memory) is rescued as soon as ``ray.wait`` reports it; had the engine died
  too, the heartbeat rescuer of any other engine finds the job later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Protocol

from dspex.errors import JobError
from dspex.store.engine import Store
from dspex.store.jobs import AttemptEnd, JobRecord, JobState, JobStore

from . import machine
from .registry import WorkerSpec
from .runner import Outcome, error_text, finish, run_claimed

__all__ = ["Executor", "ExecutorContext", "InlineExecutor", "RayExecutor", "ThreadExecutor"]

log = logging.getLogger("dspex.jobs")


@dataclass(frozen=True)
class ExecutorContext:
    """What the engine hands its executor."""

    store: Store
    clock: Callable[[], float]
    heartbeat_interval_s: float
    rng: Callable[[], float]


class Executor(Protocol):
    #: what the engine writes as the job's ``worker`` when this executor takes it
    label: str

    def bind(self, ctx: ExecutorContext) -> None: ...
    def free_slots(self) -> int: ...
    def submit(self, job: JobRecord, spec: WorkerSpec) -> None: ...
    def poll(self) -> list[Outcome]: ...
    def wait(self, timeout_s: float) -> None: ...
    def idle(self) -> bool: ...
    def cancel(self, job_id: str) -> bool: ...
    def shutdown(self) -> None: ...


class _Base:
    label = "local"
    _ctx: ExecutorContext | None = None

    def bind(self, ctx: ExecutorContext) -> None:
        self._ctx = ctx

    @property
    def ctx(self) -> ExecutorContext:
        if self._ctx is None:
            raise JobError("This executor is not bound to a job engine; pass it to JobEngine(executor=...).")
        return self._ctx

    def _run(self, job: JobRecord, spec: WorkerSpec) -> Outcome:
        c = self.ctx
        return run_claimed(c.store, job, spec, clock=c.clock, heartbeat_interval_s=c.heartbeat_interval_s, rng=c.rng)


class InlineExecutor(_Base):
    """Runs each job to its end inside ``submit``."""

    label = "inline"

    def __init__(self) -> None:
        self._done: list[Outcome] = []

    def free_slots(self) -> int:
        return 1

    def submit(self, job: JobRecord, spec: WorkerSpec) -> None:
        self._done.append(self._run(job, spec))

    def poll(self) -> list[Outcome]:
        out, self._done = self._done, []
        return out

    def wait(self, timeout_s: float) -> None:
        return None

    def idle(self) -> bool:
        return True

    def cancel(self, job_id: str) -> bool:
        return False

    def shutdown(self) -> None:
        return None


class ThreadExecutor(_Base):
    """Up to ``max_workers`` jobs at once, in threads of this process."""

    label = "thread"

    def __init__(self, max_workers: int = 4) -> None:
        if max_workers < 1:
            raise JobError(f"max_workers must be >= 1, got {max_workers}.")
        self.max_workers = max_workers
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="dspex-job")
        self._futures: dict[Future[Outcome], JobRecord] = {}
        self._lock = threading.Lock()

    def free_slots(self) -> int:
        with self._lock:
            return self.max_workers - len(self._futures)

    def submit(self, job: JobRecord, spec: WorkerSpec) -> None:
        fut = self._pool.submit(self._run, job, spec)
        with self._lock:
            self._futures[fut] = job

    def poll(self) -> list[Outcome]:
        out = []
        with self._lock:
            done = [f for f in self._futures if f.done()]
            jobs = {f: self._futures.pop(f) for f in done}
        for fut, job in jobs.items():
            try:
                out.append(fut.result())
            except Exception as exc:  # the store failed while recording: the rescuer will see it
                log.warning("job %s: recording its outcome failed: %s", job.id, error_text(exc))
        return out

    def wait(self, timeout_s: float) -> None:
        with self._lock:
            pending = list(self._futures)
        if pending:
            wait(pending, timeout=timeout_s, return_when=FIRST_COMPLETED)

    def idle(self) -> bool:
        with self._lock:
            return not self._futures

    def cancel(self, job_id: str) -> bool:
        return False  # a thread cannot be stopped; the worker sees ctx.should_stop()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


def _ray_attempt(store_url: str, job: JobRecord, spec: WorkerSpec, heartbeat_interval_s: float) -> dict[str, Any]:
    """The body of one attempt's Ray task (runs in a Ray worker)."""
    from dspex.store import open_store

    out = run_claimed(open_store(store_url), job, spec, heartbeat_interval_s=heartbeat_interval_s)
    return {"state": out.state.value, "recorded": out.recorded, "error": out.error}


class RayExecutor(_Base):
    """One Ray task per attempt, at most ``max_in_flight`` at once.

    The task opens the store by URL (the workers must reach the same database: an SQLite file
    on this machine, or PostgreSQL), runs the attempt and records its outcome itself.
    """

    label = "ray"

    def __init__(self, max_in_flight: int = 8, *, store_url: str | None = None) -> None:
        if max_in_flight < 1:
            raise JobError(f"max_in_flight must be >= 1, got {max_in_flight}.")
        self.max_in_flight = max_in_flight
        self.store_url = store_url
        self._inflight: dict[Any, tuple[JobRecord, WorkerSpec, float]] = {}
        self._timed_out: set[str] = set()
        self._remote: Any = None

    def _task(self) -> Any:
        if self._remote is None:
            import ray

            if not ray.is_initialized():
                raise JobError(
                    "RayExecutor needs this process connected to Ray: call dspex.cluster.init() "
                    "(or ray.init(address=...)) first, or use ThreadExecutor / InlineExecutor."
                )
            self._remote = ray.remote(_ray_attempt)
        return self._remote

    def _url(self) -> str:
        if self.store_url is not None:
            return self.store_url
        return self.ctx.store.url.render_as_string(hide_password=False)

    def free_slots(self) -> int:
        return self.max_in_flight - len(self._inflight)

    def submit(self, job: JobRecord, spec: WorkerSpec) -> None:
        ref = (
            self._task()
            .options(num_cpus=spec.num_cpus, max_retries=0, name=f"dspex-job:{job.kind}:{job.id}")
            .remote(self._url(), job, spec, self.ctx.heartbeat_interval_s)
        )
        self._inflight[ref] = (job, spec, self.ctx.clock())
        try:
            JobStore(self.ctx.store).set_ray_task_id(job.id, attempt=job.attempt, ray_task_id=ref.task_id().hex())
        except Exception as exc:  # bookkeeping only; the attempt runs regardless
            log.warning("job %s: could not record its Ray task id: %s", job.id, error_text(exc))

    def poll(self) -> list[Outcome]:
        if not self._inflight:
            return []
        import ray

        now = self.ctx.clock()
        for ref, (job, spec, started) in list(self._inflight.items()):
            # the task's own heartbeat thread fails the attempt at its timeout; a task stuck in
            # C code never returns, so the engine kills it a heartbeat later
            if spec.timeout_s is not None and now - started > spec.timeout_s + 2 * self.ctx.heartbeat_interval_s:
                if job.id not in self._timed_out:
                    self._timed_out.add(job.id)
                    ray.cancel(ref, force=True)
        ready, _ = ray.wait(list(self._inflight), num_returns=len(self._inflight), timeout=0)
        out = []
        for ref in ready:
            job, spec, _ = self._inflight.pop(ref)
            try:
                doc = ray.get(ref)
                out.append(Outcome(job=job, state=JobState(doc["state"]), recorded=bool(doc["recorded"]), error=doc["error"]))
            except Exception as exc:
                out.append(self._task_died(job, spec, exc))
            finally:
                self._timed_out.discard(job.id)
        return out

    def _task_died(self, job: JobRecord, spec: WorkerSpec, exc: BaseException) -> Outcome:
        """The task ended without recording an outcome: its worker died, or it was killed."""
        jobs = JobStore(self.ctx.store)
        now = self.ctx.clock()
        if job.id in self._timed_out:
            text = f"TimeoutError: the attempt ran past the {spec.timeout_s} s timeout and its Ray task was killed"
            end = AttemptEnd("error", error_type="TimeoutError", error=text)
            delay = machine.backoff_s(job.attempt, rng=self.ctx.rng)
            rec = finish(jobs, job, lambda r: machine.fail(r, now, text, backoff=delay), now, end)
        else:
            text = f"WorkerLost: the Ray task of attempt {job.attempt} died ({error_text(exc).splitlines()[0][:300]})"
            end = AttemptEnd("rescued", error_type="WorkerLost", error=text)
            rec = finish(jobs, job, lambda r: machine.rescue(r, now, text), now, end)
        if rec is None:  # already cancelled or moved on: nothing to do
            return Outcome(job=job, state=job.state, recorded=False, error=text)
        return Outcome(job=rec, state=rec.state, recorded=True, error=text)

    def wait(self, timeout_s: float) -> None:
        if not self._inflight:
            return
        import ray

        ray.wait(list(self._inflight), num_returns=1, timeout=timeout_s)

    def idle(self) -> bool:
        return not self._inflight

    def cancel(self, job_id: str) -> bool:
        import ray

        for ref, (job, _, _) in self._inflight.items():
            if job.id == job_id:
                ray.cancel(ref, force=True)
                return True
        return False

    def shutdown(self) -> None:
        if not self._inflight:
            return
        import ray

        for ref in list(self._inflight):
            ray.cancel(ref, force=True)
        deadline = time.monotonic() + 10
        while self._inflight and time.monotonic() < deadline:
            self.poll()
            self.wait(0.5)
