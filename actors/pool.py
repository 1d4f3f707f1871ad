"""The supervisor's predictor processes: starting, retiring and replacing them.

Starting a Ray actor costs a new worker process (1-2 s on a small node; notes/ray-measured.md),
far above a swap's budget, so a retired predictor is *drained* (no call of the old version is
dropped) and *unloaded*, then kept as a standby (up to ``max_standby``) that the next version
is loaded into in milliseconds. ``assignments`` records which version each predictor should
host, for predictors that Ray restarted and ask again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

from dspex.errors import DeploymentError

from . import _ray
from .routing import Replica
from .spec import VersionSpec

__all__ = ["PredictorPool"]

log = logging.getLogger("dspex.actors.pool")

Spawn = Callable[[str], Any]
Kill = Callable[[Any], None]


class PredictorPool:
    def __init__(self, program: str, *, spawn: Spawn, kill: Kill, max_standby: int, drain_timeout_s: float) -> None:
        self.program = program
        self.spawn = spawn
        self.kill = kill
        self.max_standby = max_standby
        self.drain_timeout_s = drain_timeout_s
        self.standby: list[Replica] = []
        self.assignments: dict[str, VersionSpec | None] = {}
        self._next = 0

    def new_replica(self) -> Replica:
        self._next += 1
        pid = f"dspex.predictor.{self.program}.{self._next}-{uuid.uuid4().hex[:6]}"
        self.assignments[pid] = None
        return Replica(pid, self.spawn(pid))

    async def start(self, spec: VersionSpec, n: int) -> list[Replica]:
        """``n`` predictors hosting ``spec``: standbys first, new ones for the rest. All or none:
        when one fails to load, every one of them is retired and ``DeploymentError`` raised."""
        replicas: list[Replica] = []
        while len(replicas) < n and self.standby:
            replicas.append(self.standby.pop())
        while len(replicas) < n:
            replicas.append(self.new_replica())
        for r in replicas:
            self.assignments[r.predictor_id] = spec
        results = await asyncio.gather(*(r.handle.load.remote(spec) for r in replicas), return_exceptions=True)
        failed = [e for e in results if isinstance(e, BaseException)]
        if failed:
            await self.retire(replicas, drain=False)
            cause = _ray.unwrap(failed[0])
            raise DeploymentError(
                f"Could not start {spec.label} on {len(failed)} of {len(replicas)} predictor(s): {_ray.describe(cause)}",
                version=spec.version,
            ) from cause
        return replicas

    async def retire(self, replicas: list[Replica], *, drain: bool = True) -> None:
        """Drain (wait for running calls), then keep as standby or stop."""
        if drain:
            await asyncio.gather(*(r.handle.drain.remote(self.drain_timeout_s) for r in replicas), return_exceptions=True)
        for r in replicas:
            self.assignments[r.predictor_id] = None
            if len(self.standby) < self.max_standby:
                try:
                    await r.handle.unload.remote()
                    self.standby.append(r)
                    continue
                except Exception:
                    log.warning("predictor %s could not unload; stopping it", r.predictor_id, exc_info=True)
            self.assignments.pop(r.predictor_id, None)
            self.kill(r.handle)

    async def prestart(self, n: int) -> list[str]:
        """Start standbys now (up to ``max_standby``), so the next deploy needs no new worker."""
        fresh: list[Replica] = []
        while len(self.standby) + len(fresh) < min(n, self.max_standby):
            fresh.append(self.new_replica())
        await asyncio.gather(*(r.handle.ready.remote() for r in fresh))
        self.standby.extend(fresh)
        return [r.predictor_id for r in self.standby]

    async def replace(self, dead: Replica, spec: VersionSpec) -> Replica:
        """A new predictor hosting ``spec`` in place of one that died for good."""
        self.assignments.pop(dead.predictor_id, None)
        fresh = self.new_replica()
        self.assignments[fresh.predictor_id] = spec
        await fresh.handle.load.remote(spec)
        return fresh

    def stop(self, replicas: list[Replica]) -> None:
        for r in [*replicas, *self.standby]:
            self.assignments.pop(r.predictor_id, None)
            self.kill(r.handle)
        self.standby.clear()
