"""Calling one version of a program, whatever its traffic weight (canary tests, shadow traffic).

``VersionCaller(supervisor)`` reads the supervisor's routing table and sends a call straight to
a replica of the version asked for, as ``ProgramClient`` does for weighted traffic. It works for
every kind of replica the supervisor lists: Ray ``Predictor`` actors, the Serve app's version
deployments (``ServeVersionHandle.execute``) and in-process ``LocalActor`` predictors. A replica
that refuses the call as ``moved`` / ``draining`` (the table changed under us) makes it fetch the
table again and re-send; a program's own error goes to the caller.

These calls run on the version's predictors, so they count in its measured metrics like any
other call (a canary test's errors are the canary's errors).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

from dspex.errors import DeploymentError, NotFound, Overloaded

__all__ = ["VersionCaller"]


def _unwrap(exc: BaseException) -> BaseException:
    from dspex.actors import _ray

    return _ray.unwrap(exc)


class VersionCaller:
    """Calls pinned to a version through ``supervisor`` (an actor handle or ``LocalActor``)."""

    def __init__(self, supervisor: Any, *, max_redirects: int = 5, seed: int | None = None) -> None:
        self.supervisor = supervisor
        self.max_redirects = max_redirects
        self._table: Any = None
        self._rng = random.Random(seed)

    async def refresh(self) -> Any:
        self._table = await self.supervisor.routing_table.remote()
        return self._table

    async def _route(self, version: int, fresh: bool) -> Any:
        table = self._table if self._table is not None and not fresh else await self.refresh()
        for route in table.routes:
            if route.version == version and route.replicas:
                return route
        if not fresh:
            return await self._route(version, True)
        raise NotFound(
            f"Version {version} of {table.program!r} is not deployed (routing table epoch {table.epoch}); "
            "deploy it before calling it."
        )

    async def call(self, version: int, inputs: dict[str, Any]) -> Any:
        """Run ``version`` on ``inputs``; what the version's program returns."""
        request_id = uuid.uuid4().hex[:16]
        fresh = False
        for attempt in range(self.max_redirects + 1):
            route = await self._route(version, fresh)
            replica = self._rng.choice(route.replicas)
            try:
                return await replica.handle.execute.remote(inputs, version, request_id)
            except Exception as exc:
                cause = _unwrap(exc)
                moved = isinstance(cause, Overloaded) and (
                    cause.fields.get("moved") or cause.fields.get("draining")
                )
                if not moved or attempt == self.max_redirects:
                    if cause is exc:
                        raise
                    raise cause from exc
                fresh = True
                await asyncio.sleep(0.01 * (attempt + 1))
        raise DeploymentError(
            f"Could not place a call to version {version} after {self.max_redirects} redirects."
        )
