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

__all__ = ["ADMIN_TOKEN_ENV", "ServeOptions"]

#: the environment variable holding the admin endpoints' bearer token (in the replicas)
ADMIN_TOKEN_ENV = "DSPEX_SERVE_ADMIN_TOKEN"


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
    #: extra ``ray_actor_options`` for version replicas (e.g. runtime_env)
    version_actor_options: dict[str, Any] = field(default_factory=dict)

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
