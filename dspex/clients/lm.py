"""``LM``: DSPy's ``dspy.LM`` over httpx, for OpenAI-compatible servers and Anthropic.

    lm = dspex.LM("openai/gpt-4o-mini", temperature=0.0, max_tokens=1000)
    lm = dspex.LM("openai/sim-small", api_base="http://127.0.0.1:8000/v1")  # vLLM, Ollama, sim...
    lm = dspex.LM("anthropic/claude-3-5-haiku-latest", num_retries=5, rpm=50)

A call goes: cache (memory, disk, or an identical call already in flight) -> per-endpoint
circuit breaker -> rate limiter -> HTTP attempt -> retries with backoff for retryable failures
-> usage and cost -> cache. Keyword arguments the caller sets (temperature, n, stop, top_p,
response_format, tools, ...) go on the wire; the LM's own settings (cache, rollout_id,
num_retries, api_base, ...) never do.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import httpx

from dspex import telemetry
from dspex.clients import pricing
from dspex.clients._secret import Secret
from dspex.clients.base_lm import BaseLM, Choice, LMResponse, ToolCall, Usage
from dspex.clients.cache import LMCache, get_cache, request_key
from dspex.clients.errors_map import error_from_exception, error_from_response
from dspex.clients.providers import Capabilities, ProviderSpec, resolve_model
from dspex.clients.resilience import BreakerConfig, CallStats, Endpoint, RetryPolicy, endpoint_for
from dspex.clients.transport import AiohttpPool, PoolLimits, Reply, Timeouts, check_transport, default_pool
from dspex.clients.wire import anthropic_messages, openai_chat
from dspex.clients.wire._types import StreamChunk, WireRequest
from dspex.clients.wire.assemble import StreamAssembler
from dspex.clients.wire.sse import iter_sse
from dspex.clients.wire.strategy import plan_request
from dspex.errors import BadResponse, ConfigurationError, ProviderError
from dspex.telemetry import names

__all__ = ["LM"]

log = logging.getLogger("dspex.clients")

_CACHE = "lm"  # the ``cache`` label of this cache's hit/miss events

_WIRES = {"openai_chat": openai_chat, "anthropic_messages": anthropic_messages}
# Settings of the LM itself: never sent on the wire, never part of the cache key.
_LOCAL_KWARGS = frozenset(
    {"cache", "rollout_id", "num_retries", "api_key", "api_base", "api_key_env", "timeout", "timeout_s",
     "callbacks", "provider", "finetuning_model", "launch_kwargs", "train_kwargs", "use_developer_role"}
)
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (httpx.HTTPError, aiohttp.ClientError, OSError, TimeoutError)

# Identical calls in flight, per event loop: later callers await the first one's task.
_inflight: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Task[LMResponse]]] = (
    weakref.WeakKeyDictionary()
)


def _response_to_cache(response: LMResponse) -> dict[str, Any]:
    return {
        "model": response.model,
        "provider": response.provider,
        "request_id": response.request_id,
        "usage": [response.usage.prompt_tokens, response.usage.completion_tokens, response.usage.estimated],
        "choices": [
            {
                "text": c.text,
                "finish_reason": c.finish_reason,
                "reasoning_content": c.reasoning_content,
                "logprobs": c.logprobs,
                "tool_calls": None
                if c.tool_calls is None
                else [{"name": t.name, "arguments": t.arguments, "id": t.id} for t in c.tool_calls],
            }
            for c in response.choices
        ],
    }


def _response_from_cache(data: dict[str, Any]) -> LMResponse:
    """A cache hit: the stored reply with the usage it had when it was paid for, and no cost
    (nothing was spent now). ``cache_hit=True`` tells consumers not to count the tokens again."""
    choices = [
        Choice(
            text=c["text"],
            tool_calls=None if c["tool_calls"] is None else [ToolCall(**t) for t in c["tool_calls"]],
            finish_reason=c["finish_reason"],
            reasoning_content=c["reasoning_content"],
            logprobs=c["logprobs"],
        )
        for c in data["choices"]
    ]
    return LMResponse(
        model=data["model"],
        choices=choices,
        usage=_cached_usage(data.get("usage")),
        cost_usd=0.0,
        provider=data["provider"],
        cache_hit=True,
        request_id=data["request_id"],
    )


def _cached_usage(raw: Any) -> Usage:
    if isinstance(raw, list | tuple) and len(raw) == 3:
        return Usage(prompt_tokens=int(raw[0]), completion_tokens=int(raw[1]), estimated=bool(raw[2]))
    return Usage()


class LM(BaseLM):
    """A language model behind an HTTP API, in DSPy's shape.

    Args:
        model: ``"provider/name"``: ``openai/`` (any OpenAI-compatible server with
            ``api_base``), ``anthropic/``, ``ollama/``, ``vllm/``, ``llamacpp/``; a bare name
            goes to OpenAI, or to Anthropic when it starts with "claude".
        temperature, max_tokens: sampling defaults (``max_tokens`` goes to OpenAI as
            ``max_completion_tokens``, as DSPy sends it).
        cache: use the response cache (also per call: ``lm(..., cache=False)``).
        num_retries: retries of retryable failures (429, 5xx, timeouts, connection errors).
        api_key / api_key_env: the key, or the environment variable holding it (default
            ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY``). Never shown, logged or saved.
        api_base: the server's URL, e.g. ``http://127.0.0.1:8000/v1``.
        timeout_s: a number (total seconds per attempt) or a ``Timeouts``.
        rpm, tpm: requests / tokens per minute for this endpoint (shared by every LM object
            on the same endpoint in this process); callers wait, up to ``max_wait_s``.
        breaker: a ``BreakerConfig`` (or its fields as a dict) for this endpoint's breaker.
        retry: a full ``RetryPolicy`` (overrides ``num_retries``).
        capabilities: override what the endpoint supports (``{"json_schema": False}``, ...).
        http_client: an ``httpx.AsyncClient`` to send through (used as is: its auth, hooks...).
        http_transport: an httpx transport to send through, e.g. ``httpx.MockTransport``.
        transport: the pooled transport when neither is given: "aiohttp" (default) or "httpx".
        endpoint: an ``Endpoint`` (limiter + breaker) to use instead of the shared one.
        **kwargs: any other request setting (top_p, stop, n, seed, rollout_id, ...).
    """

    def __init__(
        self,
        model: str,
        model_type: str = "chat",
        temperature: float | None = None,
        max_tokens: int | None = None,
        cache: bool = True,
        num_retries: int = 3,
        *,
        api_key: str | None = None,
        api_base: str | None = None,
        api_key_env: str | None = None,
        timeout_s: float | Timeouts | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        max_wait_s: float | None = None,
        breaker: BreakerConfig | dict[str, Any] | None = None,
        retry: RetryPolicy | None = None,
        capabilities: Capabilities | dict[str, bool] | None = None,
        http_client: httpx.AsyncClient | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        pool_limits: PoolLimits | None = None,
        transport: str = "aiohttp",
        endpoint: Endpoint | None = None,
        response_cache: LMCache | None = None,
        **kwargs: Any,
    ) -> None:
        if model_type != "chat":
            raise ConfigurationError(
                f"model_type={model_type!r} is not supported; dspex.LM speaks chat APIs (model_type='chat')."
            )
        if "max_completion_tokens" in kwargs and max_tokens is None:
            max_tokens = kwargs.pop("max_completion_tokens")
        if "timeout" in kwargs and timeout_s is None:  # DSPy / LiteLLM spelling
            timeout_s = kwargs.pop("timeout")
        for name in ("callbacks", "provider", "finetuning_model", "launch_kwargs", "train_kwargs", "use_developer_role"):
            kwargs.pop(name, None)  # accepted for DSPy compatibility; not used by this client
        super().__init__(model, model_type, temperature=temperature, max_tokens=max_tokens, cache=cache, **kwargs)
        self.spec: ProviderSpec = resolve_model(
            model, api_base=api_base, api_key_env=api_key_env, capabilities=capabilities
        )
        self.provider = self.spec.name
        self.capabilities = self.spec.capabilities.features()
        self.api_base = api_base
        self.api_key_env = api_key_env
        self._secret = Secret.resolve(api_key, self.spec.key_env_vars)
        if isinstance(timeout_s, Timeouts):
            self.timeouts = timeout_s
        elif timeout_s is not None:
            self.timeouts = Timeouts(total_s=float(timeout_s), read_s=float(timeout_s))
        else:
            self.timeouts = Timeouts()
        self.num_retries = num_retries
        self.retry = retry or RetryPolicy(num_retries=num_retries)
        self.rpm, self.tpm = rpm, tpm
        self.breaker_config = BreakerConfig(**breaker) if isinstance(breaker, dict) else breaker
        self.max_wait_s = max_wait_s
        self.pool_limits = pool_limits
        self.transport = check_transport(transport)
        self._http_client = http_client
        self._http_transport = http_transport
        self._endpoint = endpoint
        self._response_cache = response_cache
        if self.kwargs.get("rollout_id") is not None and not self.kwargs.get("temperature"):
            log.warning(
                "rollout_id=%r has no effect on %s at temperature 0 (the reply is the same); it only "
                "keeps cache entries apart. Set temperature > 0 to sample a new reply.",
                self.kwargs["rollout_id"], model,
            )
        if endpoint is None:
            self._endpoint = endpoint_for(
                self.spec.endpoint_id, rpm=rpm, tpm=tpm, breaker=self.breaker_config, max_wait_s=max_wait_s
            )

    # -- plumbing -------------------------------------------------------------------------------
    @property
    def endpoint(self) -> Endpoint:
        if self._endpoint is None:  # after unpickling: rejoin this process's shared endpoint
            self._endpoint = endpoint_for(
                self.spec.endpoint_id, rpm=self.rpm, tpm=self.tpm, breaker=self.breaker_config,
                max_wait_s=self.max_wait_s,
            )
        return self._endpoint

    @property
    def response_cache(self) -> LMCache:
        # (an empty LMCache is falsy: it has a length)
        return self._response_cache if self._response_cache is not None else get_cache()

    # Parsed once: httpx spends more time parsing a URL string than sending the request.
    def _url(self) -> httpx.URL:
        url = self.__dict__.get("_parsed_url")
        if url is None:
            url = self.__dict__["_parsed_url"] = httpx.URL(self.spec.url)
        return url

    def _request_extensions(self) -> dict[str, Any]:
        ext = self.__dict__.get("_parsed_extensions")
        if ext is None:
            ext = self.__dict__["_parsed_extensions"] = {"timeout": self.timeouts.httpx().as_dict()}
        return dict(ext)

    def _pool(self) -> httpx.AsyncBaseTransport | None:
        """The default pool's transport for this loop, or None when a client or transport
        was injected."""
        if self._http_client is not None or self._http_transport is not None:
            return None
        return default_pool.get(self.pool_limits, self.transport)

    async def _http_send(self, request: httpx.Request) -> httpx.Response:
        """Send through the injected client, else straight to a transport (see transport.py)."""
        if self._http_client is not None:
            return await self._http_client.send(request, stream=True)
        transport = self._http_transport or default_pool.get(self.pool_limits, self.transport)
        return await transport.handle_async_request(request)

    def _aiohttp_timeout(self) -> aiohttp.ClientTimeout:
        timeout = self.__dict__.get("_parsed_aiohttp_timeout")
        if timeout is None:
            timeout = self.__dict__["_parsed_aiohttp_timeout"] = self.timeouts.aiohttp()
        return timeout

    def _prepare(
        self, messages: list[dict[str, Any]], kwargs: dict[str, Any], *, stream: bool
    ) -> tuple[WireRequest, str | None]:
        params = dict(kwargs)
        use_cache = bool(params.pop("cache", self.cache))
        rollout_id = params.pop("rollout_id", None)
        call_key = params.pop("api_key", None)
        for name in _LOCAL_KWARGS:
            params.pop(name, None)
        plan = plan_request(params, self.spec.capabilities)
        request = _WIRES[self.spec.wire].build_request(self.spec, messages, params, plan, stream=stream)
        if call_key:
            request.secret = Secret(call_key)
        if not use_cache:
            return request, None
        body = {k: v for k, v in request.body.items() if k not in ("stream", "stream_options")}
        key = request_key(
            {"provider": self.spec.name, "body": body, "fan_out": request.fan_out, "rollout_id": rollout_id}
        )
        return request, key

    def _account(self, response: LMResponse, messages: list[dict[str, Any]]) -> None:
        """Fill in an estimated usage when the reply had none, and the cost."""
        if response.usage.estimated:
            out = [c.text or "" for c in response.choices] + [
                json.dumps(t.arguments) for c in response.choices for t in (c.tool_calls or [])
            ]
            response.usage = Usage(
                prompt_tokens=pricing.estimate_tokens(messages),
                completion_tokens=pricing.estimate_tokens(out),
                estimated=True,
            )
        u = response.usage
        response.cost_usd = pricing.cost_usd(self.spec.model, u.prompt_tokens, u.completion_tokens, self.spec.name)
        if response.cost_usd is None and response.model != self.spec.model:
            response.cost_usd = pricing.cost_usd(response.model, u.prompt_tokens, u.completion_tokens, self.spec.name)

    def _tokens_estimate(self, request: WireRequest) -> int:
        if self.endpoint.limiter.tokens is None:
            return 0
        body = request.body
        out = body.get("max_completion_tokens") or body.get("max_tokens") or 0
        return pricing.estimate_tokens(body.get("messages")) + int(out) * int(body.get("n", 1))

    # -- one HTTP attempt -----------------------------------------------------------------------
    async def _send(self, request: WireRequest, *, stream: bool) -> httpx.Response | Reply:
        """One HTTP exchange. A whole call on the default pool goes through aiohttp's types
        (``AiohttpPool.post``); a stream, or an injected client or transport, through httpx's."""
        spec = self.spec
        secret = request.secret if request.secret is not None else self._secret
        content = json.dumps(request.body).encode("utf-8")
        pool = None if stream else self._pool()
        response: httpx.Response | Reply
        try:
            if isinstance(pool, AiohttpPool):  # total_s is aiohttp's own total timeout here
                response = await pool.post(spec.url, spec.headers(secret), content, self._aiohttp_timeout())
            else:
                async with asyncio.timeout(self.timeouts.total_s):
                    http_request = httpx.Request(
                        "POST", self._url(), headers=spec.headers(secret), content=content,
                        extensions=self._request_extensions(),
                    )
                    response = await self._http_send(http_request)
                    if stream and response.status_code < 400:
                        return response
                    try:
                        await response.aread()
                    finally:
                        await response.aclose()
        except _TRANSPORT_ERRORS as exc:
            raise error_from_exception(
                exc, provider=spec.name, model=spec.model, timeout_s=self.timeouts.total_s, secret=secret
            ) from exc
        telemetry.emit(
            names.PROVIDER_RESPONSE,
            {"count": 1},
            {"provider": spec.name, "model": spec.model, "status": response.status_code},
        )
        if response.status_code >= 400:
            raise error_from_response(response, response.content, provider=spec.name, model=spec.model, secret=secret)
        return response

    async def _attempt(self, request: WireRequest, messages: list[dict[str, Any]], stats: CallStats) -> LMResponse:
        """One HTTP attempt, as one ``provider.request`` span (a retry is another span)."""
        t0 = time.perf_counter()
        with telemetry.span(
            names.PROVIDER_REQUEST, provider=self.spec.name, model=self.spec.model,
            endpoint=self.spec.endpoint_id, strategy=request.strategy.value, attempt=stats.retries,
        ) as sp:
            try:
                response = await self._send(request, stream=False)
                try:
                    data = json.loads(response.content)
                except ValueError as exc:
                    raise BadResponse(
                        f"{self.spec.name} model {self.spec.model!r} answered HTTP {response.status_code} "
                        f"with a body that is not JSON: {response.content[:200]!r}.",
                        provider=self.spec.name,
                        model=self.spec.model,
                        status=response.status_code,
                        provider_message="body is not JSON",
                    ) from exc
                reply = _WIRES[self.spec.wire].parse_reply(self.spec, data, request)
            except ProviderError as exc:
                sp.meta(status=exc.fields.get("status"), retries=stats.retries)
                raise
            self._account(reply, messages)
            reply.latency_s = time.perf_counter() - t0
            self._measure_attempt(sp, reply, stats)
        return reply

    @staticmethod
    def _measure_attempt(sp: telemetry.Span, reply: LMResponse, stats: CallStats) -> None:
        sp.set(
            input_tokens=reply.usage.prompt_tokens,
            output_tokens=reply.usage.completion_tokens,
            cost_usd=reply.cost_usd or 0.0,
            retries=stats.retries,
        )
        sp.meta(outcome="ok", status=200, usage_estimated=reply.usage.estimated)

    async def _resilient(self, attempt: Callable[[], Awaitable[Any]], request: WireRequest, stats: CallStats) -> Any:
        return await self.endpoint.run(
            attempt,
            retry=self.retry,
            provider=self.spec.name,
            model=self.spec.model,
            tokens_estimate=self._tokens_estimate(request),
            tokens_used=lambda r: r.usage.total_tokens if isinstance(r, LMResponse) else 0,
            stats=stats,
        )

    # -- a whole call ---------------------------------------------------------------------------
    async def _call(self, request: WireRequest, messages: list[dict[str, Any]], key: str | None) -> LMResponse:
        t0 = time.perf_counter()
        if request.fan_out > 1:
            stats_list = [CallStats() for _ in range(request.fan_out)]
            parts = await _gather([
                self._resilient(lambda st=st: self._attempt(request, messages, st), request, st)  # type: ignore[misc]
                for st in stats_list
            ])
            response = _merge(parts)
            self._account(response, messages)
        else:
            stats = CallStats()
            response = await self._resilient(lambda: self._attempt(request, messages, stats), request, stats)
        response.latency_s = time.perf_counter() - t0
        if key is not None:
            self.response_cache.put(key, _response_to_cache(response))
        return response

    async def aforward(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> LMResponse:
        messages = self._messages(prompt, messages)
        request, key = self._prepare(messages, kwargs, stream=False)
        if key is None:
            return await self._call(request, messages, None)
        found = self.response_cache.get(key)
        if found is not None:
            telemetry.emit(names.CACHE_HIT, {"count": 1}, {"cache": _CACHE, "layer": found[1], "model": self.model})
            return _response_from_cache(found[0])
        loop = asyncio.get_running_loop()
        inflight = _inflight.setdefault(loop, {})
        task = inflight.get(key)
        if task is not None:
            telemetry.emit(names.CACHE_HIT, {"count": 1}, {"cache": _CACHE, "layer": "coalesced", "model": self.model})
            return _response_from_cache(_response_to_cache(await asyncio.shield(task)))
        telemetry.emit(names.CACHE_MISS, {"count": 1}, {"cache": _CACHE, "model": self.model})
        task = loop.create_task(self._call(request, messages, key))
        inflight[key] = task
        task.add_done_callback(lambda t: _forget(inflight, key, t))
        return await asyncio.shield(task)

    # -- streaming ------------------------------------------------------------------------------
    async def astream(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> AsyncIterator[StreamChunk]:
        """Stream a reply as ``StreamChunk``s; the last has ``done=True`` and the ``response``.

        Retries, the breaker and the rate limiter apply until the stream opens; a failure
        mid-stream raises. The finished reply is cached and recorded in ``history``.
        """
        messages = self._messages(prompt, messages)
        merged = {**self.kwargs, **kwargs}
        request, key = self._prepare(messages, merged, stream=True)
        if request.fan_out > 1:
            raise ConfigurationError(
                f"{self.spec.name} has no native n; stream one choice at a time (n=1)."
            )
        t0 = time.perf_counter()
        with telemetry.span(names.LM_CALL, model=self.model, provider=self.provider) as lm_span:
            found = self.response_cache.get(key) if key is not None else None
            if found is not None:
                telemetry.emit(names.CACHE_HIT, {"count": 1}, {"cache": _CACHE, "layer": found[1], "model": self.model})
                cached = _response_from_cache(found[0])
                for i, choice in enumerate(cached.choices):
                    yield StreamChunk(text=choice.text or "", index=i, finish_reason=choice.finish_reason)
            else:
                if key is not None:
                    telemetry.emit(names.CACHE_MISS, {"count": 1}, {"cache": _CACHE, "model": self.model})
                streamed: LMResponse | None = None
                async for chunk in self._stream_call(request, messages, key):
                    if chunk.done:
                        streamed = chunk.response
                    else:
                        yield chunk
            response = cached if found is not None else streamed
            if response is None:  # _stream_call always ends with a done chunk; be explicit anyway
                raise BadResponse(f"{self.spec.name} stream ended without a reply.", provider=self.spec.name)
            self._measure(lm_span, response)
        self._finish(prompt, messages, merged, response, time.perf_counter() - t0)
        yield StreamChunk(done=True, response=response, usage=response.usage)

    async def _stream_call(
        self, request: WireRequest, messages: list[dict[str, Any]], key: str | None
    ) -> AsyncIterator[StreamChunk]:
        wire = _WIRES[self.spec.wire]
        spec = self.spec
        t0 = time.perf_counter()
        stats = CallStats()
        assembler = StreamAssembler(provider=spec.name, model=spec.model, structured_tool=request.structured_tool)
        with telemetry.span(
            names.PROVIDER_REQUEST, provider=spec.name, model=spec.model, endpoint=spec.endpoint_id,
            strategy=request.strategy.value, stream=True,
        ) as sp:
            try:
                http_response = await self._resilient(lambda: self._send(request, stream=True), request, stats)
                try:
                    done = False
                    async for event, data in iter_sse(http_response.aiter_lines()):
                        chunks, done = wire.parse_stream_event(spec, event, data, assembler)
                        for chunk in chunks:
                            assembler.add(chunk)
                            if request.structured_tool:
                                continue  # the JSON arrives whole at the end (below)
                            if chunk.text or chunk.reasoning or chunk.tool_calls or chunk.finish_reason:
                                yield chunk
                        if done:
                            break
                except _TRANSPORT_ERRORS as exc:
                    raise error_from_exception(
                        exc, provider=spec.name, model=spec.model, timeout_s=self.timeouts.total_s,
                        secret=self._secret,
                    ) from exc
                finally:
                    await http_response.aclose()
                if not done:
                    raise BadResponse(
                        f"{spec.name} model {spec.model!r} ended its stream before the final event.",
                        provider=spec.name, model=spec.model, provider_message="stream cut short",
                    )
                response = assembler.response()
            except ProviderError as exc:
                sp.set(retries=stats.retries)
                sp.meta(outcome=type(exc).__name__, status=exc.fields.get("status"))
                raise
            if request.structured_tool:
                for i, choice in enumerate(response.choices):
                    yield StreamChunk(text=choice.text or "", index=i, finish_reason=choice.finish_reason)
            self._account(response, messages)
            response.latency_s = time.perf_counter() - t0
            sp.set(
                input_tokens=response.usage.prompt_tokens, output_tokens=response.usage.completion_tokens,
                cost_usd=response.cost_usd or 0.0, retries=stats.retries,
            )
            sp.meta(outcome="ok", status=200)
        if key is not None:
            self.response_cache.put(key, _response_to_cache(response))
        yield StreamChunk(done=True, response=response)

    # -- lifecycle, copies, saved state -----------------------------------------------------------
    async def aclose(self) -> None:
        """Close the pooled transports of the running loop (an injected client is the caller's)."""
        if self._http_client is None and self._http_transport is None:
            await default_pool.aclose()

    def dump_state(self) -> dict[str, Any]:
        state = super().dump_state()
        state["num_retries"] = self.num_retries
        for name in ("api_base", "api_key_env", "rpm", "tpm"):
            if getattr(self, name) is not None:
                state[name] = getattr(self, name)
        if self.timeouts != Timeouts():
            state["timeout_s"] = self.timeouts.total_s
        return state

    def __copy__(self) -> LM:
        new = self.__class__.__new__(self.__class__)
        new.__dict__.update(self.__dict__)
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> LM:
        # Connections, the endpoint's limiter/breaker and the key stay shared: they belong to
        # the process, not to one program copy.
        new = self.__copy__()
        new.kwargs = copy.deepcopy(self.kwargs, memo)
        new.history = deque(self.history, maxlen=self.history.maxlen)
        return new

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_http_client"] = None  # sockets do not travel
        state["_http_transport"] = None
        state["_endpoint"] = None  # the receiving process has its own shared endpoint
        state["_response_cache"] = None
        state.pop("_parsed_url", None)
        state.pop("_parsed_extensions", None)
        state["history"] = deque(maxlen=self.history.maxlen)
        return state  # the Secret pickles as the name of its env var, never the key

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        secret: Secret = self._secret
        if secret.env_var is None:  # the key was an argument: look where the provider's key lives
            self._secret = Secret.resolve(None, self.spec.key_env_vars)

    def __repr__(self) -> str:
        base = f", api_base={self.spec.base_url!r}" if self.api_base else ""
        return f"LM(model={self.model!r}{base})"


def _forget(inflight: dict[str, asyncio.Task[LMResponse]], key: str, task: asyncio.Task[LMResponse]) -> None:
    if inflight.get(key) is task:
        del inflight[key]
    if not task.cancelled():
        task.exception()  # retrieved: the callers got it; no "never retrieved" warning


async def _gather(coros: list[Awaitable[LMResponse]]) -> list[LMResponse]:
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        raise


def _merge(parts: list[LMResponse]) -> LMResponse:
    """Several one-choice replies (a provider without native n) as one reply with n choices."""
    first = parts[0]
    return LMResponse(
        model=first.model,
        choices=[c for p in parts for c in p.choices],
        usage=Usage(
            prompt_tokens=sum(p.usage.prompt_tokens for p in parts),
            completion_tokens=sum(p.usage.completion_tokens for p in parts),
            estimated=any(p.usage.estimated for p in parts),
        ),
        provider=first.provider,
        request_id=first.request_id,
    )
