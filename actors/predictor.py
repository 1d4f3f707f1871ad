"""``Predictor``: hosts one version of one program and runs its calls (the seed's predict
engine, Stage 2 §4.1). A plain class; ``factory.py`` makes it a Ray async actor.

Guarantees:

- **Backpressure**: at most ``spec.max_in_flight`` calls run at once and ``spec.max_queued``
  wait; a call beyond that fails at once with ``Overloaded`` saying which limit was hit. It
  never queues without bound inside Ray.
- **Routing safety**: a call names the version it expects. A predictor that hosts another
  version, hosts none (standby) or is draining refuses it with ``Overloaded`` carrying
  ``moved=True`` or ``draining=True``; the caller (``ProgramClient``) then refreshes its
  routing table and sends the call elsewhere. The refused call never ran.
- **Drain**: ``drain()`` stops admitting calls and returns once the running ones finished, so
  a swap drops no request. A drained predictor can ``load`` another version (the supervisor
  reuses its process instead of paying a new worker's start-up).
- **Restart**: after Ray restarts a crashed predictor (``max_restarts``), its first call
  re-hydrates it: the version it should host is asked of its supervisor (or, standalone, the
  spec it was created with is loaded again).
- **Bounded memory**: the last ``spec.history_size`` executions; metrics in fixed buckets.
- **Executions** go to the sinks through a background queue (``executions.py``); a call never
  waits on a sink.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dspex import telemetry
from dspex.errors import DeploymentError, Overloaded, ProviderTimeout
from dspex.settings import settings

from . import _ray
from ._events import ERROR_RECOVERY, OVERLOAD, PREDICTOR_EXECUTE
from .executions import Execution, ExecutionSink, SinkDispatcher
from .metrics import MetricsView, Outcome, RollingMetrics
from .shared_signatures import warm_program
from .spec import VersionId, VersionSpec

__all__ = ["Predictor"]

log = logging.getLogger("dspex.actors.predictor")

_AUTO = "auto"


@dataclass
class _Hosted:
    spec: VersionSpec
    program: Any
    generation: int
    loaded_at_s: float
    signatures: dict[str, str]


def _portable(result: Any) -> Any:
    """The result as it should cross the actor boundary. A Prediction's ``completions`` keep a
    reference to the signature class, which for a string signature is built at run time and
    would be pickled by value with every reply (about 1 ms): the caller does not need it."""
    completions = getattr(result, "_completions", None)
    if completions is not None and getattr(completions, "signature", None) is not None:
        completions.signature = None
    return result


class Predictor:
    """See the module docstring. ``signature_cache``: ``"auto"`` (the cluster's named
    ``SignatureCache`` when Ray is up), None (process-local only), or a cache handle."""

    def __init__(
        self,
        predictor_id: str,
        spec: VersionSpec | None = None,
        *,
        supervisor: str | None = None,
        sinks: Sequence[ExecutionSink] = (),
        signature_cache: Any = _AUTO,
        metrics_bucket_s: float = 1.0,
        metrics_horizon_s: float = 600.0,
        sink_queue: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not predictor_id:
            raise DeploymentError("A Predictor needs a non-empty predictor_id.")
        self.id = predictor_id
        self.supervisor = supervisor
        self.clock = clock
        self.wall_clock = wall_clock
        self.metrics_ = RollingMetrics(bucket_s=metrics_bucket_s, horizon_s=metrics_horizon_s, clock=clock)
        self.sinks = SinkDispatcher(sinks, max_queue=sink_queue)
        self._signature_cache = signature_cache
        self._initial = spec
        self._hosted: _Hosted | None = None
        self._generation = 0
        self._history: deque[Execution] = deque(maxlen=spec.history_size if spec else 1000)
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._draining = False
        self._idle: asyncio.Event | None = None
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.reconstructed = _ray.was_reconstructed()
        if self.reconstructed:
            telemetry.emit(
                ERROR_RECOVERY, {"attempt": 1}, {"component": "predictor", "strategy": "restart", "error": "ActorDied"}
            )

    # -- start-up and re-hydration ----------------------------------------------------------
    async def _ensure_started(self) -> None:
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            spec = self._initial
            if self.reconstructed and self.supervisor:
                spec = await self._assignment(spec)
            if spec is not None:
                await self._load(spec)
            self._started = True

    async def _assignment(self, fallback: VersionSpec | None) -> VersionSpec | None:
        """After a restart: the version the supervisor routes to this predictor."""
        handle = _ray.lookup(self.supervisor or "")
        if handle is None:
            return fallback
        try:
            spec: VersionSpec | None = await asyncio.wait_for(handle.assignment.remote(self.id), timeout=30.0)
            return spec
        except Exception:
            log.warning("predictor %s could not ask supervisor %s for its version", self.id, self.supervisor, exc_info=True)
            return fallback

    def _cache(self) -> Any:
        if self._signature_cache == _AUTO:
            self._signature_cache = _ray.lookup(_ray.SIGNATURE_CACHE_NAME)
        return self._signature_cache

    # -- hosting a version ------------------------------------------------------------------
    async def load(self, spec: VersionSpec) -> dict[str, Any]:
        """Host ``spec`` (build the program, load its state, compile its signatures through the
        shared cache). Refused while calls of the current version run: drain first."""
        if not isinstance(spec, VersionSpec):
            raise DeploymentError(f"Predictor.load needs a VersionSpec, got {type(spec).__name__}.")
        await self._ensure_started()
        if self._hosted is not None and (self._in_flight or self._waiters):
            raise DeploymentError(
                f"Predictor {self.id} still runs {self._in_flight} call(s) of {self._hosted.spec.label}; "
                "drain() it before loading another version."
            )
        await self._load(spec)
        return self.info()

    async def _load(self, spec: VersionSpec) -> None:
        program = await asyncio.to_thread(spec.build)
        signatures = await warm_program(program, self._cache())
        self._generation += 1
        self._hosted = _Hosted(spec, program, self._generation, self.wall_clock(), signatures)
        self._history = deque(maxlen=spec.history_size)
        self.metrics_.reset()
        self._draining = False

    async def drain(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Stop admitting calls; return once the admitted ones finished (or ``timeout_s``)."""
        await self._ensure_started()
        self._draining = True
        if self._in_flight or self._waiters:
            if self._idle is None:
                self._idle = asyncio.Event()
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=timeout_s)
            except TimeoutError:
                pass
        return {"drained": not (self._in_flight or self._waiters), "in_flight": self._in_flight}

    async def resume(self) -> None:
        """Admit calls again after a drain (e.g. a rollback that keeps this version)."""
        self._draining = False

    async def unload(self) -> dict[str, Any]:
        """Drop the hosted version and become a standby (drain first)."""
        if self._in_flight or self._waiters:
            raise DeploymentError(f"Predictor {self.id} still runs {self._in_flight} call(s); drain() it first.")
        self._hosted = None
        self._draining = False
        self.metrics_.reset()
        return self.info()

    # -- calls ------------------------------------------------------------------------------
    async def execute(
        self,
        inputs: dict[str, Any],
        version: VersionId | None = None,
        request_id: str | None = None,
    ) -> Any:
        """Run the hosted program on ``inputs`` (its input fields). ``version``: the version
        the caller routed to; another one is refused with ``Overloaded(moved=True)``."""
        if not self._started:
            await self._ensure_started()
        hosted = self._hosted
        self._check_route(hosted, version)
        assert hosted is not None
        if not isinstance(inputs, dict):
            raise DeploymentError(f"Predictor.execute takes a dict of input fields, got {type(inputs).__name__}.")
        spec = hosted.spec
        await self._admit(spec)
        started_wall = self.wall_clock()
        t0 = self.clock()
        error: BaseException | None = None
        try:
            return _portable(await self._run(hosted, inputs))
        except BaseException as exc:
            error = exc
            raise
        finally:
            latency_s = self.clock() - t0
            self._release()
            self._account(hosted, inputs, request_id, started_wall, latency_s, error)

    async def acall(self, **inputs: Any) -> Any:
        """``await predictor.acall(question=...)``: execute with keyword inputs (in-process use)."""
        return await self.execute(inputs)

    def _check_route(self, hosted: _Hosted | None, version: VersionId | None) -> None:
        if hosted is None:
            raise Overloaded(
                f"Predictor {self.id} hosts no program version (it is a standby); refresh the routing table.",
                hint="",
                moved=True,
                predictor=self.id,
            )
        if version is not None and version != hosted.spec.version:
            raise Overloaded(
                f"Predictor {self.id} hosts {hosted.spec.label}, not version {version!r}; refresh the routing table.",
                hint="",
                moved=True,
                predictor=self.id,
                version=hosted.spec.version,
            )
        if self._draining:
            raise Overloaded(
                f"Predictor {self.id} ({hosted.spec.label}) is draining and admits no new calls; "
                "send the call to the version the routing table names now.",
                hint="",
                draining=True,
                predictor=self.id,
                version=hosted.spec.version,
            )

    async def _admit(self, spec: VersionSpec) -> None:
        if self._in_flight < spec.max_in_flight and not self._waiters:
            self._in_flight += 1
            return
        if len(self._waiters) < spec.max_queued:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut  # _release hands its slot over (in_flight stays counted)
            except BaseException:
                if fut in self._waiters:
                    self._waiters.remove(fut)
                elif fut.done() and not fut.cancelled():
                    self._release()  # the slot was handed to us as we were cancelled: pass it on
                raise
            return
        self.metrics_.record(Outcome.REJECTED)
        telemetry.emit(OVERLOAD, {"limit": spec.max_in_flight}, {"component": "predictor", "program": spec.program})
        self._remember(
            Execution(
                execution_id=uuid.uuid4().hex[:16],
                program=spec.program,
                version=spec.version,
                predictor=self.id,
                status=Outcome.REJECTED,
                at_s=self.wall_clock(),
                error_type="Overloaded",
            )
        )
        raise Overloaded(
            f"Predictor {self.id} ({spec.label}) is at its limit: {self._in_flight} call(s) running "
            f"(max_in_flight={spec.max_in_flight}) and {len(self._waiters)} waiting (max_queued={spec.max_queued}).",
            predictor=self.id,
            version=spec.version,
            limit=spec.max_in_flight,
            in_flight=self._in_flight,
        )

    def _release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # hand the slot over
                return
        self._in_flight -= 1
        if self._in_flight == 0 and self._idle is not None:
            self._idle.set()

    async def _run(self, hosted: _Hosted, inputs: dict[str, Any]) -> Any:
        spec = hosted.spec
        self._ensure_executor(spec)
        overrides: dict[str, Any] = {}
        if spec.lm is not None:
            overrides["lm"] = spec.lm
        if spec.adapter is not None:
            overrides["adapter"] = spec.adapter
        with settings.context(**overrides):
            async with telemetry.span(PREDICTOR_EXECUTE, program=spec.program, version=str(spec.version), predictor=self.id):
                call = hosted.program.acall(**inputs)
                if spec.call_timeout_s is None:
                    return await call
                try:
                    return await asyncio.wait_for(call, timeout=spec.call_timeout_s)
                except TimeoutError:
                    raise ProviderTimeout(
                        f"{spec.label} did not finish within call_timeout_s={spec.call_timeout_s} on predictor {self.id}.",
                        hint="Raise call_timeout_s in the VersionSpec, or use a faster model.",
                    ) from None

    def _ensure_executor(self, spec: VersionSpec) -> None:
        # A program with only a sync forward runs in the loop's default executor (Module.aforward);
        # asyncio's default has min(32, cpus + 4) threads, far below max_in_flight on small nodes.
        if self._executor is None or self._executor._max_workers < spec.max_in_flight:
            old = self._executor
            self._executor = ThreadPoolExecutor(max_workers=max(8, spec.max_in_flight), thread_name_prefix="dspex-predictor")
            asyncio.get_running_loop().set_default_executor(self._executor)
            if old is not None:
                old.shutdown(wait=False)

    def _account(
        self,
        hosted: _Hosted,
        inputs: dict[str, Any],
        request_id: str | None,
        at_s: float,
        latency_s: float,
        error: BaseException | None,
    ) -> None:
        spec = hosted.spec
        if isinstance(error, asyncio.CancelledError):
            status = Outcome.ERROR
        else:
            status = Outcome.SUCCESS if error is None else Outcome.ERROR
        if self._hosted is hosted:  # a late finisher of an unloaded version does not count
            self.metrics_.record(status, latency_s)
        self._remember(
            Execution(
                execution_id=request_id or uuid.uuid4().hex[:16],
                program=spec.program,
                version=spec.version,
                predictor=self.id,
                status=status,
                at_s=at_s,
                latency_ms=latency_s * 1000.0,
                error_type=None if error is None else type(error).__name__,
                error=None if error is None else _ray.describe(error),
                inputs=dict(inputs) if spec.record_inputs else None,
                model=getattr(spec.lm, "model", None),
            )
        )

    def _remember(self, execution: Execution) -> None:
        self._history.append(execution)
        self.sinks.submit(execution)

    # -- reading ----------------------------------------------------------------------------
    async def metrics(self, window_s: float | None = None) -> dict[str, Any]:
        """The metrics view over the last ``window_s`` seconds (None: since the version loaded),
        as plain data (``MetricsView.from_dict`` reads it back)."""
        await self._ensure_started()
        return self.metrics_.window(window_s).to_dict()

    def metrics_view(self, window_s: float | None = None) -> MetricsView:
        return self.metrics_.window(window_s)

    async def history(self, limit: int = 100) -> list[dict[str, Any]]:
        """The last ``limit`` executions, oldest first."""
        items = list(self._history)[-limit:] if limit > 0 else []
        return [e.to_dict() for e in items]

    def info(self) -> dict[str, Any]:
        hosted = self._hosted
        return {
            "predictor": self.id,
            "program": hosted.spec.program if hosted else None,
            "version": hosted.spec.version if hosted else None,
            "generation": hosted.generation if hosted else None,
            "signatures": dict(hosted.signatures) if hosted else {},
            "in_flight": self._in_flight,
            "queued": len(self._waiters),
            "draining": self._draining,
            "reconstructed": self.reconstructed,
            "pid": os.getpid(),
            "totals": self.metrics_.window(None).summary(),
            "sink_dropped": self.sinks.dropped,
        }

    async def status(self) -> dict[str, Any]:
        await self._ensure_started()
        return self.info()

    async def ready(self) -> bool:
        await self._ensure_started()
        return True

    async def close(self) -> None:
        self.sinks.close()
