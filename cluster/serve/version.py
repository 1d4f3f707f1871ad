"""One program version in a Serve replica: ``VersionHost`` (the work) and ``VersionReplica``
(the body of a version's own Serve deployment, in the split topology).

A ``VersionHost`` holds the actor layer's ``Predictor`` as a plain object (no nested actor): the
same bounded concurrency (``Overloaded`` past ``max_in_flight`` + ``max_queued``), routing
safety (a call for another version, or to a draining host, is refused with ``moved`` /
``draining`` so the ingress re-routes it) and rolling metrics as a Predictor actor gives. It
lives either in each replica of the version's own deployment (``VersionReplica``; split
topology) or, with ``ServeOptions.colocate_versions``, in each ingress replica beside the
other live versions (``hosting.py``): the same object either way, so health checks, drain and
metrics mean the same in both topologies.

The supervisor reaches every replica that hosts the version with
``DeploymentHandle.broadcast`` (``metrics``, ``drain``, ``resume``, ``status``), so its health
checks see all of a version's traffic however many replicas autoscaling runs. Requests are
recorded through ``ray.serve.metrics`` with program / version / model tags (Serve adds
deployment, replica and application tags), beside Serve's own metrics on the Ray dashboard
and Prometheus.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from dspex.actors.predictor import Predictor
from dspex.actors.spec import VersionSpec

from dspex.errors import DeploymentError
from dspex.primitives.prediction import Prediction
from dspex.streaming import StreamListener, StreamResponse, streamify

__all__ = ["VersionHost", "VersionReplica", "outputs_of", "replica_tag"]

_LATENCY_BOUNDARIES_MS: list[float] = [5, 10, 25, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 30000]


def outputs_of(result: Any) -> dict[str, Any]:
    """A program's result as a dict of output fields."""
    if isinstance(result, Prediction):
        return dict(result.toDict())
    if isinstance(result, dict):
        return dict(result)
    to_dict = getattr(result, "toDict", None)
    if callable(to_dict):
        return dict(to_dict())
    return {"output": result}


class _Metrics:
    """Request counters and latency through ``ray.serve.metrics`` (exported by Ray's agent).

    Both are batched: ``record`` adds to a local count and a list of latencies, written to Ray
    at most once per ``flush_s`` (one ``inc`` per outcome, then the latencies one by one: Ray's
    histogram takes one value at a time). A Ray metric call with Serve's tags releases the GIL
    in native code, and on the request path each one cost the event loop far more than its
    CPU: at c=256 through a handle, per-request ``Histogram.observe`` took 7 % of the ingress
    replica's samples (py-spy). Serve batches its own request metrics the same way."""

    def __init__(self, tags: dict[str, str], flush_s: float = 1.0) -> None:
        from ray.serve import metrics

        keys: Any = ("program", "version", "model", "outcome")  # Ray types tag_keys as tuple[str]
        self.tags = tags
        self.flush_s = flush_s
        self.requests = metrics.Counter(
            "dspex_serve_version_requests", description="Requests a dspex program version served, by outcome.", tag_keys=keys
        )
        self.latency = metrics.Histogram(
            "dspex_serve_version_latency_ms",
            description="Latency of a dspex program version's calls in milliseconds.",
            boundaries=_LATENCY_BOUNDARIES_MS,
            tag_keys=keys[:3],
        )
        # copies: Serve adds its own tags into the dict it is given
        self.requests.set_default_tags(dict(tags))
        self.latency.set_default_tags(dict(tags))
        self._pending: dict[str, int] = {}
        self._latencies: list[float] = []
        self._timer: asyncio.TimerHandle | None = None

    def record(self, outcome: str, latency_ms: float | None) -> None:
        self._pending[outcome] = self._pending.get(outcome, 0) + 1
        if latency_ms is not None:
            self._latencies.append(latency_ms)
        if self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self.flush_s, self.flush)
            except RuntimeError:  # no loop (a sync caller): write now
                self.flush()

    def flush(self) -> None:
        """Write the counts recorded since the last flush to Ray."""
        self._timer = None
        pending, self._pending = self._pending, {}
        latencies, self._latencies = self._latencies, []
        for outcome, n in pending.items():
            self.requests.inc(float(n), tags={"outcome": outcome})
        for latency_ms in latencies:
            self.latency.observe(latency_ms)


class VersionHost:
    """One version, hosted in this process. ``name``: the predictor id (for its records)."""

    def __init__(self, spec: VersionSpec, name: str) -> None:
        if not isinstance(spec, VersionSpec):
            raise DeploymentError(f"A version host needs a VersionSpec, got {type(spec).__name__}.")
        self.spec = spec
        self.predictor = Predictor(name, spec)
        model = str(getattr(spec.lm, "model", None) or "default")
        self.metrics_ = _Metrics({"program": spec.program, "version": str(spec.version), "model": model})
        self._fields: dict[str, list[str]] | None = None

    async def ready(self) -> bool:
        return await self.predictor.ready()

    # -- requests ---------------------------------------------------------------------------
    async def predict(self, inputs: dict[str, Any], version: Any = None, request_id: str | None = None) -> dict[str, Any]:
        """Run the version on ``inputs``; its outputs as a dict."""
        t0 = time.perf_counter()
        outcome = "error"
        try:
            result = await self.predictor.execute(inputs, version, request_id or f"{random.getrandbits(64):016x}")
            outcome = "success"
            return outputs_of(result)
        except Exception as exc:
            outcome = "rejected" if type(exc).__name__ == "Overloaded" else "error"
            raise
        finally:
            latency_ms = (time.perf_counter() - t0) * 1000.0 if outcome != "rejected" else None
            self.metrics_.record(outcome, latency_ms)

    async def stream(
        self, inputs: dict[str, Any], version: Any = None, fields: list[str] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream the outputs: ``{"event": "chunk", "field", "chunk", "last"}`` items as the
        LM writes them, then ``{"event": "final", "outputs"}``. The call goes through the
        Predictor (same admission, routing checks and metrics as ``predict``)."""
        wanted = list(fields) if fields else self._output_fields()
        listeners = [StreamListener(f) for f in wanted]
        program = _PredictorCall(self.predictor, version)
        t0 = time.perf_counter()
        outcome = "error"
        try:
            async for item in streamify(program, stream_listeners=listeners)(**inputs):
                if isinstance(item, StreamResponse):
                    yield {
                        "event": "chunk",
                        "field": item.signature_field_name,
                        "chunk": item.chunk,
                        "last": item.is_last_chunk,
                    }
                elif not isinstance(item, str):  # status messages are strings; skip them
                    yield {"event": "final", "outputs": outputs_of(item)}
            outcome = "success"
        finally:
            self.metrics_.record(outcome, (time.perf_counter() - t0) * 1000.0)

    def _signatures(self) -> list[Any]:
        # The Predictor keeps its program private (a public accessor is requested from the
        # actor layer); a program's first predictor takes its inputs and its last one
        # produces its outputs (DSPy's convention, also used for streaming).
        hosted = getattr(self.predictor, "_hosted", None)
        program = getattr(hosted, "program", None)
        named = getattr(program, "named_predictors", None)
        if not callable(named):
            return []
        return [getattr(p, "signature", None) for _, p in named()]

    def _output_fields(self) -> list[str]:
        signatures = self._signatures()
        return list(getattr(signatures[-1], "output_fields", {}) or {}) if signatures else []

    async def fields(self) -> dict[str, list[str]]:
        """The program's input and output field names (for the OpenAI facade)."""
        if self._fields is None:
            await self.predictor.ready()
            signatures = self._signatures()
            inputs = list(getattr(signatures[0], "input_fields", {}) or {}) if signatures else []
            self._fields = {"inputs": inputs, "outputs": self._output_fields()}
        return {k: list(v) for k, v in self._fields.items()}

    # -- control (broadcast by the supervisor's ServeVersionHandle) -------------------------
    async def metrics(self, window_s: float | None = None) -> dict[str, Any]:
        return await self.predictor.metrics(window_s)

    async def drain(self, timeout_s: float = 30.0) -> dict[str, Any]:
        return await self.predictor.drain(timeout_s)

    async def resume(self) -> None:
        await self.predictor.resume()

    async def status(self) -> dict[str, Any]:
        return await self.predictor.status()

    async def close(self) -> None:
        self.metrics_.flush()
        await self.predictor.close()


class VersionReplica(VersionHost):
    """One replica of a version's own deployment (split topology). ``spec``: the version;
    ``app``: the Serve app."""

    def __init__(self, spec: VersionSpec, app: str) -> None:
        if not isinstance(spec, VersionSpec):
            raise DeploymentError(f"A version deployment needs a VersionSpec, got {type(spec).__name__}.")
        super().__init__(spec, f"{app}/{replica_tag()}")
        self.app = app

    async def check_health(self) -> None:
        # Serve calls this every health_check_period_s; a version that cannot load is unhealthy.
        await self.predictor.ready()


class _PredictorCall:
    """What ``streamify`` calls: the Predictor's ``execute`` under the program's interface."""

    def __init__(self, predictor: Predictor, version: Any) -> None:
        self.predictor = predictor
        self.version = version

    async def acall(self, **inputs: Any) -> Any:
        return await self.predictor.execute(inputs, self.version)


def replica_tag() -> str:
    """``<deployment>#<replica>`` inside a Serve replica, else a random tag."""
    try:
        from ray import serve

        ctx = serve.get_replica_context()
        return f"{ctx.deployment}#{ctx.replica_tag}"
    except Exception:
        return uuid.uuid4().hex[:8]
