"""dspex spans as OpenTelemetry spans, with the GenAI semantic conventions.

``enable_tracing()`` attaches a handler to the start/stop/exception events of every span in
``names.SPANS``; each dspex span becomes an OTel span whose parent is the OTel span of the dspex
parent (program -> module -> predict -> LM call -> provider request), or, at the top, whatever
OTel span is current (so dspex nests under an application's own spans).

LM calls and provider requests get ``gen_ai.operation.name`` ("chat"), ``gen_ai.system`` and
``gen_ai.provider.name`` (the provider), ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``
and ``gen_ai.usage.output_tokens``. Inputs and outputs (metadata ``inputs``, ``outputs``,
``messages``) are recorded only with ``record_content=True``, as JSON with secret-looking keys
(api_key, authorization, token, password, secret) removed; other metadata is copied only from
a fixed list of names, so nothing else an emitter passes can leak.

Needs ``opentelemetry-sdk`` (the ``otel`` extra); without it ``enable_tracing`` raises
ConfigurationError.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from typing import Any

from dspex.errors import ConfigurationError
from dspex.telemetry import names
from dspex.telemetry._events import Event, attach_many, detach

__all__ = ["OTelBridge", "disable_tracing", "enable_tracing"]

HANDLER_ID = "dspex.otel"
MAX_LIVE_SPANS = 10_000
MAX_CONTENT_CHARS = 8_000
_SECRET_KEY = re.compile(r"(api[_-]?key|authorization|token|password|secret|credential)", re.I)

_GEN_AI_SPANS = {names.LM_CALL, names.PROVIDER_REQUEST}
# metadata copied as attributes (bounded names and flags, never content)
_ATTRS = {
    "program": "dspex.program",
    "module": "dspex.module",
    "signature": "dspex.signature",
    "predictor": "dspex.predictor",
    "adapter": "dspex.adapter",
    "optimizer": "dspex.optimizer",
    "metric": "dspex.metric",
    "kind": "dspex.kind",
    "version": "dspex.version",
    "attempt": "dspex.attempt",
    "cache_hit": "dspex.cache_hit",
    "status": "http.response.status_code",
    "response_model": "gen_ai.response.model",
    "finish_reason": "gen_ai.response.finish_reasons",
    "temperature": "gen_ai.request.temperature",
    "max_tokens": "gen_ai.request.max_tokens",
}
_MEASURES = {
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
    "cost_usd": "dspex.cost_usd",
    "score": "dspex.score",
}
_CONTENT = {"inputs": "dspex.inputs", "outputs": "dspex.outputs", "messages": "gen_ai.input.messages"}


def _redact(value: Any, depth: int = 0) -> Any:
    if depth > 8:
        return "..."
    if isinstance(value, Mapping):
        return {
            str(k): ("[redacted]" if _SECRET_KEY.search(str(k)) else _redact(v, depth + 1)) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(v, depth + 1) for v in value]
    if hasattr(value, "toDict"):  # dspex.Example / Prediction
        return _redact(value.toDict(), depth + 1)
    return value


def _content(value: Any) -> str:
    text = json.dumps(_redact(value), default=str, ensure_ascii=False)
    return text if len(text) <= MAX_CONTENT_CHARS else text[:MAX_CONTENT_CHARS] + "...[truncated]"


def _attr(value: Any) -> Any:
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


class OTelBridge:
    """The handler: keeps the live OTel span of every live dspex span (bounded)."""

    def __init__(self, tracer: Any, record_content: bool = False) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self._trace = trace
        self._kind_client = SpanKind.CLIENT
        self._kind_internal = SpanKind.INTERNAL
        self._status_error = lambda desc: Status(StatusCode.ERROR, desc)
        self.tracer = tracer
        self.record_content = record_content
        self._live: dict[int, tuple[Any, int]] = {}  # dspex span id -> (otel span, start ns)
        self._lock = threading.Lock()

    def handle(self, event: Event, measurements: dict[str, Any], metadata: dict[str, Any], _config: Any) -> None:
        phase, span_name = event[-1], event[:-1]
        if phase == "start":
            self._start(span_name, measurements, metadata)
        else:
            self._end(span_name, phase == "exception", measurements, metadata)

    def _start(self, name: Event, m: dict[str, Any], md: dict[str, Any]) -> None:
        span_id = md.get("span_id")
        if not span_id:
            return
        parent = self._live.get(md.get("parent_id") or 0)
        ctx = self._trace.set_span_in_context(parent[0]) if parent else None
        gen_ai = name in _GEN_AI_SPANS
        attrs: dict[str, Any] = {}
        if gen_ai:
            provider = str(md.get("provider", ""))
            attrs.update(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.system": provider,
                    "gen_ai.provider.name": provider,
                    "gen_ai.request.model": str(md.get("model", "")),
                }
            )
            title = f"chat {md.get('model', '')}".strip()
        else:
            subject = md.get("signature") or md.get("module") or md.get("program") or md.get("optimizer")
            title = ".".join(name[1:]) + (f" {subject}" if subject else "")
        attrs.update(self._copy(md))
        start_ns = int(float(m.get("system_time", 0.0)) * 1e9) or None
        span = self.tracer.start_span(
            title,
            context=ctx,
            kind=self._kind_client if gen_ai else self._kind_internal,
            attributes=attrs,
            start_time=start_ns,
        )
        with self._lock:
            if len(self._live) >= MAX_LIVE_SPANS:  # spans never closed (lost generators): drop the oldest
                _old_id, (old, _t) = next(iter(self._live.items()))
                del self._live[_old_id]
                old.set_attribute("dspex.abandoned", True)
                old.end()
            self._live[int(span_id)] = (span, start_ns or 0)

    def _end(self, name: Event, failed: bool, m: dict[str, Any], md: dict[str, Any]) -> None:
        with self._lock:
            entry = self._live.pop(int(md.get("span_id") or 0), None)
        if entry is None:
            return
        span, start_ns = entry
        attrs = self._copy(md)
        for key, attr in _MEASURES.items():
            v = m.get(key)
            if isinstance(v, int | float) and not isinstance(v, bool):
                attrs[attr] = v
        span.set_attributes(attrs)
        if failed:
            kind = str(md.get("kind", "error"))
            span.set_attribute("error.type", kind)
            reason = md.get("reason")
            if isinstance(reason, BaseException):
                span.record_exception(reason)
            span.set_status(self._status_error(kind))
        duration = m.get("duration_s")
        end_ns = start_ns + int(float(duration) * 1e9) if start_ns and isinstance(duration, int | float) else None
        span.end(end_time=end_ns)

    def _copy(self, md: Mapping[str, Any]) -> dict[str, Any]:
        out = {attr: _attr(md[key]) for key, attr in _ATTRS.items() if md.get(key) is not None}
        if self.record_content:
            for key, attr in _CONTENT.items():
                if md.get(key) is not None:
                    out[attr] = _content(md[key])
        return out


_bridge: OTelBridge | None = None


def enable_tracing(tracer_provider: Any = None, record_content: bool = False) -> OTelBridge:
    """Turn dspex spans into OTel spans (replacing an earlier ``enable_tracing``).

    ``tracer_provider`` defaults to OTel's global one. ``record_content=True`` also records
    inputs, outputs and messages (secret-looking keys removed); leave it off for production
    traffic that holds personal data.
    """
    global _bridge
    try:
        from opentelemetry import trace
    except ImportError as exc:  # pragma: no cover - the dev environment has it
        raise ConfigurationError(
            "Tracing needs OpenTelemetry: pip install 'dspex[otel]' (opentelemetry-sdk)."
        ) from exc
    provider = tracer_provider or trace.get_tracer_provider()
    from dspex import __version__

    bridge = OTelBridge(provider.get_tracer("dspex", __version__), record_content)
    events = [ev for s in names.SPANS for ev in (names.start(s), names.stop(s), names.exception(s))]
    detach(HANDLER_ID)
    attach_many(HANDLER_ID, events, bridge.handle)
    _bridge = bridge
    return bridge


def disable_tracing() -> bool:
    """Stop exporting dspex spans; returns False when tracing was not on."""
    global _bridge
    _bridge = None
    return detach(HANDLER_ID)
