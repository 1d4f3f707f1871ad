"""Small Ray helpers shared by the actors. Ray is imported inside functions only, so the actor
classes (and their unit tests) work in a process that never imports Ray."""

from __future__ import annotations

import sys
from typing import Any

__all__ = [
    "NAMESPACE",
    "SIGNATURE_CACHE_NAME",
    "actor_died",
    "current_actor_id",
    "describe",
    "lookup",
    "options_for",
    "ray_ready",
    "supervisor_name",
    "unwrap",
    "was_reconstructed",
]

#: every named dspex actor lives in this Ray namespace, so any job on the cluster finds it
NAMESPACE = "dspex"


def ray_ready() -> bool:
    """True when this process is connected to Ray (a driver after ``ray.init`` or a worker).

    Checked through ``sys.modules`` first so a process that never imported Ray pays nothing.
    """
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


def was_reconstructed() -> bool:
    """True inside an actor that Ray restarted after a crash (``max_restarts``)."""
    if not ray_ready():
        return False
    import warnings

    import ray

    ctx = ray.get_runtime_context()
    if ctx.get_actor_id() is None:
        return False
    with warnings.catch_warnings():  # Ray 2.60 warns about an API it uses internally here
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(ctx.was_current_actor_reconstructed)


def current_actor_id() -> str | None:
    if not ray_ready():
        return None
    import ray

    actor_id = ray.get_runtime_context().get_actor_id()
    return str(actor_id) if actor_id else None


def unwrap(exc: BaseException) -> BaseException:
    """The exception an actor method raised, out of Ray's ``RayTaskError`` wrapper.

    Ray re-raises a remote exception as a class deriving from both ``RayTaskError`` and the
    original type, with the original in ``.cause``; callers want the dspex error itself.
    """
    if not ray_ready() and "ray" not in sys.modules:
        return exc
    from ray.exceptions import RayTaskError

    if isinstance(exc, RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            return cause
    return exc


def actor_died(exc: BaseException) -> bool:
    """True when a call failed because the actor process died or is restarting, so the
    request may not have run and can be sent again."""
    if "ray" not in sys.modules:
        return False
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return isinstance(exc, ActorDiedError | ActorUnavailableError | RayActorError)


def describe(exc: BaseException) -> str:
    """A short one-line description of an exception, for messages."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def options_for(options: dict[str, Any] | None, **defaults: Any) -> dict[str, Any]:
    """Actor options: the defaults, overridden by what the caller gave."""
    out = dict(defaults)
    out.update(options or {})
    return out


#: the one cluster-wide signature cache actor
SIGNATURE_CACHE_NAME = "dspex.signature_cache"


def supervisor_name(program: str) -> str:
    return f"dspex.supervisor.{program}"


def lookup(name: str) -> Any | None:
    """The named dspex actor's handle, or None when it does not exist (or Ray is not up)."""
    if not ray_ready():
        return None
    import ray

    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None
