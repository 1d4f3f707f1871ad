"""``ProgramIngress``: the front of one program's Serve application.

HTTP goes through ``http_app.IngressHttp`` (a plain ASGI app built per replica by Serve's
``__serve_build_asgi_app__`` hook; the endpoints are listed there). DeploymentHandle callers
use ``apredict`` and ``routes_config``; the supervisor's ``ServeVersionHandle`` uses the
``*_version`` methods in colocated mode.

Routing (``routes.py``): a pinned version (``X-Dspex-Version``), else the sticky key
(``X-Dspex-Session`` / ``X-Dspex-User``, or the OpenAI ``user`` field) hashed onto the weights,
else a random draw. The routes follow the ``HotSwapSupervisor`` (``graph.py`` explains the
link): a long-poll of ``watch(epoch)`` here, and ``user_config`` written by the supervisor's
side. A version that refuses a call as draining or moved (a swap in progress) makes the
ingress refresh its routes and send the call again, so a swap fails no request.

Where a version runs (``ServeOptions.colocate_versions``):

- colocated (the default): in this replica, one ``VersionHost`` per live version
  (``hosting.py``). A request is one Serve hop, like a bare deployment's.
- split: in the version's own deployment, called through a cached ``DeploymentHandle``
  (two Serve hops per request; versions scale and fail independently of the ingress).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

from dspex.actors import _ray
from dspex.actors.spec import VersionSpec
from ray import serve

from dspex import telemetry
from dspex.errors import DSPexError, Overloaded
from dspex.telemetry.metrics import METRICS_HANDLER_ID
from dspex.telemetry.names import SERVE_REQUEST

from .hosting import LocalVersions
from .http_app import IngressHttp
from .options import ServeOptions
from .routes import RouteSet, ServedRoute

__all__ = ["IngressCore", "ProgramIngress"]

log = logging.getLogger("dspex.cluster.serve.ingress")

#: how long a starting colocated replica waits for the live versions before it takes traffic
#: (past it, versions load on their first request)
_STARTUP_LOAD_TIMEOUT_S = 60.0


def _redirectable(exc: BaseException) -> bool:
    """A refusal that means "this version is leaving": refresh the routes and send again."""
    if isinstance(exc, Overloaded):
        return bool(exc.fields.get("moved") or exc.fields.get("draining"))
    return type(exc).__name__ == "DeploymentUnavailableError"


def _note_version(exc: BaseException, version: Any) -> None:
    try:
        exc._dspex_served_version = version  # type: ignore[attr-defined]
    except AttributeError:
        pass


def _feed_metrics(program_metrics: bool) -> None:
    """Feed this replica's ``/metrics``: the ``SERVE_REQUEST`` spans, and with
    ``program_metrics`` every dspex event of the program (predict, LM calls, tokens, cost).
    Recording an event costs CPU on every request; the split topology's ingress only ever
    saw its own spans, so that stays the default."""
    if program_metrics:
        telemetry.enable_metrics()
        return
    attached = {hid for hid, _ in telemetry.list_handlers(SERVE_REQUEST)}
    if _SERVE_METRICS_ID in attached or METRICS_HANDLER_ID in attached:
        return  # fed already (enable_metrics records these events too)
    store = telemetry.default_store()
    events = [e for e in store.events if e[: len(SERVE_REQUEST)] == SERVE_REQUEST]
    telemetry.attach_many(_SERVE_METRICS_ID, events, store.handle)


_SERVE_METRICS_ID = "dspex.serve.ingress.metrics"


class IngressCore:
    """The ingress's logic, without Serve's wrapper (``ProgramIngress`` below is what Serve
    deploys; tests drive this class in-process)."""

    def __init__(
        self, program: str, app: str, options: dict[str, Any], *versions: Any, bootstrap: dict[str, Any] | None = None
    ) -> None:
        self.program = program
        self.app_name = app
        self.options = ServeOptions.from_dict(options)
        self.colocated = self.options.colocate_versions
        self.routes = RouteSet(program)
        self.user_config_epoch = -1  # the epoch of the routes last received through user_config
        self.rng = random.Random()
        self.local = LocalVersions(app, self.supervisor)
        self._methods: dict[tuple[str, str], Any] = {}  # (deployment, method) -> handle (split mode)
        self._fields: dict[str, dict[str, list[str]]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._bootstrap = bootstrap
        _feed_metrics(self.options.program_metrics)

    async def __serve_build_asgi_app__(self) -> IngressHttp:
        """Serve's start-up hook (after ``__init__``, before the replica takes traffic)."""
        self._start_watcher()
        if self._bootstrap:
            await self._register_bootstrap(self._bootstrap)
        if self.colocated:
            await self._load_current()
        # What exists now (Ray, Serve, the program's modules) lives as long as the replica:
        # moved out of the collector's generations, every later collection skips it. Measured
        # at c=256 (benchmarks/serve.py): the replica's CPU per request fell from 3.7 to 3.1 ms
        # through the proxy and from 1.95 to 1.8 ms through a handle.
        gc.freeze()
        return IngressHttp(self)

    async def _register_bootstrap(self, bootstrap: dict[str, Any]) -> None:
        from .app import config_deployment, register_config_versions
        from .specs import spec_from_config

        if self.colocated:  # host the config's versions here, under the names the supervisor adopts
            for cfg in bootstrap.get("versions") or []:
                spec = spec_from_config(self.program, cfg)
                await self.local.host(config_deployment(spec.version), spec)
        # An application deployed from a config file: hand its versions to the supervisor
        # (which adopts them). In the background, so the replica becomes ready meanwhile.
        self._spawn(register_config_versions(self.program, self.app_name, self.options, bootstrap))

    async def _load_current(self) -> None:
        """A colocated replica starting beside running versions loads them before serving."""
        await self.refresh()
        loads = [self.local.ensure(d, p) for r in self.routes.routes for d, p in zip(r.deployments, r.predictors, strict=False)]
        if not loads:
            return
        try:
            results = await asyncio.wait_for(asyncio.gather(*loads, return_exceptions=True), _STARTUP_LOAD_TIMEOUT_S)
        except TimeoutError:
            log.warning("%s: live versions not loaded within %.0f s; they load on first use", self.program, _STARTUP_LOAD_TIMEOUT_S)
            return
        for r in results:
            if isinstance(r, BaseException):
                log.warning("%s: a live version could not be loaded at start-up: %r", self.program, r)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- routes -------------------------------------------------------------------------------
    def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve's ``user_config`` hook: the durable copy of the routing table."""
        routes = RouteSet.from_config(self.program, config)
        self.user_config_epoch = routes.epoch
        self._install(routes)

    def _install(self, routes: RouteSet) -> None:
        newer = self.routes.newer(routes)
        if newer is self.routes:
            return
        self.routes = newer
        live = {d for r in newer.routes for d in r.deployments}
        for name, method in [k for k in self._methods if k[0] not in live]:
            self._methods.pop((name, method), None)
        if self.colocated:  # warm the versions this replica has not been given yet
            for r in newer.routes:
                for d, p in zip(r.deployments, r.predictors, strict=False):
                    if d not in self.local.hosts:
                        self._spawn(self._preload(d, p))

    async def _preload(self, deployment: str, predictor_id: str) -> None:
        try:
            await self.local.ensure(deployment, predictor_id)
        except Exception as exc:
            log.info("%s: could not preload %s: %s", self.program, deployment, _ray.describe(exc))

    def supervisor(self) -> Any:
        return _ray.lookup(_ray.supervisor_name(self.program))

    def _start_watcher(self) -> None:
        if self._watcher is not None and not self._watcher.done():
            return
        try:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        except RuntimeError:
            self._watcher = None  # no loop yet: the first request starts it

    async def _watch(self) -> None:
        failures = 0
        while True:
            supervisor = self.supervisor()
            if supervisor is None:
                await asyncio.sleep(1.0)
                continue
            try:
                table = await supervisor.watch.remote(self.routes.epoch, self.options.watch_timeout_s)
                failures = 0
            except Exception:
                failures += 1
                await asyncio.sleep(min(2.0, 0.05 * 2 ** min(failures, 6)))
                continue
            if table is not None:
                self._install(RouteSet.from_table(table))

    async def refresh(self) -> None:
        """Fetch the supervisor's routing table now."""
        supervisor = self.supervisor()
        if supervisor is None:
            return
        try:
            self._install(RouteSet.from_table(await supervisor.routing_table.remote()))
        except Exception:
            log.debug("routing table refresh of %s failed", self.program, exc_info=True)

    async def ensure_routes(self) -> None:
        self._start_watcher()
        if self.routes.epoch < 0:
            await self.refresh()

    async def choose(self, key: str | None, pin: str | None) -> ServedRoute:
        if self._watcher is None or self._watcher.done():
            self._start_watcher()
        if self.routes.epoch < 0:
            await self.refresh()
        try:
            return self.routes.choose(key=key, pin=pin, rng=self.rng)
        except DSPexError:
            await self.refresh()  # a version deployed a moment ago may not have reached us
            return self.routes.choose(key=key, pin=pin, rng=self.rng)

    # -- reaching a version -------------------------------------------------------------------
    def _method(self, deployment: str, method: str, stream: bool = False) -> Any:
        """A cached handle to ``deployment.method`` (split mode): building one per call costs.
        With ``grpc_handles`` it sends over Serve's inter-replica gRPC (``_by_reference=False``)
        instead of a Ray actor call: about half the CPU per call on both sides (``options.py``)."""
        handle = self._methods.get((deployment, method))
        if handle is None:
            base = serve.get_deployment_handle(deployment, self.app_name)
            handle = base.options(method_name=method, stream=stream)
            if self.options.grpc_handles:
                handle = handle.options(_by_reference=False)
            self._methods[(deployment, method)] = handle
        return handle

    async def _host(self, deployment: str) -> Any:
        host = self.local.hosts.get(deployment)
        if host is None:
            host = await self.local.ensure(deployment, self.routes.predictor_of(deployment))
        return host

    async def _predict(self, deployment: str, inputs: dict[str, Any], version: Any, rid: str) -> dict[str, Any]:
        if self.colocated:
            host = self.local.hosts.get(deployment) or await self._host(deployment)
            outputs: dict[str, Any] = await host.predict(inputs, version, rid)
            return outputs
        outputs = await self._method(deployment, "predict").remote(inputs, version, rid)
        return outputs

    async def _stream(self, deployment: str, inputs: dict[str, Any], version: Any, fields: list[str] | None) -> Any:
        if self.colocated:
            return (await self._host(deployment)).stream(inputs, version, fields)
        return self._method(deployment, "stream", stream=True).remote(inputs, version, fields)

    # -- calls --------------------------------------------------------------------------------
    async def apredict(
        self, inputs: dict[str, Any], key: str | None = None, pin: str | None = None, request_id: str | None = None
    ) -> dict[str, Any]:
        """Run the program: ``{"version", "outputs"}`` (for DeploymentHandle callers)."""
        # a request id needs uniqueness, not secrecy: no os.urandom syscall on the request path
        rid = request_id or f"{self.rng.getrandbits(64):016x}"
        async with telemetry.span(SERVE_REQUEST, program=self.program, version="") as span:
            for attempt in range(self.options.max_redirects + 1):
                route = await self.choose(key, pin)
                span.meta(version=str(route.version))
                deployments = route.deployments
                deployment = deployments[0] if len(deployments) == 1 else self.rng.choice(deployments)
                try:
                    outputs = await self._predict(deployment, inputs, route.version, rid)
                    return {"version": route.version, "outputs": outputs}
                except Exception as exc:
                    cause = _ray.unwrap(exc)
                    if not _redirectable(cause) or attempt == self.options.max_redirects:
                        _note_version(cause, route.version)
                        raise cause from None
                    await self.refresh()
                    if attempt:
                        await asyncio.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    async def stream_items(
        self, inputs: dict[str, Any], key: str | None, pin: str | None, fields: list[str] | None
    ) -> tuple[ServedRoute, AsyncIterator[dict[str, Any]]]:
        """The route and the version's stream, its first item already received (a refusal
        before it is re-routed like ``apredict``)."""
        for attempt in range(self.options.max_redirects + 1):
            route = await self.choose(key, pin)
            try:
                gen = await self._stream(self.rng.choice(route.deployments), inputs, route.version, fields)
                first = await gen.__anext__()
            except StopAsyncIteration:
                first = None
            except Exception as exc:
                cause = _ray.unwrap(exc)
                if not _redirectable(cause) or attempt == self.options.max_redirects:
                    raise cause from None
                await self.refresh()
                continue

            async def items(first: Any = first, gen: Any = gen) -> AsyncIterator[dict[str, Any]]:
                if first is not None:
                    yield first
                async for item in gen:
                    yield item

            return route, items()
        raise AssertionError("unreachable")

    async def fields_of(self, route: ServedRoute) -> dict[str, list[str]]:
        key = str(route.version)
        if key not in self._fields:
            if self.colocated:
                self._fields[key] = await (await self._host(route.deployments[0])).fields()
            else:
                self._fields[key] = await self._method(route.deployments[0], "fields").remote()
        return self._fields[key]

    def routes_config(self) -> dict[str, Any]:
        """The routes this replica follows, and the epoch its ``user_config`` carried."""
        return {**self.routes.to_config(), "user_config_epoch": self.user_config_epoch}

    # -- colocated versions (broadcast by the supervisor's ServeVersionHandle) ------------------
    async def host_version(self, key: str, spec: VersionSpec) -> dict[str, Any]:
        return await self.local.host(key, spec)

    async def unhost_version(self, key: str) -> bool:
        return await self.local.unhost(key)

    async def version_metrics(self, key: str, window_s: float | None = None) -> dict[str, Any] | None:
        return await self.local.metrics(key, window_s)

    async def drain_version(self, key: str, timeout_s: float = 30.0) -> dict[str, Any]:
        return await self.local.drain(key, timeout_s)

    async def resume_version(self, key: str) -> None:
        await self.local.resume(key)

    async def version_status(self, key: str) -> dict[str, Any]:
        return await self.local.status(key)

    async def predict_on(
        self, key: str, inputs: dict[str, Any], version: Any = None, request_id: str | None = None
    ) -> dict[str, Any]:
        """Run ``inputs`` on the version hosted as ``key`` (``ServeVersionHandle.execute``)."""
        return await (await self._host(key)).predict(inputs, version, request_id)


#: The Serve deployment class: ``IngressCore`` with its ASGI app late-bound (Serve calls
#: ``__serve_build_asgi_app__`` on each replica after the constructor).
ProgramIngress = serve.ingress()(IngressCore)
