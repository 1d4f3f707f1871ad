"""The ingress's HTTP endpoints as one plain ASGI app (``IngressHttp``), built per replica.

    POST {prefix}/v1/programs/{name}/predict   {"inputs": {...}} -> {"program", "version", "outputs"}, X-Dspex-Version
    POST {prefix}/v1/programs/{name}/stream    the same, as server-sent events (chunk ..., final)
    POST {prefix}/v1/chat/completions           OpenAI facade, model = "<program>" (stream too)
    GET  {prefix}/v1/models                     the program, as OpenAI lists models
    GET  {prefix}/healthz                       200 when a version takes traffic, else 503
    GET  {prefix}/metrics                       dspex telemetry of this replica (Prometheus)
    GET  {prefix}/admin/status                  the supervisor's status          } bearer token
    POST {prefix}/admin/versions                deploy a version (+ rollout plan) }
    PUT  {prefix}/admin/weights                 set the traffic split            }
    POST {prefix}/admin/promote | /admin/rollback                                 }

Why not FastAPI: a request is a dict lookup of (method, path) and one call here, where
FastAPI's class-based views cost a router scan, dependency resolution (to inject ``self``) and
``jsonable_encoder`` on every request, about 0.1-0.3 ms of a 2-core node's CPU per request
(benchmarks/serve.py). Bodies are encoded with ``json.dumps`` and only values json cannot
encode go through FastAPI's ``jsonable_encoder``. Serve passes the application's route prefix
as ``root_path``; paths here are relative to it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from dspex.actors import _ray
from starlette.responses import StreamingResponse

from dspex import telemetry
from dspex.errors import NotFound, ValidationError

from .admin import admin_denial
from .http_errors import http_error
from .openai_facade import chunk_body, completion_body, inputs_from_messages

if TYPE_CHECKING:
    from .ingress import IngressCore

__all__ = ["IngressHttp", "Request", "dumps"]

log = logging.getLogger("dspex.cluster.serve.http")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
_JSON = (b"content-type", b"application/json")


def _default(value: Any) -> Any:
    from fastapi.encoders import jsonable_encoder

    encoded = jsonable_encoder(value)
    if encoded is value:
        raise TypeError(f"{type(value).__name__} is not JSON serializable")
    return encoded


def dumps(body: Any) -> bytes:
    """``body`` as compact JSON (NaN refused, like Starlette's JSONResponse)."""
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_default).encode("utf-8")


class Request:
    """The parts of an ASGI HTTP request the endpoints read."""

    __slots__ = ("_body", "_headers", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self._headers: dict[str, str] | None = None
        self._body: bytes | None = None

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:  # ASGI header names are lower-case already
            self._headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self.scope["headers"]}
        return self._headers

    async def body(self) -> bytes:
        if self._body is None:
            chunks: list[bytes] = []
            while True:
                message = await self.receive()
                if message["type"] != "http.request":
                    break  # the client went away
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            self._body = b"".join(chunks)
        return self._body

    async def json(self) -> dict[str, Any]:
        """The body as a JSON object (``ValidationError`` otherwise: a 422)."""
        try:
            body = json.loads(await self.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValidationError(f"The request body is not valid JSON: {exc}.", field="body", constraint="json") from None
        if not isinstance(body, dict):
            raise ValidationError("The request body must be a JSON object.", field="body", constraint="object")
        return body


class Reply:
    """A complete (non-streamed) reply."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, body: bytes, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.body = body
        self.status = status
        self.headers = headers or []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [_JSON, (b"content-length", str(len(self.body)).encode()), *self.headers]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def json_reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    return Reply(dumps(body), status, extra)


def _inputs_of(body: dict[str, Any]) -> dict[str, Any]:
    inputs = body.get("inputs", body)
    if not isinstance(inputs, dict) or not inputs:
        raise ValidationError(
            'Send the program\'s inputs as {"inputs": {"<field>": value, ...}}.', field="inputs", constraint="object"
        )
    return inputs


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {dumps(data).decode('utf-8')}\n\n"


Endpoint = Callable[[Request], Awaitable[Any]]


class IngressHttp:
    """The ASGI app of one ingress replica (see the module docstring)."""

    def __init__(self, ingress: IngressCore) -> None:
        self.ingress = ingress
        self.metrics_app = telemetry.metrics_app()
        self.exact: dict[str, dict[str, Endpoint]] = {
            "/v1/chat/completions": {"POST": self.chat_completions},
            "/v1/models": {"GET": self.models},
            "/healthz": {"GET": self.healthz},
            "/admin/status": {"GET": self.admin_status},
            "/admin/versions": {"POST": self.admin_deploy},
            "/admin/weights": {"PUT": self.admin_weights},
            "/admin/promote": {"POST": self.admin_promote},
            "/admin/rollback": {"POST": self.admin_rollback},
        }
        self.program_actions: dict[str, Callable[[str, Request], Awaitable[Any]]] = {
            "predict": self.predict,
            "stream": self.stream,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            reply = await self._dispatch(scope, receive)
            await reply(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _dispatch(self, scope: Scope, receive: Receive) -> Any:
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        method: str = scope["method"]
        request = Request(scope, receive)
        try:
            if path.startswith("/v1/programs/"):
                name, _, action = path[len("/v1/programs/"):].partition("/")
                handler = self.program_actions.get(action)
                if handler is None or not name:
                    raise NotFound(f"No endpoint {path!r}; use /v1/programs/<program>/predict or /stream.", hint="")
                if method != "POST":
                    return self._not_allowed(["POST"])
                return await handler(name, request)
            if path == "/metrics" and method == "GET":
                return self.metrics_app
            methods = self.exact.get(path)
            if methods is None:
                raise NotFound(f"No endpoint {path!r} on program {self.ingress.program!r}'s application.", hint="")
            endpoint = methods.get(method)
            if endpoint is None:
                return self._not_allowed(list(methods))
            return await endpoint(request)
        except Exception as exc:
            return self.error(exc)

    def _not_allowed(self, allowed: list[str]) -> Reply:
        body = {"error": {"type": "method_not_allowed", "message": f"Use {', '.join(allowed)}.", "code": 405}}
        return json_reply(body, 405, {"Allow": ", ".join(allowed)})

    def error(self, exc: BaseException) -> Reply:
        cause = _ray.unwrap(exc)
        err = http_error(cause, retry_after_s=self.ingress.options.retry_after_s)
        if err.status >= 500 and err.type == "internal_error":
            log.error("request to %s failed", self.ingress.program, exc_info=cause)
        headers = dict(err.headers)
        version = getattr(cause, "_dspex_served_version", None)
        if version is not None:
            headers["X-Dspex-Version"] = str(version)  # which version failed (rollout dashboards)
        return json_reply(err.body(), err.status, headers)

    def _key(self, request: Request) -> str | None:
        headers = request.headers
        for header in self.ingress.options.sticky_headers:
            value = headers.get(header)
            if value:
                return value
        return None

    def _check(self, name: str) -> None:
        if name != self.ingress.program:
            raise NotFound(f"This application serves program {self.ingress.program!r}, not {name!r}.", hint="")

    # -- program endpoints ----------------------------------------------------------------------
    async def predict(self, name: str, request: Request) -> Reply:
        self._check(name)
        inputs = _inputs_of(await request.json())
        pin = request.headers.get(self.ingress.options.version_header)
        result = await self.ingress.apredict(inputs, self._key(request), pin)
        version = result["version"]
        body = {"program": self.ingress.program, "version": version, "outputs": result["outputs"]}
        return Reply(dumps(body), 200, [(b"x-dspex-version", str(version).encode("latin-1"))])

    async def stream(self, name: str, request: Request) -> Any:
        self._check(name)
        body = await request.json()
        pin = request.headers.get(self.ingress.options.version_header)
        route, items = await self.ingress.stream_items(_inputs_of(body), self._key(request), pin, body.get("fields"))

        async def events() -> AsyncIterator[str]:
            try:
                async for item in items:
                    event = item.pop("event", "chunk")
                    if event == "final":
                        item["version"] = route.version
                    yield _sse(event, item)
            except Exception as exc:
                yield _sse("error", http_error(_ray.unwrap(exc)).body())

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"X-Dspex-Version": str(route.version), "Cache-Control": "no-cache"}
        )

    async def healthz(self, request: Request) -> Reply:
        ingress = self.ingress
        await ingress.ensure_routes()
        live = ingress.routes.live()
        body = {
            "status": "ok" if live else "no_version",
            "program": ingress.program,
            "epoch": ingress.routes.epoch,
            "weights": {str(r.version): r.weight for r in ingress.routes.routes},
        }
        return json_reply(body, 200 if live else 503)

    # -- the OpenAI facade --------------------------------------------------------------------
    async def models(self, request: Request) -> Reply:
        return json_reply({"object": "list", "data": [{"id": self.ingress.program, "object": "model", "owned_by": "dspex"}]})

    async def chat_completions(self, request: Request) -> Any:
        ingress = self.ingress
        body = await request.json()
        model = body.get("model")
        if model != ingress.program:
            raise NotFound(f"Model {model!r} is not served here; this application serves {ingress.program!r}.", hint="")
        key = self._key(request) or (str(body["user"]) if body.get("user") else None)
        pin = request.headers.get(ingress.options.version_header)
        route = await ingress.choose(key, pin)
        fields = await ingress.fields_of(route)
        inputs = inputs_from_messages(body.get("messages"), fields["inputs"])
        json_mode = (body.get("response_format") or {}).get("type") in ("json_object", "json_schema")
        rid = uuid.uuid4().hex[:24]
        if body.get("stream"):
            shown = [f for f in fields["outputs"] if f != "reasoning"][:1] or fields["outputs"][:1]
            route, items = await ingress.stream_items(inputs, key, str(route.version), shown)
            return StreamingResponse(
                self._chat_chunks(items, rid), media_type="text/event-stream", headers={"X-Dspex-Version": str(route.version)}
            )
        result = await ingress.apredict(inputs, key, str(route.version), rid)
        reply = completion_body(ingress.program, result["outputs"], json_mode=json_mode, request_id=rid)
        return json_reply(reply, 200, {"X-Dspex-Version": str(result["version"])})

    async def _chat_chunks(self, items: AsyncIterator[dict[str, Any]], rid: str) -> AsyncIterator[str]:
        program = self.ingress.program
        yield "data: " + json.dumps(chunk_body(program, rid, content="", role=True)) + "\n\n"
        streamed = False
        try:
            async for item in items:
                if item.get("event") == "chunk" and item.get("chunk"):
                    streamed = True
                    yield "data: " + json.dumps(chunk_body(program, rid, content=item["chunk"])) + "\n\n"
                elif item.get("event") == "final" and not streamed:
                    # the LM could not stream: send the whole answer as one chunk
                    text = completion_body(program, item["outputs"])["choices"][0]["message"]["content"]
                    yield "data: " + json.dumps(chunk_body(program, rid, content=text)) + "\n\n"
        except Exception as exc:
            yield "data: " + json.dumps(http_error(_ray.unwrap(exc)).body()) + "\n\n"
        yield "data: " + json.dumps(chunk_body(program, rid, finish=True)) + "\n\n"
        yield "data: [DONE]\n\n"

    # -- admin ----------------------------------------------------------------------------------
    def _admin(self, request: Request) -> tuple[Any, Reply | None]:
        options = self.ingress.options
        reason = admin_denial(
            request.headers.get("authorization"), env_var=options.admin_token_env, token_sha256_hex=options.admin_token_sha256
        )
        if reason is not None:
            body = {"error": {"type": "unauthorized", "message": reason, "code": 401}}
            return None, json_reply(body, 401, {"WWW-Authenticate": "Bearer"})
        supervisor = self.ingress.supervisor()
        if supervisor is None:
            message = f"No supervisor runs program {self.ingress.program!r}."
            return None, json_reply({"error": {"type": "unavailable", "message": message, "code": 503}}, 503)
        return supervisor, None

    async def _admin_call(self, request: Request, method: str, *args: Any) -> Reply:
        supervisor, denied = self._admin(request)
        if denied is not None:
            return denied
        result = await getattr(supervisor, method).remote(*args)
        if hasattr(result, "describe"):
            result = result.describe()
        await self.ingress.refresh()
        return json_reply(result)

    async def admin_status(self, request: Request) -> Reply:
        return await self._admin_call(request, "status")

    async def admin_deploy(self, request: Request) -> Reply:
        if (denied := self._admin(request)[1]) is not None:
            return denied
        from .specs import plan_from_config, spec_from_config

        body = await request.json()
        plan = plan_from_config(body.pop("plan", None))
        spec = spec_from_config(self.ingress.program, body)
        return await self._admin_call(request, "deploy", spec, plan)

    async def admin_weights(self, request: Request) -> Reply:
        if (denied := self._admin(request)[1]) is not None:
            return denied
        body = await request.json()
        weights = body.get("weights")
        if not isinstance(weights, dict):
            raise ValidationError('Send {"weights": {"<version>": percent, ...}}.', field="weights", constraint="object")
        known = {str(r.version): r.version for r in self.ingress.routes.routes}
        split = {known.get(str(v), v): float(w) for v, w in weights.items()}
        return await self._admin_call(request, "set_weights", split)

    async def admin_promote(self, request: Request) -> Reply:
        if (denied := self._admin(request)[1]) is not None:
            return denied
        body = await request.json() if await request.body() else {}
        return await self._admin_call(request, "promote", bool(body.get("full", False)))

    async def admin_rollback(self, request: Request) -> Reply:
        if (denied := self._admin(request)[1]) is not None:
            return denied
        body = await request.json() if await request.body() else {}
        return await self._admin_call(request, "rollback", str(body.get("reason", "rolled back by operator")))
