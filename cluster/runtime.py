"""``dspex.cluster.init()``: start or join Ray with defaults that suit dspex.

- Joins the Ray already running in this process (``ray.is_initialized()``) instead of
  starting a second one; ``address="auto"`` (or a ``ray://`` / ``host:port`` address) joins a
  cluster; no address starts a local Ray.
- Local runs: token authentication off (``RAY_AUTH_MODE=disabled``; Ray 2.60 turns it on by
  default and writes a token under $HOME), usage stats off, no dashboard unless asked
  (it costs about 1 GiB RSS on a small node: notes/ray-measured.md).
- dspex metrics go to ``ray.util.metrics`` (``dspex.cluster.ray_metrics``): in the driver,
  and in every worker through ``runtime_env["worker_process_setup_hook"]``.
- The cluster-wide ``SignatureCache`` actor is created (get-or-create, by name).

``runtime_env`` is passed through; shipping dspex itself to a remote cluster (a wheel in
``py_modules``) is the cluster seam's job (a later issue) and plugs in here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ClusterInfo", "init", "ray_init_kwargs", "shutdown"]

_started_here = False


@dataclass(frozen=True)
class ClusterInfo:
    address: str
    started: bool  # True when this call started Ray (False: joined a running one)
    namespace: str | None
    dashboard_url: str | None
    resources: dict[str, float] = field(default_factory=dict)
    signature_cache: Any = field(default=None, compare=False, repr=False)


def _local(address: str | None) -> bool:
    return address in (None, "", "local")


def ray_init_kwargs(
    address: str | None = None,
    *,
    include_dashboard: bool = False,
    num_cpus: int | None = None,
    namespace: str | None = None,
    runtime_env: dict[str, Any] | None = None,
    ray_metrics: bool = True,
    log_to_driver: bool = True,
    **ray_kwargs: Any,
) -> dict[str, Any]:
    """The ``ray.init`` arguments ``init`` uses (pure; see the module docstring)."""
    env = dict(runtime_env or {})
    if ray_metrics and "worker_process_setup_hook" not in env:
        from .ray_metrics import WORKER_SETUP_HOOK

        env["worker_process_setup_hook"] = WORKER_SETUP_HOOK
    kwargs: dict[str, Any] = {
        "include_dashboard": include_dashboard,
        "ignore_reinit_error": True,
        "log_to_driver": log_to_driver,
        "namespace": namespace,
        **ray_kwargs,
    }
    if env:
        kwargs["runtime_env"] = env
    if _local(address):
        if num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
    else:
        kwargs["address"] = address
    return kwargs


def init(
    address: str | None = None,
    *,
    include_dashboard: bool = False,
    num_cpus: int | None = None,
    namespace: str | None = None,
    runtime_env: dict[str, Any] | None = None,
    ray_metrics: bool = True,
    signature_cache: bool = True,
    log_to_driver: bool = True,
    **ray_kwargs: Any,
) -> ClusterInfo:
    """Start or join Ray (see the module docstring). Extra keyword arguments go to ``ray.init``."""
    global _started_here
    if _local(address):
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    started = False
    dashboard: str | None = None
    if not ray.is_initialized():
        context = ray.init(
            **ray_init_kwargs(
                address,
                include_dashboard=include_dashboard,
                num_cpus=num_cpus,
                namespace=namespace,
                runtime_env=runtime_env,
                ray_metrics=ray_metrics,
                log_to_driver=log_to_driver,
                **ray_kwargs,
            )
        )
        started = True
        _started_here = _local(address)
        dashboard = getattr(context, "dashboard_url", None) or None
    if ray_metrics:
        from .ray_metrics import enable_ray_metrics

        enable_ray_metrics()
    cache = None
    if signature_cache:
        from dspex.actors.factory import get_signature_cache

        cache = get_signature_cache()
    ctx = ray.get_runtime_context()
    return ClusterInfo(
        address=str(ctx.gcs_address),
        started=started,
        namespace=ctx.namespace,
        dashboard_url=dashboard if include_dashboard else None,
        resources={k: float(v) for k, v in ray.cluster_resources().items()},
        signature_cache=cache,
    )


def shutdown() -> None:
    """Shut Ray down if ``init`` started it in this process (a joined Ray is left alone)."""
    global _started_here
    import ray

    if _started_here and ray.is_initialized():
        ray.shutdown()
    _started_here = False
