"""The simulated LM server: a Starlette app speaking OpenAI chat completions and Anthropic
messages, with per-model latency, prices and faults, and admin endpoints.

Routes:
    POST /v1/chat/completions   (also /chat/completions)   OpenAI
    POST /v1/messages                                     Anthropic
    GET  /v1/models, /v1/models/{id}                      both shapes (Anthropic when the
                                                          request has an anthropic-version header)
    GET  /health
    GET  /admin/stats   POST /admin/reset   GET /admin/config
    GET  /admin/faults  POST /admin/faults  POST /admin/outage

Latency is ``asyncio.sleep`` (non-blocking), so hundreds of requests overlap on one loop.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import ValidationError as PydanticValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from dspex.telemetry import names
from dspex import telemetry
from dspex.errors import NotFound
from dspex.sim.config import SimConfig
from dspex.sim.prompts import PromptCache, estimate_tokens
from dspex.sim.responder import ChoiceOut, Responder
from dspex.sim.state import FaultDecision, ModelRuntime, SimState
from dspex.sim.wire import (
    WireError,
    WireRequest,
    anthropic_error,
    anthropic_message,
    anthropic_stream,
    openai_completion,
    openai_error,
    openai_stream,
    parse_anthropic,
    parse_openai,
)

__all__ = ["SimApp", "build_app"]

log = logging.getLogger("dspex.sim")

REQUEST_EVENT = names.SIM_REQUEST
_JSON = "application/json"


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type=_JSON, headers=headers)


def _malform(text: str | None) -> str:
    """A reply a parser must reject: markers broken and the end cut off, or JSON cut short."""
    if not text:
        return "{"
    if "[[ ## " in text:
        broken = text.replace("[[ ## ", "[[ # ", 1).replace("[[ ## completed ## ]]", "")
        return broken[: max(1, int(len(broken) * 0.6))]
    return text[: max(1, int(len(text) * 0.6))]


class SimApp:
    """The server's state and handlers; ``.app`` is the ASGI application."""

    def __init__(self, config: SimConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.state = SimState(config, clock)
        self.cache = PromptCache(config.prompt_cache_size)
        self.responder = Responder(config.seed)
        self._ids = itertools.count(1)
        self._keys = [k.encode() for k in config.api_keys] if config.api_keys else None
        self.stopping = False
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/v1/messages", self.messages, methods=["POST"]),
                Route("/v1/models", self.list_models, methods=["GET"]),
                Route("/v1/models/{model_id:path}", self.get_model, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/admin/stats", self.admin_stats, methods=["GET"]),
                Route("/admin/reset", self.admin_reset, methods=["POST"]),
                Route("/admin/config", self.admin_config, methods=["GET"]),
                Route("/admin/faults", self.admin_faults, methods=["GET", "POST"]),
                Route("/admin/outage", self.admin_outage, methods=["POST"]),
            ]
        )

    # -- auth --------------------------------------------------------------------------------
    def _authorized(self, request: Request) -> bool:
        if self._keys is None:
            return True
        given = request.headers.get("x-api-key")
        if given is None:
            auth = request.headers.get("authorization", "")
            given = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        if not given:
            return False
        raw = given.encode()
        return any(hmac.compare_digest(raw, k) for k in self._keys)

    # -- the shared flow ---------------------------------------------------------------------
    def _error(
        self,
        api: str,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        rid: str = "",
    ) -> Response:
        if api == "anthropic":
            return _json(anthropic_error(status, message, rid), status, headers)
        return _json(openai_error(status, message, code=code, param=param), status, headers)

    async def chat_completions(self, request: Request) -> Response:
        return await self._handle(request, "openai")

    async def messages(self, request: Request) -> Response:
        return await self._handle(request, "anthropic")

    async def _handle(self, request: Request, api: str) -> Response:
        n = next(self._ids)
        rid = f"chatcmpl-sim{n}" if api == "openai" else f"msg_sim{n:012d}"
        if not self._authorized(request):
            msg = "Incorrect API key provided." if api == "openai" else "invalid x-api-key"
            return self._error(api, 401, msg, code="invalid_api_key", rid=rid)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return self._error(
                api, 400, "We could not parse the JSON body of your request.", rid=rid
            )
        try:
            req = parse_openai(body) if api == "openai" else parse_anthropic(body)
        except WireError as exc:
            return self._error(
                api, exc.status, exc.message, code=exc.code, param=exc.param, rid=rid
            )
        rt = self.state.runtime(req.model)
        if rt is None:
            self.state.unknown_model_requests += 1
            return self._error(
                api,
                404,
                f"The model `{req.model}` does not exist or you do not have access to it.",
                code="model_not_found",
                param="model",
                rid=rid,
            )
        c = rt.counters
        c.requests += 1
        c.by_api[api] += 1
        c.in_flight += 1
        c.max_in_flight = max(c.max_in_flight, c.in_flight)
        try:
            return await self._serve(request, api, rid, req, rt)
        except Exception:  # a bug in the simulator: say so, keep serving
            log.exception("simulator failed on a request to %s", req.model)
            c.errors[500] += 1
            return self._error(
                api, 500, "The simulator failed on this request (see its log).", rid=rid
            )
        finally:
            c.in_flight -= 1

    async def _serve(
        self, request: Request, api: str, rid: str, req: WireRequest, rt: ModelRuntime
    ) -> Response:
        c = rt.counters
        spec = rt.spec
        decision = self.state.decide(rt)
        if decision.kind is not None:
            return await self._fault_response(request, api, rid, rt, decision)
        parsed = self.cache.parse(req.messages, req.system)
        max_out = min(req.max_tokens or spec.max_output_tokens, spec.max_output_tokens)
        if parsed.prompt_tokens + (req.max_tokens or 0) > spec.context_window:
            c.errors[400] += 1
            return self._error(
                api,
                400,
                f"This model's maximum context length is {spec.context_window} tokens; the request has about "
                f"{parsed.prompt_tokens} prompt tokens plus {req.max_tokens or 0} for the reply.",
                code="context_length_exceeded",
                param="messages",
                rid=rid,
            )
        choices = self.responder.respond(parsed, spec, req.sampling)
        per_choice = [self._finish(rt, ch, max_out) for ch in choices]
        completion_tokens = sum(per_choice)
        prompt_tokens = parsed.prompt_tokens
        latency_s = self.state.latency_s(rt, max(per_choice))
        cost = spec.price.cost_usd(prompt_tokens, completion_tokens)
        c.ok += 1
        c.prompt_tokens += prompt_tokens
        c.completion_tokens += completion_tokens
        c.cost_usd += cost
        for ch in choices:
            if ch.correct is True:
                c.task_correct += 1
            elif ch.correct is False:
                c.task_wrong += 1
        telemetry.emit(
            REQUEST_EVENT,
            {
                "latency_ms": latency_s * 1000,
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "cost_usd": cost,
            },
            {"model": spec.name, "api": api, "status": 200, "fault": None},
        )
        headers = self.state.rate_headers(rt)
        headers["x-request-id" if api == "openai" else "request-id"] = rid
        if req.stream:
            c.streamed += 1
            if api == "openai":
                events = openai_stream(
                    rid,
                    int(time.time()),
                    spec.name,
                    choices,
                    prompt_tokens,
                    completion_tokens,
                    req.include_usage,
                )
            else:
                events = anthropic_stream(
                    rid, spec.name, choices[0], prompt_tokens, completion_tokens
                )
            ttft_s = max(
                0.0, latency_s - spec.latency.per_output_token_ms * max(per_choice) / 1000.0
            )
            return StreamingResponse(
                self._paced(events, ttft_s, spec.latency.per_output_token_ms / 1000.0),
                media_type="text/event-stream",
                headers={**headers, "cache-control": "no-cache"},
            )
        if latency_s > 0:
            await asyncio.sleep(latency_s)
        if api == "openai":
            body = openai_completion(
                rid, int(time.time()), spec.name, choices, prompt_tokens, completion_tokens
            )
        else:
            body = anthropic_message(rid, spec.name, choices[0], prompt_tokens, completion_tokens)
        return _json(body, headers=headers)

    async def _fault_response(
        self, request: Request, api: str, rid: str, rt: ModelRuntime, decision: FaultDecision
    ) -> Response:
        """The reply to a request a fault caught before the model answered."""
        spec = rt.spec
        c = rt.counters
        c.faults[decision.kind or "unknown"] += 1
        c.errors[decision.status] += 1
        telemetry.emit(
            REQUEST_EVENT,
            {"latency_ms": 0.0},
            {"model": spec.name, "api": api, "status": decision.status, "fault": decision.kind},
        )
        if decision.kind == "outage":
            return self._error(
                api,
                503,
                f"The model {spec.name} is temporarily unavailable (simulated outage).",
                code="service_unavailable",
                rid=rid,
            )
        if decision.kind == "rate_limited":
            wait = decision.retry_after_s or 1.0
            headers = {
                "retry-after": f"{wait:.3f}",
                "retry-after-ms": str(int(wait * 1000)),
                **self.state.rate_headers(rt),
            }
            return self._error(
                api,
                429,
                f"Rate limit reached for {spec.name}: {rt.faults.rpm_limit} requests per minute. "
                f"Try again in {wait:.3f}s.",
                code="rate_limit_exceeded",
                headers=headers,
                rid=rid,
            )
        if decision.kind == "hang":
            await self._hang(request, decision.hang_s)
            return self._error(
                api,
                504,
                f"The request to {spec.name} timed out (simulated hang).",
                code="timeout",
                rid=rid,
            )
        retry = rt.faults.error_retry_after_s
        retry_headers = (
            {"retry-after": f"{retry:.3f}", "retry-after-ms": str(int(retry * 1000))}
            if retry
            else None
        )
        return self._error(
            api,
            decision.status,
            f"The model {spec.name} failed (simulated {decision.status}).",
            code="server_error",
            headers=retry_headers,
            rid=rid,
        )

    def _finish(self, rt: ModelRuntime, ch: ChoiceOut, max_out: int) -> int:
        """Apply the malformed-output fault and the max_tokens cut; return output tokens."""
        if ch.text is not None and self.state.malformed(rt):
            ch.text = _malform(ch.text)
            rt.counters.faults["malformed"] += 1
        if ch.text is None:
            return sum(estimate_tokens(t.arguments) for t in ch.tool_calls) + 8
        tokens = estimate_tokens(ch.text)
        if tokens > max_out:
            ch.text = ch.text[: max_out * 4]
            ch.finish_reason = "length"
            return max_out
        return tokens

    async def _paced(
        self, events: list[tuple[int, bytes]], ttft_s: float, per_token_s: float
    ) -> AsyncIterator[bytes]:
        if ttft_s > 0:
            await asyncio.sleep(ttft_s)
        for tokens, data in events:
            if tokens and per_token_s:
                await asyncio.sleep(tokens * per_token_s)
            yield data

    async def _hang(self, request: Request, hang_s: float) -> None:
        """Hold the request for ``hang_s`` or until the client gives up or we shut down."""
        deadline = time.monotonic() + hang_s
        while not self.stopping and time.monotonic() < deadline:
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
            if await request.is_disconnected():
                return

    # -- models ------------------------------------------------------------------------------
    def _model_entry(self, name: str, anthropic: bool) -> dict[str, Any]:
        spec = self.state.models[name].spec
        if anthropic:
            return {
                "type": "model",
                "id": name,
                "display_name": name,
                "created_at": "2025-01-01T00:00:00Z",
            }
        return {
            "id": name,
            "object": "model",
            "created": 1735689600,
            "owned_by": spec.owned_by,
            "context_window": spec.context_window,
            "pricing": spec.price.model_dump(),
        }

    async def list_models(self, request: Request) -> Response:
        anthropic = "anthropic-version" in request.headers
        data = [self._model_entry(n, anthropic) for n in self.state.models]
        if anthropic:
            return _json(
                {
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"],
                    "last_id": data[-1]["id"],
                }
            )
        return _json({"object": "list", "data": data})

    async def get_model(self, request: Request) -> Response:
        name = request.path_params["model_id"]
        anthropic = "anthropic-version" in request.headers
        if name not in self.state.models:
            api = "anthropic" if anthropic else "openai"
            return self._error(
                api,
                404,
                f"The model `{name}` does not exist.",
                code="model_not_found",
                param="model",
            )
        return _json(self._model_entry(name, anthropic))

    async def health(self, request: Request) -> Response:
        return _json({"status": "ok", "models": list(self.state.models)})

    # -- admin -------------------------------------------------------------------------------
    def _admin_denied(self, request: Request) -> Response | None:
        if self._authorized(request):
            return None
        return _json(
            {
                "error": {
                    "message": "The admin endpoints need the server's API key.",
                    "type": "auth",
                }
            },
            401,
        )

    async def _admin_body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return {}
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        return body

    async def admin_stats(self, request: Request) -> Response:
        if (denied := self._admin_denied(request)) is not None:
            return denied
        stats = self.state.stats()
        stats["prompt_cache"] = {"hits": self.cache.hits, "misses": self.cache.misses}
        return _json(stats)

    async def admin_config(self, request: Request) -> Response:
        if (denied := self._admin_denied(request)) is not None:
            return denied
        return _json(self.config.public_dict())

    async def admin_reset(self, request: Request) -> Response:
        if (denied := self._admin_denied(request)) is not None:
            return denied
        try:
            body = await self._admin_body(request)
        except ValueError as exc:
            return _json(
                {
                    "error": {
                        "message": f"Invalid JSON body: {exc}",
                        "type": "invalid_request_error",
                    }
                },
                400,
            )
        self.state.reset(
            counters=bool(body.get("counters", True)), faults=bool(body.get("faults", True))
        )
        return _json({"ok": True})

    async def admin_faults(self, request: Request) -> Response:
        if (denied := self._admin_denied(request)) is not None:
            return denied
        if request.method == "GET":
            return _json({name: rt.faults.model_dump() for name, rt in self.state.models.items()})
        try:
            body = await self._admin_body(request)
        except ValueError as exc:
            return _json(
                {
                    "error": {
                        "message": f"Invalid JSON body: {exc}",
                        "type": "invalid_request_error",
                    }
                },
                400,
            )
        model = body.pop("model", "*")
        patch = body.pop("faults", None)
        patch = dict(patch) if isinstance(patch, dict) else body
        return self._apply_faults(str(model), patch)

    async def admin_outage(self, request: Request) -> Response:
        if (denied := self._admin_denied(request)) is not None:
            return denied
        try:
            body = await self._admin_body(request)
        except ValueError as exc:
            return _json(
                {
                    "error": {
                        "message": f"Invalid JSON body: {exc}",
                        "type": "invalid_request_error",
                    }
                },
                400,
            )
        return self._apply_faults(
            str(body.get("model", "*")), {"outage": bool(body.get("on", True))}
        )

    def _apply_faults(self, model: str, patch: dict[str, Any]) -> Response:
        try:
            return _json(self.state.set_faults(model, patch))
        except NotFound as exc:
            return _json({"error": {"message": str(exc), "type": "not_found"}}, 404)
        except PydanticValidationError as exc:
            msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            return _json(
                {"error": {"message": f"Invalid faults: {msg}", "type": "invalid_request_error"}},
                400,
            )


def build_app(config: SimConfig | None = None) -> SimApp:
    """The simulator for ``config`` (default: ``SimConfig.default()``)."""
    return SimApp(config or SimConfig.default())
