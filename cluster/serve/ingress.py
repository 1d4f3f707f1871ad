"""``ProgramIngress``: the HTTP front of one program's Serve application (FastAPI).

    POST {prefix}/v1/programs/{name}/predict   {"inputs": {...}} -> {"outputs", "version"}, X-Dspex-Version
    POST {prefix}/v1/programs/{name}/stream    the same, as server-sent events (chunk ..., final)
    POST {prefix}/v1/chat/completions           OpenAI facade, model = "<program>" (stream too)
    GET  {prefix}/v1/models                     the program, as OpenAI lists models
    GET  {prefix}/healthz                       200 when a version takes traffic, else 503
    GET  {prefix}/metrics                       dspex telemetry of this replica (Prometheus)
    GET  {prefix}/admin/status                  the supervisor's status          } bearer token
    POST {prefix}/admin/versions                deploy a version (+ rollout plan) }
    PUT  {prefix}/admin/weights                 set the traffic split            }
    POST {prefix}/admin/promote | /admin/rollback                                 }

Routing (``routes.py``): a pinned version (``X-Dspex-Version``), else the sticky key
(``X-Dspex-Session`` / ``X-Dspex-User``, or the OpenAI ``user`` field) hashed onto the weights,
else a random draw. The routes follow the ``HotSwapSupervisor`` (``graph.py`` explains the
link): a long-poll of ``watch(epoch)`` here, and ``user_config`` written by the supervisor's
side. A version that refuses a call as draining or moved (a swap in progress) makes the
ingress refresh its routes and send the call again, so a swap fails no request.

Other methods (``apredict``, ``routes_config``) serve callers holding a ``DeploymentHandle``.
"""

import asyncio
import json
import logging
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

from dspex.actors import _ray
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve

from dspex import telemetry
from dspex.errors import DSPexError, NotFound, Overloaded, ValidationError
from dspex.telemetry.names import SERVE_REQUEST

from .admin import admin_denial
from .http_errors import http_error
from .openai_facade import chunk_body, completion_body, inputs_from_messages
from .options import ServeOptions
from .routes import RouteSet, ServedRoute

__all__ = ["ProgramIngress", "fastapi_app"]

log = logging.getLogger("dspex.cluster.serve.ingress")

fastapi_app = FastAPI(title="dspex program", docs_url=None, redoc_url=None)


class _AsgiEndpoint:
    """An ASGI app as a route endpoint (a Mount would redirect /metrics to /metrics/)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


fastapi_app.add_route("/metrics", _AsgiEndpoint(telemetry.metrics_app()), methods=["GET"])  # type: ignore[arg-type]  # an ASGI endpoint


def _redirectable(exc: BaseException) -> bool:
    """A refusal that means "this version is leaving": refresh the routes and send again."""
    if isinstance(exc, Overloaded):
        return bool(exc.fields.get("moved") or exc.fields.get("draining"))
    return type(exc).__name__ == "DeploymentUnavailableError"


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError(f"The request body is not valid JSON: {exc}.", field="body", constraint="json") from None
    if not isinstance(body, dict):
        raise ValidationError("The request body must be a JSON object.", field="body", constraint="object")
    return body


def _inputs_of(body: dict[str, Any]) -> dict[str, Any]:
    inputs = body.get("inputs", body)
    if not isinstance(inputs, dict) or not inputs:
        raise ValidationError(
            'Send the program\'s inputs as {"inputs": {"<field>": value, ...}}.', field="inputs", constraint="object"
        )
    return inputs


def _note_version(exc: BaseException, version: Any) -> None:
    try:
        exc._dspex_served_version = version  # type: ignore[attr-defined]
    except AttributeError:
        pass


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(jsonable_encoder(data))}\n\n"


@serve.ingress(fastapi_app)
class ProgramIngress:
    def __init__(
        self, program: str, app: str, options: dict[str, Any], *versions: Any, bootstrap: dict[str, Any] | None = None
    ) -> None:
        self.program = program
        self.app_name = app
        self.options = ServeOptions.from_dict(options)
        self.routes = RouteSet(program)
        self.user_config_epoch = -1  # the epoch of the routes last received through user_config
        self.rng = random.Random()
        self._handles: dict[str, Any] = {}
        self._fields: dict[str, dict[str, list[str]]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._bootstrap: asyncio.Task[None] | None = None
        telemetry.enable_metrics()  # SERVE_REQUEST spans feed this replica's /metrics
        self._start_watcher()
        if bootstrap:
            from .app import register_config_versions

            # An application deployed from a config file: hand its versions to the
            # supervisor (which adopts the running deployments). In the background, so the
            # replica becomes ready while the supervisor starts.
            coro = register_config_versions(program, app, self.options, bootstrap)
            self._bootstrap = asyncio.get_running_loop().create_task(coro)

    # -- routes -------------------------------------------------------------------------------
    def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve's ``user_config`` hook: the durable copy of the routing table."""
        routes = RouteSet.from_config(self.program, config)
        self.user_config_epoch = routes.epoch
        self._install(routes)

    def _install(self, routes: RouteSet) -> None:
        newer = self.routes.newer(routes)
        if newer is not self.routes:
            self.routes = newer
            live = {d for r in newer.routes for d in r.deployments}
            for name in [n for n in self._handles if n not in live]:
                self._handles.pop(name, None)

    def _supervisor(self) -> Any:
        return _ray.lookup(_ray.supervisor_name(self.program))

    def _start_watcher(self) -> None:
        if self._watcher is not None and not self._watcher.done():
            return
        try:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        except RuntimeError:
            self._watcher = None  # no loop yet: the first request starts it

    async def _watch(self) -> None:
        failures = 0
        while True:
            supervisor = self._supervisor()
            if supervisor is None:
                await asyncio.sleep(1.0)
                continue
            try:
                table = await supervisor.watch.remote(self.routes.epoch, self.options.watch_timeout_s)
                failures = 0
            except Exception:
                failures += 1
                await asyncio.sleep(min(2.0, 0.05 * 2 ** min(failures, 6)))
                continue
            if table is not None:
                self._install(RouteSet.from_table(table))

    async def _refresh(self) -> None:
        supervisor = self._supervisor()
        if supervisor is None:
            return
        try:
            self._install(RouteSet.from_table(await supervisor.routing_table.remote()))
        except Exception:
            log.debug("routing table refresh of %s failed", self.program, exc_info=True)

    def _handle(self, deployment: str, stream: bool = False) -> Any:
        handle = self._handles.get(deployment)
        if handle is None:
            handle = self._handles[deployment] = serve.get_deployment_handle(deployment, self.app_name)
        return handle.options(stream=True) if stream else handle

    async def _choose(self, key: str | None, pin: str | None) -> ServedRoute:
        self._start_watcher()
        if self.routes.epoch < 0:
            await self._refresh()
        try:
            return self.routes.choose(key=key, pin=pin, rng=self.rng)
        except DSPexError:
            await self._refresh()  # a version deployed a moment ago may not have reached us
            return self.routes.choose(key=key, pin=pin, rng=self.rng)

    # -- calls --------------------------------------------------------------------------------
    async def apredict(
        self, inputs: dict[str, Any], key: str | None = None, pin: str | None = None, request_id: str | None = None
    ) -> dict[str, Any]:
        """Run the program: ``{"version", "outputs"}`` (for DeploymentHandle callers)."""
        rid = request_id or uuid.uuid4().hex[:16]
        async with telemetry.span(SERVE_REQUEST, program=self.program, version="") as span:
            for attempt in range(self.options.max_redirects + 1):
                route = await self._choose(key, pin)
                span.meta(version=str(route.version))
                deployment = route.deployments[0] if len(route.deployments) == 1 else self.rng.choice(route.deployments)
                try:
                    outputs = await self._handle(deployment).predict.remote(inputs, route.version, rid)
                    return {"version": route.version, "outputs": outputs}
                except Exception as exc:
                    cause = _ray.unwrap(exc)
                    if not _redirectable(cause) or attempt == self.options.max_redirects:
                        _note_version(cause, route.version)
                        raise cause from None
                    await self._refresh()
                    if attempt:
                        await asyncio.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    async def _stream_items(
        self, inputs: dict[str, Any], key: str | None, pin: str | None, fields: list[str] | None
    ) -> tuple[ServedRoute, AsyncIterator[dict[str, Any]]]:
        """The route and the version's stream, its first item already received (a refusal
        before it is re-routed like ``apredict``)."""
        for attempt in range(self.options.max_redirects + 1):
            route = await self._choose(key, pin)
            gen = self._handle(self.rng.choice(route.deployments), stream=True).stream.remote(inputs, route.version, fields)
            try:
                first = await gen.__anext__()
            except StopAsyncIteration:
                first = None
            except Exception as exc:
                cause = _ray.unwrap(exc)
                if not _redirectable(cause) or attempt == self.options.max_redirects:
                    raise cause from None
                await self._refresh()
                continue

            async def items(first: Any = first, gen: Any = gen) -> AsyncIterator[dict[str, Any]]:
                if first is not None:
                    yield first
                async for item in gen:
                    yield item

            return route, items()
        raise AssertionError("unreachable")

    async def fields_of(self, route: ServedRoute) -> dict[str, list[str]]:
        key = str(route.version)
        if key not in self._fields:
            self._fields[key] = await self._handle(route.deployments[0]).fields.remote()
        return self._fields[key]

    def routes_config(self) -> dict[str, Any]:
        """The routes this replica follows, and the epoch its ``user_config`` carried."""
        return {**self.routes.to_config(), "user_config_epoch": self.user_config_epoch}

    # -- HTTP helpers -------------------------------------------------------------------------
    def _key(self, request: Request) -> str | None:
        for header in self.options.sticky_headers:
            value = request.headers.get(header)
            if value:
                return value
        return None

    def _error(self, exc: BaseException) -> JSONResponse:
        cause = _ray.unwrap(exc)
        err = http_error(cause, retry_after_s=self.options.retry_after_s)
        if err.status >= 500 and err.type == "internal_error":
            log.exception("request to %s failed", self.program, exc_info=exc)
        headers = dict(err.headers)
        version = getattr(cause, "_dspex_served_version", None)
        if version is not None:
            headers["X-Dspex-Version"] = str(version)  # which version failed (rollout dashboards)
        return JSONResponse(err.body(), status_code=err.status, headers=headers)

    def _check(self, name: str) -> None:
        if name != self.program:
            raise NotFound(f"This application serves program {self.program!r}, not {name!r}.", hint="")

    # -- program endpoints ----------------------------------------------------------------------
    @fastapi_app.post("/v1/programs/{name}/predict")
    async def predict(self, name: str, request: Request) -> Response:
        try:
            self._check(name)
            inputs = _inputs_of(await _json(request))
            result = await self.apredict(inputs, self._key(request), request.headers.get(self.options.version_header))
        except Exception as exc:
            return self._error(exc)
        body = {"program": self.program, **result}
        return JSONResponse(jsonable_encoder(body), headers={"X-Dspex-Version": str(result["version"])})

    @fastapi_app.post("/v1/programs/{name}/stream")
    async def stream(self, name: str, request: Request) -> Response:
        try:
            self._check(name)
            body = await _json(request)
            fields = body.get("fields")
            route, items = await self._stream_items(
                _inputs_of(body), self._key(request), request.headers.get(self.options.version_header), fields
            )
        except Exception as exc:
            return self._error(exc)

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

    @fastapi_app.get("/healthz")
    async def healthz(self) -> Response:
        self._start_watcher()
        if self.routes.epoch < 0:
            await self._refresh()
        live = self.routes.live()
        body = {
            "status": "ok" if live else "no_version",
            "program": self.program,
            "epoch": self.routes.epoch,
            "weights": {str(r.version): r.weight for r in self.routes.routes},
        }
        return JSONResponse(body, status_code=200 if live else 503)

    # -- the OpenAI facade --------------------------------------------------------------------
    @fastapi_app.get("/v1/models")
    async def models(self) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": self.program, "object": "model", "owned_by": "dspex"}]})

    @fastapi_app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        try:
            body = await _json(request)
            model = body.get("model")
            if model != self.program:
                raise NotFound(f"Model {model!r} is not served here; this application serves {self.program!r}.", hint="")
            key = self._key(request) or (str(body["user"]) if body.get("user") else None)
            pin = request.headers.get(self.options.version_header)
            route = await self._choose(key, pin)
            fields = await self.fields_of(route)
            inputs = inputs_from_messages(body.get("messages"), fields["inputs"])
            json_mode = (body.get("response_format") or {}).get("type") in ("json_object", "json_schema")
            rid = uuid.uuid4().hex[:24]
            if body.get("stream"):
                shown = [f for f in fields["outputs"] if f != "reasoning"][:1] or fields["outputs"][:1]
                route, items = await self._stream_items(inputs, key, str(route.version), shown)
                return StreamingResponse(
                    self._chat_chunks(items, rid), media_type="text/event-stream",
                    headers={"X-Dspex-Version": str(route.version)},
                )
            result = await self.apredict(inputs, key, str(route.version), rid)
        except Exception as exc:
            return self._error(exc)
        reply = completion_body(self.program, result["outputs"], json_mode=json_mode, request_id=rid)
        return JSONResponse(jsonable_encoder(reply), headers={"X-Dspex-Version": str(result["version"])})

    async def _chat_chunks(self, items: AsyncIterator[dict[str, Any]], rid: str) -> AsyncIterator[str]:
        yield "data: " + json.dumps(chunk_body(self.program, rid, content="", role=True)) + "\n\n"
        streamed = False
        try:
            async for item in items:
                if item.get("event") == "chunk" and item.get("chunk"):
                    streamed = True
                    yield "data: " + json.dumps(chunk_body(self.program, rid, content=item["chunk"])) + "\n\n"
                elif item.get("event") == "final" and not streamed:
                    # the LM could not stream: send the whole answer as one chunk
                    text = completion_body(self.program, item["outputs"])["choices"][0]["message"]["content"]
                    yield "data: " + json.dumps(chunk_body(self.program, rid, content=text)) + "\n\n"
        except Exception as exc:
            yield "data: " + json.dumps(http_error(_ray.unwrap(exc)).body()) + "\n\n"
        yield "data: " + json.dumps(chunk_body(self.program, rid, finish=True)) + "\n\n"
        yield "data: [DONE]\n\n"

    # -- admin ----------------------------------------------------------------------------------
    def _admin(self, request: Request) -> tuple[Any, JSONResponse | None]:
        reason = admin_denial(
            request.headers.get("authorization"),
            env_var=self.options.admin_token_env,
            token_sha256_hex=self.options.admin_token_sha256,
        )
        if reason is not None:
            body = {"error": {"type": "unauthorized", "message": reason, "code": 401}}
            return None, JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        supervisor = self._supervisor()
        if supervisor is None:
            body = {"error": {"type": "unavailable", "message": f"No supervisor runs program {self.program!r}.", "code": 503}}
            return None, JSONResponse(body, status_code=503)
        return supervisor, None

    async def _admin_call(self, request: Request, method: str, *args: Any) -> Response:
        supervisor, denied = self._admin(request)
        if denied is not None:
            return denied
        try:
            result = await getattr(supervisor, method).remote(*args)
        except Exception as exc:
            return self._error(exc)
        if hasattr(result, "describe"):
            result = result.describe()
        await self._refresh()
        return JSONResponse(jsonable_encoder(result))

    @fastapi_app.get("/admin/status")
    async def admin_status(self, request: Request) -> Response:
        return await self._admin_call(request, "status")

    @fastapi_app.post("/admin/versions")
    async def admin_deploy(self, request: Request) -> Response:
        if (denied := self._admin(request)[1]) is not None:
            return denied
        from .specs import plan_from_config, spec_from_config

        try:
            body = await _json(request)
            plan = plan_from_config(body.pop("plan", None))
            spec = spec_from_config(self.program, body)
        except Exception as exc:
            return self._error(exc)
        return await self._admin_call(request, "deploy", spec, plan)

    @fastapi_app.put("/admin/weights")
    async def admin_weights(self, request: Request) -> Response:
        if (denied := self._admin(request)[1]) is not None:
            return denied
        try:
            body = await _json(request)
            weights = body.get("weights")
            if not isinstance(weights, dict):
                raise ValidationError('Send {"weights": {"<version>": percent, ...}}.', field="weights", constraint="object")
            known = {str(r.version): r.version for r in self.routes.routes}
            split = {known.get(str(v), v): float(w) for v, w in weights.items()}
        except Exception as exc:
            return self._error(exc)
        return await self._admin_call(request, "set_weights", split)

    @fastapi_app.post("/admin/promote")
    async def admin_promote(self, request: Request) -> Response:
        try:
            body = await _json(request) if await request.body() else {}
        except Exception as exc:
            return self._error(exc)
        return await self._admin_call(request, "promote", bool(body.get("full", False)))

    @fastapi_app.post("/admin/rollback")
    async def admin_rollback(self, request: Request) -> Response:
        try:
            body = await _json(request) if await request.body() else {}
        except Exception as exc:
            return self._error(exc)
        return await self._admin_call(request, "rollback", str(body.get("reason", "rolled back by operator")))
