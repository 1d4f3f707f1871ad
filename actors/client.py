"""``ProgramClient``: call a deployed program; routing happens here, not in the supervisor.

The client keeps the supervisor's latest ``RoutingTable`` and, per call, draws a version by
weight and a replica by *power of two choices* on its own in-flight counts, then calls that
predictor directly. It learns of a new table:

- from a watcher thread long-polling ``supervisor.watch(epoch)`` (with Ray), so a swap
  reaches it within one round-trip, with no request paying for it;
- when a predictor refuses a call as ``moved`` or ``draining`` (it refreshes and re-sends at
  once: the refused call never ran);
- after ``max_staleness_s`` when not watching (local mode, or ``watch=False``).

Failures it hides, within ``retry_deadline_s``: refusals above, and a predictor process that
died or is restarting (Ray ``ActorDiedError`` / ``ActorUnavailableError``): the call is sent
again, with backoff, to a live replica or to the same one once Ray has restarted it. A call
that cannot be placed in time fails with ``DeploymentError`` naming the program, the version
and the last error. Errors of the program itself (a provider error, a parse error) and
backpressure (``Overloaded`` without ``moved``/``draining``, after trying a second replica)
go to the caller unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from dspex import telemetry
from dspex.errors import DeploymentError, Overloaded, ProviderTimeout
from dspex.primitives.module import Module

from . import _ray
from ._events import ERROR_RECOVERY
from .routing import Replica, Route, RoutingTable

__all__ = ["ProgramClient"]

log = logging.getLogger("dspex.actors.client")


class ProgramClient(Module):
    """Calls program ``program`` through its ``HotSwapSupervisor`` (see the module docstring).

    It is a ``dspex.Module``: ``client(question=...)``, ``await client.acall(question=...)``,
    and ``dspex.Evaluate(...)(client)`` work as on the local program.

    ``supervisor``: the supervisor's handle (a Ray actor handle or a ``LocalActor``); by
    default the named ``dspex.supervisor.<program>`` actor.
    """

    def __init__(
        self,
        program: str,
        *,
        supervisor: Any = None,
        watch: bool | None = None,
        max_staleness_s: float = 1.0,
        retry_deadline_s: float = 30.0,
        max_redirects: int = 20,
        call_timeout_s: float | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.program = program
        self._supervisor = supervisor
        self.max_staleness_s = max_staleness_s
        self.retry_deadline_s = retry_deadline_s
        self.max_redirects = max_redirects
        self.call_timeout_s = call_timeout_s
        self.clock = clock
        self._rng = random.Random(seed)
        self._table: RoutingTable | None = None
        self._fetched_s = -float("inf")
        self._in_flight: dict[str, int] = {}
        self._watch = watch
        self._watcher: threading.Thread | None = None
        self._closed = threading.Event()
        self.stats: dict[str, int] = {"calls": 0, "redirects": 0, "actor_errors": 0, "refreshes": 0, "failed": 0}

    # -- the supervisor and its table ---------------------------------------------------------
    def supervisor(self) -> Any:
        if self._supervisor is None:
            handle = _ray.lookup(_ray.supervisor_name(self.program))
            if handle is None:
                raise DeploymentError(
                    f"No HotSwapSupervisor runs program {self.program!r}; start one with "
                    f"dspex.actors.get_supervisor({self.program!r}) and deploy a version.",
                    hint="",
                )
            self._supervisor = handle
        return self._supervisor

    @property
    def table(self) -> RoutingTable | None:
        return self._table

    def _install(self, table: RoutingTable | None) -> None:
        if table is not None and (self._table is None or table.epoch > self._table.epoch):
            self._table = table
        self._fetched_s = self.clock()

    async def refresh(self) -> RoutingTable:
        """Fetch the routing table from the supervisor now."""
        self.stats["refreshes"] += 1
        table: RoutingTable = await self.supervisor().routing_table.remote()
        self._install(table)
        assert self._table is not None
        return self._table

    async def _current(self) -> RoutingTable:
        self._maybe_watch()
        watching = self._watcher is not None and self._watcher.is_alive()
        if self._table is None or (not watching and self.clock() - self._fetched_s > self.max_staleness_s):
            return await self.refresh()
        return self._table

    def _maybe_watch(self) -> None:
        if self._watcher is not None or self._watch is False or self._closed.is_set():
            return
        from .local import LocalActor

        if isinstance(self.supervisor(), LocalActor) or not _ray.ray_ready():
            self._watch = False  # local mode: refresh by staleness instead
            return
        self._watcher = threading.Thread(target=self._watch_loop, name=f"dspex-routes-{self.program}", daemon=True)
        self._watcher.start()

    def _watch_loop(self) -> None:
        import ray

        failures = 0
        while not self._closed.is_set():
            epoch = self._table.epoch if self._table is not None else -1
            try:
                table = ray.get(self.supervisor().watch.remote(epoch, 5.0), timeout=15.0)
                failures = 0
                if table is not None:
                    self._install(table)
            except Exception as exc:
                failures += 1
                if _ray.actor_died(exc) and failures >= 3:
                    log.info("routing watcher of %s stops: the supervisor is gone", self.program)
                    return
                self._closed.wait(min(2.0, 0.1 * 2**failures))

    # -- calls -----------------------------------------------------------------------------
    def _pick(self, route: Route, avoid: str | None = None) -> Replica:
        replicas = [r for r in route.replicas if r.predictor_id != avoid] or list(route.replicas)
        if len(replicas) == 1:
            return replicas[0]
        a, b = self._rng.sample(replicas, 2)
        return a if self._in_flight.get(a.predictor_id, 0) <= self._in_flight.get(b.predictor_id, 0) else b

    async def aforward(self, **inputs: Any) -> Any:
        """Run the program on ``inputs``; returns what the program returns (a Prediction)."""
        result, _, _ = await self.acall_routed(inputs)
        return result

    def forward(self, **inputs: Any) -> Any:
        from dspex.utils.asyncio_bridge import run_sync

        return run_sync(self.aforward(**inputs))

    async def acall_routed(self, inputs: dict[str, Any]) -> tuple[Any, Any, str]:
        """Like ``acall``; also returns the version and the predictor that answered."""
        self.stats["calls"] += 1
        request_id = uuid.uuid4().hex[:16]
        deadline = self.clock() + self.retry_deadline_s
        redirects = 0
        died = 0
        avoid: str | None = None
        tried_overflow = False
        last: BaseException | None = None
        while True:
            table = await self._current()
            route = table.choose_version(self._rng)
            replica = self._pick(route, avoid)
            pid = replica.predictor_id
            self._in_flight[pid] = self._in_flight.get(pid, 0) + 1
            try:
                ref = replica.handle.execute.remote(inputs, route.version, request_id)
                if self.call_timeout_s is None:
                    result = await ref
                else:
                    waiting = asyncio.ensure_future(_await(ref))
                    done, _ = await asyncio.wait({waiting}, timeout=self.call_timeout_s)
                    if not done:
                        waiting.cancel()  # the call keeps running remotely; its answer is dropped
                        raise ProviderTimeout(
                            f"{self.program}@{route.version} on {pid} did not answer within "
                            f"call_timeout_s={self.call_timeout_s}.",
                            hint="Raise call_timeout_s, or check the predictor (its LM may be slow or down).",
                        )
                    result = waiting.result()
                return result, route.version, pid
            except Exception as exc:
                cause = _ray.unwrap(exc)
                last = cause
                if isinstance(cause, Overloaded) and (cause.fields.get("moved") or cause.fields.get("draining")):
                    redirects += 1
                    self.stats["redirects"] += 1
                    _retrying(redirects, "Draining" if cause.fields.get("draining") else "Moved")
                    if redirects > self.max_redirects:
                        break
                    before = table.epoch
                    await self.refresh()
                    if self._table is not None and self._table.epoch == before:
                        await asyncio.sleep(min(0.2, 0.01 * redirects))  # the supervisor is mid-change
                    continue
                if _ray.actor_died(cause):
                    died += 1
                    self.stats["actor_errors"] += 1
                    _retrying(died, type(cause).__name__)
                    if self.clock() >= deadline:
                        break
                    avoid = pid
                    await asyncio.sleep(min(1.0, 0.05 * 2 ** min(died, 5)))
                    try:
                        await self.refresh()
                    except Exception as refresh_exc:
                        last = _ray.unwrap(refresh_exc)
                    continue
                if isinstance(cause, Overloaded) and not tried_overflow and len(route.replicas) > 1:
                    tried_overflow = True  # backpressure: one other replica may have room
                    avoid = pid
                    continue
                self.stats["failed"] += 1
                if cause is exc:
                    raise
                raise cause from exc
            finally:
                n = self._in_flight.get(pid, 1) - 1
                if n:
                    self._in_flight[pid] = n
                else:
                    self._in_flight.pop(pid, None)
        self.stats["failed"] += 1
        raise DeploymentError(
            f"Could not place a call to {self.program!r} within retry_deadline_s={self.retry_deadline_s} "
            f"({redirects} redirect(s), {died} predictor failure(s)); last error: "
            f"{_ray.describe(last) if last else 'none'}.",
            hint="Check the supervisor's status() and the predictors' logs.",
            program=self.program,
        ) from last

    def close(self) -> None:
        """Stop the routing watcher (it also stops by itself when the supervisor is gone)."""
        self._closed.set()

    def __enter__(self) -> ProgramClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # travels without its watcher thread and caches; the receiver fetches the table again
        state = dict(self.__dict__)
        state.update(_watcher=None, _closed=None, _table=None, _in_flight={}, _fetched_s=-float("inf"))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._closed = threading.Event()

    def __repr__(self) -> str:
        epoch = self._table.epoch if self._table is not None else None
        return f"ProgramClient(program={self.program!r}, routing_epoch={epoch})"


async def _await(ref: Any) -> Any:
    return await ref


def _retrying(attempt: int, reason: str) -> None:
    telemetry.emit(ERROR_RECOVERY, {"attempt": attempt}, {"component": "program_client", "strategy": "retry", "error": reason})
