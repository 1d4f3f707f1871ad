"""``LocalVersions``: the program versions an ingress replica hosts in-process (colocated mode).

With ``ServeOptions(colocate_versions=True)`` there is no deployment per version: every ingress
replica hosts one ``VersionHost`` (a ``Predictor``) per live version, keyed by the name the
supervisor's routing table gives the version (``ServeVersionHandle.deployment``), and a
request costs one Serve hop instead of two. The supervisor still owns versions, weights,
rollouts and rollback; its ``ServeVersionHandle`` reaches the hosts through the ingress
deployment (``host_version`` / ``drain_version`` / ``version_metrics`` ... broadcast to every
ingress replica; ``graph.py``).

A replica that starts after a version was deployed (autoscaling, a restart) loads it itself:
at start-up for the versions of the current routing table, or on the first request that
names one it lacks, asking the supervisor which spec the version's predictor id stands for
(``HotSwapSupervisor.assignment``). Concurrent requests for a version being loaded wait on
the one load.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from dspex.actors.spec import VersionSpec

from dspex.errors import DeploymentError, Overloaded

from .version import VersionHost, replica_tag

__all__ = ["LocalVersions"]

log = logging.getLogger("dspex.cluster.serve.hosting")


class LocalVersions:
    """The versions hosted in this process. ``supervisor()``: the program's supervisor handle
    (or None), asked for the spec of a version this replica has not been given."""

    def __init__(self, app: str, supervisor: Callable[[], Any]) -> None:
        self.app = app
        self._supervisor = supervisor
        self.hosts: dict[str, VersionHost] = {}
        self._loading: dict[str, asyncio.Future[VersionHost]] = {}
        self._tag: str | None = None

    def _name(self, key: str) -> str:
        if self._tag is None:
            self._tag = replica_tag()
        return f"{self.app}/{self._tag}/{key}"

    # -- hosting ----------------------------------------------------------------------------
    async def host(self, key: str, spec: VersionSpec) -> dict[str, Any]:
        """Host ``spec`` under ``key`` (idempotent: a key already hosted is kept)."""
        host = await self._load(key, lambda: _resolved(spec))
        return {"key": key, "version": host.spec.version}

    async def ensure(self, key: str, predictor_id: str | None) -> VersionHost:
        """The host of ``key``, loading it from the supervisor's assignment when missing."""
        host = self.hosts.get(key)
        if host is not None:
            return host
        return await self._load(key, lambda: self._assignment(key, predictor_id))

    async def _assignment(self, key: str, predictor_id: str | None) -> VersionSpec:
        supervisor = self._supervisor()
        spec: VersionSpec | None = None
        if supervisor is not None and predictor_id:
            spec = await supervisor.assignment.remote(predictor_id)
        if spec is None:
            # Not (or no longer) a live version: the ingress refreshes its routes and re-routes.
            raise Overloaded(
                f"Version host {key!r} is not loaded in this ingress replica and its supervisor names no version "
                "for it; refresh the routing table.",
                hint="",
                moved=True,
            )
        return spec

    async def _load(self, key: str, get_spec: Callable[[], Any]) -> VersionHost:
        host = self.hosts.get(key)
        if host is not None:
            return host
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[VersionHost] = asyncio.get_running_loop().create_future()
        self._loading[key] = fut
        try:
            spec = await get_spec()
            host = VersionHost(spec, self._name(key))
            await host.ready()  # build the program, load its state, warm its signatures
            self.hosts[key] = host
            fut.set_result(host)
            log.info("%s: hosting %s as %s", self.app, spec.label, key)
            return host
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            self._loading.pop(key, None)

    async def unhost(self, key: str) -> bool:
        """Stop hosting ``key`` (the supervisor drained it first)."""
        host = self.hosts.pop(key, None)
        if host is None:
            return False
        await host.close()
        return True

    # -- control (broadcast to every ingress replica by the supervisor's handle) ----------------
    async def metrics(self, key: str, window_s: float | None) -> dict[str, Any] | None:
        host = self.hosts.get(key)
        return None if host is None else await host.metrics(window_s)

    async def drain(self, key: str, timeout_s: float) -> dict[str, Any]:
        host = self.hosts.get(key)
        return {"drained": True, "in_flight": 0} if host is None else await host.drain(timeout_s)

    async def resume(self, key: str) -> None:
        host = self.hosts.get(key)
        if host is not None:
            await host.resume()

    async def status(self, key: str) -> dict[str, Any]:
        host = self.hosts.get(key)
        if host is None:
            return {"key": key, "hosted": False}
        return {"key": key, "hosted": True, **(await host.status())}


async def _resolved(spec: VersionSpec) -> VersionSpec:
    if not isinstance(spec, VersionSpec):
        raise DeploymentError(f"host_version needs a VersionSpec, got {type(spec).__name__}.", hint="")
    return spec
