"""Periodic health checks: a background task that probes models with real calls.

``HealthChecker(registry, interval_s=300)`` probes every model in ``testing`` or
``available`` whose last observation (probe or real call) is older than ``interval_s``, each
probe bounded by ``timeout_s``; a model in poor health (degraded or unhealthy) is re-probed
every ``recheck_interval_s`` so a recovery is seen soon, and the router can ask for a probe
(``request_check``) when it routes to a degraded primary. Health turns ``stale`` after two
intervals without an observation (the checker sets ``registry.stale_after_s``). With
``refresh_interval_s`` it also reloads the registry (changes made by other processes).

The task runs on dspex's shared I/O loop; ``start()`` and ``stop()`` may be called from any
thread, and ``stop()`` returns once the task has finished (an in-flight probe is cancelled).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
from collections.abc import Iterable

from dspex.errors import ConfigurationError
from dspex.registry.model import HealthStatus, Model, ModelStatus
from dspex.registry.registry import HealthCheckResult, ModelRegistry
from dspex.registry.router import ModelRouter
from dspex.utils.asyncio_bridge import background_loop

__all__ = ["HealthChecker"]

log = logging.getLogger("dspex.registry.health")

_MIN_WAIT_S = 0.01


class HealthChecker:
    def __init__(
        self,
        registry: ModelRegistry,
        *,
        interval_s: float = 300.0,
        timeout_s: float = 10.0,
        recheck_interval_s: float | None = None,
        refresh_interval_s: float | None = None,
        statuses: Iterable[ModelStatus] = (ModelStatus.TESTING, ModelStatus.AVAILABLE),
        concurrency: int = 8,
        router: ModelRouter | None = None,
    ) -> None:
        if interval_s <= 0 or timeout_s <= 0 or concurrency < 1:
            raise ConfigurationError("HealthChecker needs interval_s > 0, timeout_s > 0 and concurrency >= 1.")
        self.registry = registry
        self.interval_s = float(interval_s)
        self.timeout_s = float(timeout_s)
        self.recheck_interval_s = float(recheck_interval_s if recheck_interval_s is not None
                                        else min(self.interval_s, 30.0))
        self.refresh_interval_s = refresh_interval_s
        self.statuses = frozenset(statuses)
        self.concurrency = concurrency
        registry.stale_after_s = 2 * self.interval_s
        if router is not None:
            router.on_check_requested = self.request_check
        #: the latest result per model
        self.results: dict[str, HealthCheckResult] = {}
        self.checks_run = 0
        self._requested: set[str] = set()
        self._last_refresh = -math.inf
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the periodic task on dspex's I/O loop (no-op when already running)."""
        loop = background_loop()
        _not_on(loop, "start")
        asyncio.run_coroutine_threadsafe(self.astart(), loop).result()

    async def astart(self) -> None:
        """Start the task on the running loop."""
        if self.running:
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name="dspex-health-checker")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the task and wait for it to finish."""
        loop = self._loop
        if loop is None or not self.running:
            return
        _not_on(loop, "stop")
        fut = asyncio.run_coroutine_threadsafe(self.astop(), loop)
        try:
            fut.result(timeout_s)
        except concurrent.futures.TimeoutError:
            raise ConfigurationError(f"The health checker did not stop within {timeout_s:g} s.") from None

    async def astop(self) -> None:
        task = self._task
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        self._task = None

    def request_check(self, model: Model) -> None:
        """Probe ``model`` soon (thread-safe; repeated requests coalesce)."""
        if model.name in self._requested:
            return
        self._requested.add(model.name)
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and self.running:
            loop.call_soon_threadsafe(wake.set)

    # -- the loop ---------------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await self.check_due()
                await self._maybe_refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad pass must not end the checker
                log.exception("health check pass failed")
            wait = self._next_wait_s()
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass
            self._wake.clear()

    def _due(self, m: Model, now: float) -> bool:
        if m.status not in self.statuses:
            return False
        if m.name in self._requested:
            return True
        seen = max(x for x in (m.last_health_check_s, m.last_call_s, -math.inf) if x is not None)
        if now - seen >= self.interval_s:
            return True
        if m.health_status(now, self.registry.stale_after_s) in (HealthStatus.DEGRADED, HealthStatus.UNHEALTHY):
            last = m.last_health_check_s if m.last_health_check_s is not None else -math.inf
            return now - last >= self.recheck_interval_s
        return False

    def _next_wait_s(self) -> float:
        now = self.registry.clock()
        waits = [self.interval_s]
        for m in self.registry.models():
            if m.status not in self.statuses:
                continue
            seen = max(x for x in (m.last_health_check_s, m.last_call_s, -math.inf) if x is not None)
            waits.append(seen + self.interval_s - now)
            if m.health_status(now, self.registry.stale_after_s) in (HealthStatus.DEGRADED, HealthStatus.UNHEALTHY):
                last = m.last_health_check_s if m.last_health_check_s is not None else -math.inf
                waits.append(last + self.recheck_interval_s - now)
        if self.refresh_interval_s is not None:
            waits.append(self._last_refresh + self.refresh_interval_s - now)
        return max(_MIN_WAIT_S, min(waits))

    async def check_due(self) -> list[HealthCheckResult]:
        """One pass: probe every model that is due, at most ``concurrency`` at a time."""
        now = self.registry.clock()
        due = [m for m in self.registry.models() if self._due(m, now)]
        if not due:
            return []
        sem = asyncio.Semaphore(self.concurrency)

        async def one(m: Model) -> HealthCheckResult:
            async with sem:
                self._requested.discard(m.name)
                res = await self.registry.ahealth_check(m.name, timeout_s=self.timeout_s)
                self.results[m.name] = res
                self.checks_run += 1
                return res

        return list(await asyncio.gather(*(one(m) for m in due)))

    async def _maybe_refresh(self) -> None:
        if self.refresh_interval_s is None:
            return
        now = self.registry.clock()
        if now - self._last_refresh >= self.refresh_interval_s:
            self._last_refresh = now
            await asyncio.to_thread(self.registry.refresh)


def _not_on(loop: asyncio.AbstractEventLoop, verb: str) -> None:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return
    if running is loop:
        raise ConfigurationError(
            f"HealthChecker.{verb}() was called from the loop it runs on; use `await checker.a{verb}()` there."
        )
