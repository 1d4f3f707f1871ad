"""The worker side of the cluster-wide signature cache: two tiers.

1. Process-local: the core's cache (the compiled form on the signature class, and the
   process table by content hash). A hit there is an attribute read and never touches the
   actor, so a prediction never waits on the actor for a signature it has seen.
2. Cluster-wide: the ``SignatureCache`` actor. On a local miss the worker asks it for the
   hash: it gets the artifacts (and hydrates them locally), or the compile lock (and compiles,
   then publishes), or waits while another worker compiles the same signature.

``warm_program`` runs this for every predictor of a program when a Predictor loads a version,
so the LM-call path itself only ever sees tier 1.

``cache`` is a Ray actor handle of ``SignatureCache`` or, in tests and single-process use,
a plain ``SignatureCache`` instance; both are driven through the same calls.
"""

from __future__ import annotations

import inspect
import time
import uuid
from typing import Any

from dspex import telemetry
from dspex.signatures.compiled import CompiledSignature, compile_signature, content_hash

from ._events import SIGNATURE_SHARED
from ._ray import unwrap
from .signature_artifacts import SignatureArtifacts, adopt, build_artifacts, hydrate, local_compiled

__all__ = ["SharedOutcome", "compile_shared", "compile_shared_sync", "warm_program"]


class SharedOutcome:
    LOCAL = "local"  # found in this process
    FETCHED = "fetched"  # hydrated from another worker's artifacts
    COMPILED = "compiled"  # this worker held the lock and compiled


async def _call(cache: Any, method: str, *args: Any) -> Any:
    fn = getattr(cache, method)
    remote = getattr(fn, "remote", None)
    try:
        if remote is not None:
            return await remote(*args)
        result = fn(*args)
        return await result if inspect.isawaitable(result) else result
    except BaseException as exc:
        cause = unwrap(exc)
        if cause is exc:
            raise
        raise cause from exc


async def compile_shared(sig: Any, cache: Any | None, *, max_wait_s: float = 60.0) -> tuple[CompiledSignature, str]:
    """The compiled form of ``sig`` through both tiers; returns (compiled, outcome)."""
    t0 = time.perf_counter()
    found = local_compiled(sig)
    if found is not None:
        return found, SharedOutcome.LOCAL
    if cache is None:
        return compile_signature(sig), SharedOutcome.COMPILED
    h = content_hash(sig)
    owner = uuid.uuid4().hex
    kind, artifacts = await _call(cache, "acquire", h, owner, max_wait_s)
    wait_s = time.perf_counter() - t0
    if kind == "cached" and isinstance(artifacts, SignatureArtifacts):
        compiled = adopt(sig, hydrate(sig, artifacts))
        outcome = SharedOutcome.FETCHED
    else:
        try:
            compiled = compile_signature(sig)
            artifacts = build_artifacts(sig, compiled)
        except BaseException:
            await _call(cache, "release", h, owner)
            raise
        await _call(cache, "publish", h, owner, artifacts)
        outcome = SharedOutcome.COMPILED
    telemetry.emit(
        SIGNATURE_SHARED,
        {"duration_s": time.perf_counter() - t0, "wait_s": wait_s},
        {"outcome": outcome, "signature": getattr(sig, "__name__", "")},
    )
    return compiled, outcome


def compile_shared_sync(sig: Any, cache: Any | None, *, max_wait_s: float = 60.0) -> tuple[CompiledSignature, str]:
    """``compile_shared`` for synchronous callers (Ray tasks, scripts)."""
    from dspex.utils.asyncio_bridge import run_sync

    return run_sync(compile_shared(sig, cache, max_wait_s=max_wait_s))


async def warm_program(program: Any, cache: Any | None) -> dict[str, str]:
    """Compile (or fetch) the signature of every predictor in ``program``.

    Returns ``{predictor path: outcome}``."""
    outcomes: dict[str, str] = {}
    named = program.named_predictors() if hasattr(program, "named_predictors") else []
    for name, predictor in named:
        signature = getattr(predictor, "signature", None)
        if signature is None:
            continue
        _, outcome = await compile_shared(signature, cache)
        outcomes[name] = outcome
    return outcomes
