"""A pool of reused worker actors: the one place ``OptimizationWorker`` becomes a Ray actor.

Configured from measurement (notes/ray-measured.md): a new process per trial costs about a
second on this machine, so workers are started once and reused for every evaluation and
trial; they ask for a fraction of a CPU (``num_cpus_per_worker=0.5``) because their work is
waiting on LM calls, so 4 workers fit 2 cores. A worker that dies is replaced on next use.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from dspex import telemetry
from dspex.errors import ConfigurationError, OptimizerError
from dspex.telemetry import names

from .worker import OptimizationWorker

__all__ = ["WorkerPool", "actor_died", "unwrap_error"]


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is a dependency of dspex
        raise ConfigurationError("Distributed optimization needs Ray: pip install 'ray[tune]'.") from exc
    if not ray.is_initialized():
        raise ConfigurationError(
            "Ray is not initialized; call dspex.cluster.init() (or ray.init()) before using the Ray evaluator or trial runner."
        )
    return ray


_remote_lock = threading.Lock()
_remote_cls: Any = None


def _remote_worker_class() -> Any:
    # Made once per process: Ray exports a class definition per ray.remote call.
    global _remote_cls
    with _remote_lock:
        if _remote_cls is None:
            _remote_cls = _ray().remote(OptimizationWorker)
        return _remote_cls


class WorkerPool:
    """``num_workers`` reused ``OptimizationWorker`` actors.

    Args:
        num_workers: actors in the pool.
        num_cpus_per_worker: Ray CPUs each actor reserves (fractional: the work is I/O).
        concurrency_per_worker: calls an actor runs at once (threads; its LM calls share one
            asyncio loop per process).
        num_threads: examples in flight per call inside a worker.
        runtime_env: passed to the actors (the driver's ``DSPEX_HOME`` is added so every
            worker shares the LM disk cache).
    """

    def __init__(
        self,
        num_workers: int = 2,
        *,
        num_cpus_per_worker: float = 0.5,
        concurrency_per_worker: int = 4,
        num_threads: int = 32,
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        if num_workers < 1:
            raise OptimizerError(f"num_workers must be at least 1, got {num_workers}.")
        if num_cpus_per_worker < 0:
            raise OptimizerError(f"num_cpus_per_worker must be >= 0, got {num_cpus_per_worker}.")
        self.num_workers = num_workers
        self.num_cpus_per_worker = num_cpus_per_worker
        self.concurrency_per_worker = concurrency_per_worker
        self.num_threads = num_threads
        self.runtime_env = dict(runtime_env or {})
        self._actors: list[Any] = []
        self._lock = threading.Lock()

    def _start_one(self) -> Any:
        _ray()  # raises a clear error when Ray is not initialized
        home = os.environ.get("DSPEX_HOME")
        env = dict(self.runtime_env)
        env_vars = dict(env.get("env_vars", {}))
        if home:
            env_vars.setdefault("DSPEX_HOME", os.path.abspath(home))
        if env_vars:
            env["env_vars"] = env_vars
        return _remote_worker_class().options(
            num_cpus=self.num_cpus_per_worker,
            max_concurrency=self.concurrency_per_worker,
            runtime_env=env or None,
        ).remote(dspex_home=env_vars.get("DSPEX_HOME"), num_threads=self.num_threads)

    def actors(self) -> list[Any]:
        """The live actors, started on first use (and waited for, so timings exclude startup)."""
        with self._lock:
            if len(self._actors) < self.num_workers:
                t0 = time.perf_counter()
                new = [self._start_one() for _ in range(self.num_workers - len(self._actors))]
                _ray().get([a.ping.remote() for a in new])
                self._actors.extend(new)
                telemetry.emit(
                    names.DISTRIBUTED_COORDINATION,
                    {"duration_s": time.perf_counter() - t0, "workers": len(new)},
                    {"operation": "worker_start"},
                )
            return list(self._actors)

    def replace(self, actor: Any) -> Any:
        """Swap a dead actor for a new one; returns the new one."""
        with self._lock:
            try:
                i = self._actors.index(actor)
            except ValueError:
                return actor
            new = self._start_one()
            self._actors[i] = new
        telemetry.emit(names.ERROR_RECOVERY, {"attempt": 1}, {"component": "optimization_worker", "strategy": "restart", "error": "ActorDied"})
        return new

    def shutdown(self) -> None:
        with self._lock:
            actors, self._actors = self._actors, []
        if actors:
            ray = _ray()
            for a in actors:
                ray.kill(a)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("A WorkerPool holds live actors and cannot be pickled; create one on the driver.")


def unwrap_error(exc: BaseException) -> BaseException:
    """The exception a remote call raised, out of Ray's ``RayTaskError`` wrapper."""
    from ray.exceptions import RayTaskError

    if isinstance(exc, RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            return cause
    return exc


def actor_died(exc: BaseException) -> bool:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return isinstance(exc, ActorDiedError | ActorUnavailableError | RayActorError)
