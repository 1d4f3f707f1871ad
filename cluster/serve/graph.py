"""How the ``HotSwapSupervisor`` drives a program's Serve application.

The supervisor (``dspex.actors``) owns versions, traffic weights, staged rollouts and
rollback; it starts a version by calling ``spawn(predictor_id)`` and then
``handle.load.remote(spec)``, reads ``handle.metrics.remote(window_s)`` for its health checks,
and retires a version with ``drain`` then ``kill(handle)``. For a served program those hooks
are ``ServeSpawner`` and ``kill_serve_version``: each "predictor" of the supervisor is a
``ServeVersionHandle`` standing for one version wherever Serve runs it, so the supervisor's
routing table lists, per version, the name the ingress sends to.

Two topologies (``ServeOptions.colocate_versions``):

- **colocated** (the default): the application is the ingress deployment alone, and every
  ingress replica hosts each live version in-process (``hosting.py``). A request costs one
  Serve hop, as a bare deployment's does. Measured on 2 cores (benchmarks/serve.py) the split
  topology's second hop cost 20-45 % of the throughput, the colocated one stays within a few
  % of a bare deployment making the same LM call (figures in ``options.py``).
- **split**: the issue's original shape, the ingress plus one deployment per version, each
  autoscaling on its own; the ingress calls versions over cached DeploymentHandles
  (``grpc_handles``: Serve's inter-replica gRPC). Versions then scale and fail independently
  of the ingress, at the price of the second hop.

The link, end to end:

- **Topology** (a version added or removed). Split: the handle asks the process's
  ``AppGraph``, which re-runs ``serve.run`` with the whole application (ingress + one
  deployment per live version); every deployment carries a stable code version, so Serve
  leaves the unchanged ones alone and only starts or gracefully stops the one that changed.
  Colocated: ``serve.run`` once, for the ingress; a version is added by broadcasting
  ``host_version(name, spec)`` to every ingress replica (the supervisor publishes the version
  only once all of them host it) and removed with ``unhost_version``. An ingress replica
  that starts later (autoscaling, a restart) loads the live versions from the supervisor
  before it takes traffic.
- **Weights**: the supervisor publishes a new routing table (new epoch). Each ingress replica
  long-polls ``supervisor.watch(epoch)`` and applies it at once (the fast path); the
  ``AppGraph`` follows the same table and writes it into the ingress's ``user_config`` (a
  lightweight update: Serve calls ``reconfigure`` on the live replicas, no restart), which
  is the durable copy a restarted ingress replica starts from. The higher epoch wins.
- **Health**: ``metrics`` broadcasts to every replica hosting the version (its deployment's,
  or every ingress replica's with the version's name) and merges their ``MetricsView``s, so a
  rollout's health check sees all of the version's traffic.
- **Drain**: ``drain`` broadcasts too; a drained host refuses new calls as ``draining`` and
  the ingress re-routes them by the new table, so a swap drops no request. Removal then lets
  Serve's graceful shutdown (split) or ``unhost_version`` (colocated) finish.

``pipelines/`` never imports this: it drives the supervisor, and the application follows.
All the code here runs in the supervisor's process (the hooks are pickled into it), except
``ServeVersionHandle.execute`` / ``metrics``, which work from any process.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from dspex.actors.metrics import MetricsView
from dspex.actors.spec import VersionSpec

from dspex.errors import DeploymentError

from .options import ServeOptions
from .routes import RouteSet

__all__ = ["AppGraph", "ServeSpawner", "ServeVersionHandle", "deployment_name", "get_graph", "kill_serve_version"]

log = logging.getLogger("dspex.cluster.serve")

INGRESS = "ingress"
_BROADCAST_TIMEOUT_S = 30.0
_BROADCAST_RETRY_S = 10.0


def deployment_name(version: int | str) -> str:
    """A Serve deployment name for a version: ``v<version>-<6 hex>`` (unique per deploy, so a
    version redeployed by a rollback never collides with its own retiring deployment)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", str(version))[:60]
    return f"v{safe}-{uuid.uuid4().hex[:6]}"


def as_deployment(cls: type) -> Any:
    """``serve.deployment(cls)`` (typed loosely: Ray's overloads confuse mypy)."""
    from ray import serve

    return serve.deployment(cls)


async def broadcast(handle: Any, method: str, *args: Any) -> list[Any]:
    """``method(*args)`` on every running replica behind ``handle``; results, exceptions included.

    Serve's router counts no replica as running while a lightweight update (a ``user_config``
    change: a weight change reaching the ingress) reconfigures it, ~0.1 s, and refuses a
    broadcast then with ``DeploymentUnavailableError``: retried here for up to
    ``_BROADCAST_RETRY_S``, so a health check or a drain does not fail on a weight change.
    """
    delay_s = 0.02
    deadline = time.monotonic() + _BROADCAST_RETRY_S
    while True:
        try:
            response = handle.broadcast(method, *args)
            results: list[Any] = await response.results_async(timeout_s=_BROADCAST_TIMEOUT_S, return_exceptions=True)
            return results
        except Exception as exc:
            if type(exc).__name__ != "DeploymentUnavailableError" or time.monotonic() + delay_s > deadline:
                raise
        await asyncio.sleep(delay_s)
        delay_s = min(0.25, delay_s * 2)


def _digest(*parts: Any) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()


class AppGraph:
    """The shape of one program's Serve application, and the one writer of it in this process.

    Calls to ``serve.run`` are serialized by a lock (each carries the whole application), so
    a version added while routes are pushed never loses either change.
    """

    def __init__(self, app: str, program: str, options: ServeOptions, adopt: dict[str, str] | None = None) -> None:
        self.app = app
        self.program = program
        self.options = options
        self.versions: dict[str, VersionSpec] = {}  # deployment name -> spec, in deploy order
        self.routes: RouteSet = RouteSet(program)
        self.adoptable: dict[str, str] = dict(adopt or {})  # version (text) -> deployment from a config file
        self._lock = threading.Lock()
        self._push_task: asyncio.Task[None] | None = None
        self._dirty = False
        self._follower: asyncio.Task[None] | None = None
        self._ingress: Any = None  # DeploymentHandle to the ingress (broadcasts)
        self.runs = 0

    # -- the application ----------------------------------------------------------------------
    def application(self) -> Any:
        from .ingress import ProgramIngress
        from .version import VersionReplica

        o = self.options
        version_dep = as_deployment(VersionReplica)
        bound = []
        for name, spec in ([] if o.colocate_versions else self.versions.items()):
            bound.append(
                version_dep.options(
                    name=name,
                    version=_digest("version", name, spec.describe()),
                    _internal=True,
                    max_ongoing_requests=o.max_ongoing_requests,
                    max_queued_requests=o.max_queued_requests,
                    logging_config=o.logging_config,
                    **o.version_deployment_options(),
                ).bind(spec, self.app)
            )
        ingress = as_deployment(ProgramIngress).options(
            name=INGRESS,
            version=_digest("ingress", self.program, o.to_dict()),
            _internal=True,
            max_ongoing_requests=o.max_ongoing_requests,
            max_queued_requests=o.max_queued_requests,
            user_config=self.routes.to_config(),
            logging_config=o.logging_config,
            **o.ingress_deployment_options(),
        )
        # The version deployments (split mode) are bound as arguments only so that they belong
        # to the application; the ingress looks handles up by the names in its routing table.
        return ingress.bind(self.program, self.app, o.to_dict(), *bound)

    def _run(self, wait: bool) -> None:
        from ray import serve

        with self._lock:
            app = self.application()
            prefix = self.options.route_prefix or "/"
            if wait:
                serve.run(app, name=self.app, route_prefix=prefix)
            else:
                serve.run_many(
                    [serve.RunTarget(target=app, name=self.app, route_prefix=prefix)],
                    wait_for_applications_running=False,
                )
            self.runs += 1

    async def apply(self) -> None:
        """Deploy the application as it stands now and wait until Serve reports it running."""
        await asyncio.to_thread(self._run, True)

    # -- versions -----------------------------------------------------------------------------
    async def add(self, spec: VersionSpec) -> str:
        """Add a deployment for ``spec`` (or adopt the one a config file deployed); its name.
        Colocated: the version is hosted by every ingress replica before this returns."""
        adopted = self.adoptable.pop(str(spec.version), None)
        if adopted is not None and adopted not in self.versions:
            self.versions[adopted] = spec
            log.info("%s: adopted deployment %s for version %r", self.app, adopted, spec.version)
            if self.options.colocate_versions:
                await self._host(adopted, spec)
            return adopted
        name = deployment_name(spec.version)
        self.versions[name] = spec
        try:
            if not self.options.colocate_versions:
                await self.apply()
            else:
                if self.runs == 0:  # the application itself (ingress only) comes with the first version
                    await self.apply()
                await self._host(name, spec)
        except BaseException:
            self.versions.pop(name, None)
            raise
        return name

    async def remove(self, name: str) -> None:
        if self.versions.pop(name, None) is None:
            return
        if self.options.colocate_versions:
            await self.broadcast("unhost_version", name)
        else:
            await self.apply()

    async def broadcast(self, method: str, *args: Any) -> list[Any]:
        """``method(*args)`` on every ingress replica; results (exceptions included)."""
        from ray import serve

        if self._ingress is None:
            self._ingress = serve.get_deployment_handle(INGRESS, self.app)
        return await broadcast(self._ingress, method, *args)

    async def _host(self, name: str, spec: VersionSpec) -> None:
        from dspex.actors import _ray

        results = await self.broadcast("host_version", name, spec)
        failed = [_ray.unwrap(r) for r in results if isinstance(r, BaseException)]
        if failed or not results:
            await self.broadcast("unhost_version", name)  # all or none
            cause = _ray.describe(failed[0]) if failed else "no ingress replica is running"
            raise DeploymentError(f"{self.app}: could not host {spec.label} in the ingress replicas: {cause}", hint="")

    # -- routes into the ingress's user_config --------------------------------------------------
    def push_routes(self, routes: RouteSet) -> None:
        """Write ``routes`` into the ingress's ``user_config`` (coalesced, in the background)."""
        if routes.epoch <= self.routes.epoch:
            return
        self.routes = routes
        self._dirty = True
        if self._push_task is None or self._push_task.done():
            self._push_task = asyncio.get_running_loop().create_task(self._push_loop())

    async def _push_loop(self) -> None:
        while self._dirty:
            self._dirty = False
            if not self.versions:
                return  # no application yet: the first add deploys with the latest routes
            try:
                await asyncio.to_thread(self._run, False)
            except Exception:
                log.warning("%s: could not write routes to the ingress user_config", self.app, exc_info=True)

    def follow(self, supervisor: Any) -> None:
        """Follow ``supervisor``'s routing table into the ingress's user_config."""
        if self._follower is None or self._follower.done():
            self._follower = asyncio.get_running_loop().create_task(self._follow(supervisor))

    async def _follow(self, supervisor: Any) -> None:
        epoch = -1
        failures = 0
        while True:
            try:
                table = await supervisor.watch.remote(epoch, 10.0)
                failures = 0
            except Exception:
                failures += 1
                if failures > 20:
                    log.warning("%s: stopped following the supervisor's routes", self.app)
                    return
                await asyncio.sleep(min(2.0, 0.05 * 2**failures))
                continue
            if table is None:
                continue
            epoch = table.epoch
            self.push_routes(RouteSet.from_table(table))


_graphs: dict[str, AppGraph] = {}
_graphs_lock = threading.Lock()


def get_graph(app: str, program: str, options: ServeOptions, adopt: dict[str, str] | None = None) -> AppGraph:
    """This process's ``AppGraph`` of ``app`` (created on first use)."""
    with _graphs_lock:
        graph = _graphs.get(app)
        if graph is None:
            graph = _graphs[app] = AppGraph(app, program, options, adopt)
        return graph


def forget_graph(app: str) -> None:
    with _graphs_lock:
        _graphs.pop(app, None)


# -- the supervisor's hooks -------------------------------------------------------------------
class _Remote:
    """``handle.<method>.remote(...)``: a coroutine, like a Ray actor method's awaitable."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Any) -> None:
        self._fn = fn

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)


#: a version's control method -> the ingress method reaching its colocated hosts
_COLOCATED = {
    "metrics": "version_metrics",
    "drain": "drain_version",
    "resume": "resume_version",
    "status": "version_status",
}


@dataclass
class ServeVersionHandle:
    """Stands for one version's Serve deployment where the supervisor expects a predictor."""

    app: str
    program: str
    predictor_id: str
    options: dict[str, Any] = field(default_factory=dict)
    adopt: dict[str, str] = field(default_factory=dict)
    deployment: str | None = None

    def _graph(self) -> AppGraph:
        return get_graph(self.app, self.program, ServeOptions.from_dict(self.options), self.adopt)

    @property
    def colocated(self) -> bool:
        return ServeOptions.from_dict(self.options).colocate_versions

    def _handle(self) -> Any:
        if self.deployment is None:
            raise DeploymentError(f"{self.predictor_id} hosts no version yet (load it first).", hint="")
        from ray import serve

        return serve.get_deployment_handle(self.deployment, self.app)

    async def _broadcast(self, method: str, *args: Any) -> list[Any]:
        """``method`` on every replica hosting the version: the version's deployment (split), or
        every ingress replica, naming the version (colocated; see ``_COLOCATED``)."""
        if self.deployment is None:
            return []
        if self.colocated:
            return await self._graph().broadcast(_COLOCATED[method], self.deployment, *args)
        return await broadcast(self._handle(), method, *args)

    # -- what the supervisor calls ---------------------------------------------------------------
    async def _load(self, spec: VersionSpec) -> dict[str, Any]:
        if self.deployment is not None:
            raise DeploymentError(
                f"{self.predictor_id} already serves deployment {self.deployment}; Serve versions are not reloaded in place.",
                hint="",
            )
        self.deployment = await self._graph().add(spec)
        return {"predictor": self.predictor_id, "deployment": self.deployment, "version": spec.version}

    async def _drain(self, timeout_s: float = 30.0) -> dict[str, Any]:
        results = await self._broadcast("drain", timeout_s)
        drained = all(isinstance(r, dict) and r.get("drained") for r in results)
        return {"drained": drained, "replicas": len(results)}

    async def _resume(self) -> None:
        await self._broadcast("resume")

    async def _unload(self) -> dict[str, Any]:
        await self.remove()
        return {"predictor": self.predictor_id, "deployment": None}

    async def remove(self) -> None:
        """Take the version's deployment out of the application (Serve stops it gracefully)."""
        name, self.deployment = self.deployment, None
        if name is not None:
            await self._graph().remove(name)

    async def _metrics(self, window_s: float | None = None) -> dict[str, Any]:
        results = await self._broadcast("metrics", window_s)
        views = [MetricsView.from_dict(r) for r in results if isinstance(r, dict)]
        return MetricsView.merged(views).to_dict()

    async def _ready(self) -> bool:
        return True

    async def _status(self) -> dict[str, Any]:
        results = await self._broadcast("status")
        return {
            "predictor": self.predictor_id,
            "deployment": self.deployment,
            "replicas": [r if isinstance(r, dict) else {"error": repr(r)} for r in results],
        }

    async def _execute(self, inputs: dict[str, Any], version: Any = None, request_id: str | None = None) -> Any:
        if self.colocated:
            from ray import serve

            if self.deployment is None:
                raise DeploymentError(f"{self.predictor_id} hosts no version yet (load it first).", hint="")
            ingress = serve.get_deployment_handle(INGRESS, self.app)
            return await ingress.predict_on.remote(self.deployment, inputs, version, request_id)
        return await self._handle().predict.remote(inputs, version, request_id)

    load = property(lambda self: _Remote(self._load))
    drain = property(lambda self: _Remote(self._drain))
    resume = property(lambda self: _Remote(self._resume))
    unload = property(lambda self: _Remote(self._unload))
    metrics = property(lambda self: _Remote(self._metrics))
    ready = property(lambda self: _Remote(self._ready))
    status = property(lambda self: _Remote(self._status))
    execute = property(lambda self: _Remote(self._execute))


@dataclass(frozen=True)
class ServeSpawner:
    """The supervisor's ``spawn``: a ``ServeVersionHandle`` per "predictor" (one per version).

    Also starts the ``AppGraph``'s follower of the supervisor's routing table."""

    app: str
    program: str
    options: dict[str, Any] = field(default_factory=dict)
    adopt: dict[str, str] = field(default_factory=dict)

    def __call__(self, predictor_id: str) -> ServeVersionHandle:
        graph = get_graph(self.app, self.program, ServeOptions.from_dict(self.options), self.adopt)
        supervisor = _own_supervisor(self.program)
        if supervisor is not None:
            try:
                graph.follow(supervisor)
            except RuntimeError:  # no running loop (spawn called outside the supervisor)
                pass
        return ServeVersionHandle(self.app, self.program, predictor_id, dict(self.options), dict(self.adopt))


_removals: set[asyncio.Task[None]] = set()


def kill_serve_version(handle: Any) -> None:
    """The supervisor's ``kill``: remove the version's deployment (in the background)."""
    if isinstance(handle, ServeVersionHandle):
        task = asyncio.get_running_loop().create_task(handle.remove())
        _removals.add(task)
        task.add_done_callback(_removals.discard)
        return
    from dspex.actors.supervisor import _kill_ray

    _kill_ray(handle)


def _own_supervisor(program: str) -> Any:
    from dspex.actors import _ray

    return _ray.lookup(_ray.supervisor_name(program))
