"""The one place where the actor classes become Ray actors (STYLE.md 6).

Every class in this package is a plain Python class, unit-tested without Ray; these
functions apply ``ray.remote`` with the options the layer relies on and get-or-create the
named ones, so every worker on the cluster finds the same actor:

- ``get_signature_cache()``  ``dspex.signature_cache``           one per cluster
- ``get_provider_client()``  ``dspex.provider.<endpoint hash>``  one per provider endpoint
- ``get_supervisor()``       ``dspex.supervisor.<program>``      one per program
- ``start_predictor()``      ``dspex.predictor.<program>.<n>``   started by a supervisor (or by hand)

All live in the Ray namespace ``dspex``. Ray garbage-collects a non-detached actor when no
handle to it is left and fate-shares it with the process that created it (its owner), so the
handles of the named actors a process creates are held here for the process's lifetime, and
the long-lived ones are best created from the driver: ``dspex.cluster.init()`` creates the
signature cache, a ``RemoteLM`` creates its provider client where it is constructed (or pass
``detached=True`` to let them outlive their creator). Defaults: ``num_cpus=0`` (the actors wait on I/O;
reserving a CPU each would deadlock small nodes), async with a high ``max_concurrency``
(a call waiting on an LM must not block the others), and for predictors ``max_restarts=5``
with ``max_task_retries=0`` (a call in flight when a predictor dies fails fast to the
``ProgramClient``, which retries it on a live replica instead of Ray replaying it blindly).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from . import _ray
from .executions import ExecutionSink
from .spec import VersionSpec

__all__ = ["get_provider_client", "get_signature_cache", "get_supervisor", "release", "remote_class", "start_predictor"]

_lock = threading.Lock()
_classes: dict[type, Any] = {}


def remote_class(cls: type) -> Any:
    """``ray.remote(cls)``, made once per class (Ray exports a class definition per remote class)."""
    import ray

    with _lock:
        remote = _classes.get(cls)
        if remote is None:
            remote = ray.remote(cls)
            _classes[cls] = remote
        return remote


def _require_ray() -> None:
    if not _ray.ray_ready():
        from dspex.errors import ConfigurationError

        raise ConfigurationError(
            "Ray is not running in this process; call dspex.cluster.init() (or ray.init()) first."
        )


_held: dict[str, Any] = {}


def _named(cls: type, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]) -> Any:
    _require_ray()
    opts = dict(options)
    opts.update(name=name, namespace=_ray.NAMESPACE, get_if_exists=True)
    handle = remote_class(cls).options(**opts).remote(*args, **kwargs)
    with _lock:
        # Keep the first handle to each actor: a handle that get_if_exists returns for an
        # existing actor does not keep it alive (Ray counts the creator's handle).
        held = _held.get(name)
        if held is None or getattr(held, "_actor_id", None) != getattr(handle, "_actor_id", None):
            _held[name] = handle
    return handle


def release(name: str) -> None:
    """Drop this process's reference to a named actor (Ray may then collect it)."""
    with _lock:
        _held.pop(name, None)


def get_signature_cache(
    *,
    max_size: int = 10_000,
    strategy: str = "lru",
    ttl_s: float | None = None,
    lock_timeout_s: float = 30.0,
    detached: bool = False,
    options: dict[str, Any] | None = None,
) -> Any:
    """The cluster's ``SignatureCache`` actor (created with these settings if it does not exist)."""
    from .signature_cache import SignatureCache

    opts = _ray.options_for(options, num_cpus=0, max_concurrency=1000, max_restarts=-1)
    if detached:
        opts["lifetime"] = "detached"
    kwargs = {"max_size": max_size, "strategy": strategy, "ttl_s": ttl_s, "lock_timeout_s": lock_timeout_s}
    return _named(SignatureCache, _ray.SIGNATURE_CACHE_NAME, (), kwargs, opts)


def get_provider_client(config: Any, *, detached: bool = False, options: dict[str, Any] | None = None) -> Any:
    """The ``ProviderClient`` actor of ``config``'s endpoint (a ``ProviderConfig``)."""
    from .provider_client import ProviderClient

    opts = _ray.options_for(options, num_cpus=0, max_concurrency=1000, max_restarts=-1, max_task_retries=0)
    if detached:
        opts["lifetime"] = "detached"
    return _named(ProviderClient, config.actor_name, (config,), {}, opts)


def start_predictor(
    predictor_id: str,
    spec: VersionSpec | None = None,
    *,
    supervisor: str | None = None,
    sinks: Sequence[ExecutionSink] = (),
    signature_cache: Any = "auto",
    name: str | None = None,
    max_restarts: int = 5,
    options: dict[str, Any] | None = None,
) -> Any:
    """Start a ``Predictor`` actor. ``name``: register it under that name in the namespace."""
    from .predictor import Predictor

    _require_ray()
    opts = _ray.options_for(
        options, num_cpus=0, max_concurrency=4096, max_restarts=max_restarts, max_task_retries=0
    )
    if name is not None:
        opts.update(name=name, namespace=_ray.NAMESPACE)
    return (
        remote_class(Predictor)
        .options(**opts)
        .remote(predictor_id, spec, supervisor=supervisor, sinks=list(sinks), signature_cache=signature_cache)
    )


def get_supervisor(program: str, *, detached: bool = False, options: dict[str, Any] | None = None, **config: Any) -> Any:
    """The ``HotSwapSupervisor`` of ``program`` (created with ``config`` if it does not exist).

    ``config``: the supervisor's keyword arguments (``replicas``, ``tick_s``, ``sinks``,
    ``predictor_options``, ...)."""
    from .supervisor import HotSwapSupervisor

    opts = _ray.options_for(options, num_cpus=0, max_concurrency=1000, max_restarts=0)
    if detached:
        opts["lifetime"] = "detached"
    return _named(HotSwapSupervisor, _ray.supervisor_name(program), (program,), config, opts)
