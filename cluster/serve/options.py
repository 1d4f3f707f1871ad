"""``ServeOptions``: the Serve settings of one program's application, with defaults chosen for
I/O-bound LM programs (each request spends ~100 ms+ waiting on an LM, almost no CPU).

Why these defaults (benchmarks/serve.py, notes/ray-measured.md, 2 cores):

- ``max_ongoing_requests``: Serve's default of 5 per replica throttled a 100 ms LM call to
  6-16 req/s; a replica of ours spends its time awaiting HTTP, so it takes 256 at once. With
  256, one ingress and one version replica served a 100 ms LM program at 69 / 102 / 143
  req/s through the HTTP proxy and 93 / 197 / 312 req/s through a handle at concurrency
  16 / 64 / 256, with no failures (benchmarks/serve.py, 2026-11-23); the limit there is CPU
  (two Serve hops per request on 2 cores), not the replicas' concurrency.
- ``max_queued_requests``: past this many requests waiting in a handle for a replica, Serve
  rejects at once (we answer 503 + Retry-After) instead of letting latency grow without bound.
- autoscaling on ongoing requests (``target_ongoing_requests``): a version scales out when
  its replicas average more than that many requests in flight; 1 replica minimum keeps
  the first request fast.
- ``num_cpus`` 0 for the ingress and versions: they wait on I/O; reserving a CPU each leaves a
  2-core node unable to place an ingress plus two versions during a rollout.

Everything here is plain data (JSON-able), because it travels in Serve config files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from dspex.errors import ConfigurationError

__all__ = ["ADMIN_TOKEN_ENV", "THROUGHPUT_ENV", "ServeOptions"]

#: the environment variable holding the admin endpoints' bearer token (in the replicas)
ADMIN_TOKEN_ENV = "DSPEX_SERVE_ADMIN_TOKEN"

#: What ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` sets inside a replica (ray/serve/_private/
#: constants.py), as per-replica environment: request handlers on the replica's own event loop
#: instead of a second thread's (a thread handoff per request), access-log lines written in
#: batches of 1000 instead of one write per request, handles' routers on the same loop, and
#: replica logs not copied to stderr. The cluster-wide parts of that profile (direct ingress,
#: gRPC between all replicas) stay the operator's choice.
THROUGHPUT_ENV: dict[str, str] = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_LOG_TO_STDERR": "0",
}


@dataclass(frozen=True)
class ServeOptions:
    #: HTTP route prefix of the program's application ("" or "/": the root)
    route_prefix: str = "/"
    max_ongoing_requests: int = 256
    max_queued_requests: int = 1024
    #: autoscaling of each version deployment (ongoing requests per replica)
    min_replicas: int = 1
    max_replicas: int = 4
    target_ongoing_requests: float = 64.0
    #: ingress replicas (fixed; the HTTP proxy, not the ingress, is the bottleneck on small nodes)
    ingress_replicas: int = 1
    ingress_num_cpus: float = 0.0
    version_num_cpus: float = 0.0
    #: seconds a client is told to wait after a 503 (Retry-After)
    retry_after_s: int = 1
    #: request headers that carry the sticky key (first present wins) and the pinned version
    sticky_headers: tuple[str, ...] = ("x-dspex-session", "x-dspex-user")
    version_header: str = "x-dspex-version"
    admin_token_env: str = ADMIN_TOKEN_ENV
    #: SHA-256 hex digest of the admin token, for replicas whose environment cannot be set
    #: (the digest is not a secret; the token itself never goes into a config)
    admin_token_sha256: str | None = None
    #: times the ingress re-sends a request a draining / removed version refused
    max_redirects: int = 5
    #: ingress long-poll of the supervisor's routing table
    watch_timeout_s: float = 5.0
    #: Ray Serve's graceful shutdown of a removed version's replicas
    graceful_shutdown_timeout_s: float = 30.0
    #: extra ``ray_actor_options`` for the replicas that run versions (e.g. runtime_env): the
    #: version deployments' (split) or the ingress's (colocated)
    version_actor_options: dict[str, Any] = field(default_factory=dict)
    #: Serve's ``LoggingConfig`` for the program's deployments (None: Serve's defaults)
    logging_config: dict[str, Any] | None = None
    #: where versions run: in the ingress replicas (one Serve hop per request; the default) or
    #: in one deployment per version (``False``: the split topology; two hops)
    colocate_versions: bool = True
    #: record every dspex event of the program in the ingress replicas' ``/metrics`` (colocated;
    #: off: only the serve request spans, as the split topology's ingress)
    program_metrics: bool = False
    #: split topology: the ingress calls version deployments over Serve's inter-replica gRPC
    #: (``DeploymentHandle.options(_by_reference=False)``) rather than Ray actor calls
    grpc_handles: bool = True
    #: run this application's replicas with the replica-side part of Serve's own
    #: ``RAY_SERVE_THROUGHPUT_OPTIMIZED`` profile (``THROUGHPUT_ENV``)
    throughput_profile: bool = True

    def __post_init__(self) -> None:
        if self.max_ongoing_requests < 1 or self.max_queued_requests < -1:
            raise ConfigurationError(
                f"ServeOptions needs max_ongoing_requests >= 1 and max_queued_requests >= -1 (-1: no limit); "
                f"got {self.max_ongoing_requests} and {self.max_queued_requests}."
            )
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ConfigurationError(
                f"ServeOptions needs 1 <= min_replicas <= max_replicas, got {self.min_replicas} and {self.max_replicas}."
            )
        if self.target_ongoing_requests <= 0 or self.ingress_replicas < 1 or self.retry_after_s < 0:
            raise ConfigurationError(
                "ServeOptions needs target_ongoing_requests > 0, ingress_replicas >= 1 and retry_after_s >= 0; "
                f"got {self.target_ongoing_requests}, {self.ingress_replicas}, {self.retry_after_s}."
            )
        if self.route_prefix and not self.route_prefix.startswith("/"):
            raise ConfigurationError(f"A route prefix starts with '/', got {self.route_prefix!r}.")
        object.__setattr__(self, "sticky_headers", tuple(h.lower() for h in self.sticky_headers))
        object.__setattr__(self, "version_header", self.version_header.lower())

    @property
    def prefix(self) -> str:
        """The route prefix without a trailing slash ("" for the root)."""
        return self.route_prefix.rstrip("/")

    def autoscaling_config(self) -> dict[str, Any]:
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "initial_replicas": self.min_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
        }

    def actor_options(self, num_cpus: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """``ray_actor_options`` of a replica: ``num_cpus``, ``extra`` and, with
        ``throughput_profile``, ``THROUGHPUT_ENV`` under the runtime_env's env_vars (a variable
        the caller sets wins)."""
        options: dict[str, Any] = {"num_cpus": num_cpus, **(extra or {})}
        if self.throughput_profile:
            runtime_env = dict(options.get("runtime_env") or {})
            runtime_env["env_vars"] = {**THROUGHPUT_ENV, **(runtime_env.get("env_vars") or {})}
            options["runtime_env"] = runtime_env
        return options

    def version_deployment_options(self) -> dict[str, Any]:
        """A version deployment's replica settings (split topology)."""
        return {
            "autoscaling_config": self.autoscaling_config(),
            "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
            "ray_actor_options": self.actor_options(self.version_num_cpus, self.version_actor_options),
        }

    def ingress_deployment_options(self) -> dict[str, Any]:
        """The ingress deployment's replica settings. Colocated, the ingress runs the versions:
        it autoscales like a version deployment and takes the versions' actor options."""
        if self.colocate_versions:
            return {
                "autoscaling_config": self.autoscaling_config(),
                "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
                "ray_actor_options": self.actor_options(self.ingress_num_cpus, self.version_actor_options),
            }
        return {"num_replicas": self.ingress_replicas, "ray_actor_options": self.actor_options(self.ingress_num_cpus)}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sticky_headers"] = list(self.sticky_headers)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ServeOptions:
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigurationError(f"Unknown serve option(s) {unknown}; known: {sorted(known)}.")
        if "sticky_headers" in data:
            data["sticky_headers"] = tuple(data["sticky_headers"])
        return cls(**data)
