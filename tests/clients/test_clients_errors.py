"""Every failure maps to a dspex error by status or exception type, carries the provider's own
message, chains the cause, and pickles."""

from __future__ import annotations

import pickle

import httpx
import pytest
from aiohttp import web
from fixtures.clients import Recorder, ScriptedServer, anthropic_reply, openai_reply

from dspex.clients import LM, Timeouts
from dspex.clients.errors_map import parse_error_body, parse_retry_after
from dspex.errors import (
    AuthenticationError,
    BadRequest,
    BadResponse,
    ContentPolicyViolation,
    ContextWindowExceeded,
    ModelNotFound,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
)


def openai_error(status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"message": message, "type": "invalid_request_error", "code": code}}, headers=headers
    )


def lm_for(rec: Recorder, model: str = "openai/gpt-4o-mini") -> LM:
    return LM(model, api_key="sk-secret-value-999", cache=False, num_retries=0, http_transport=rec.transport())


STATUS_CASES = [
    (400, None, BadRequest),
    (401, None, AuthenticationError),
    (402, None, QuotaExceeded),
    (403, None, AuthenticationError),
    (404, None, ModelNotFound),
    (408, None, ProviderTimeout),
    (409, None, BadResponse),
    (413, None, ContextWindowExceeded),
    (422, None, BadRequest),
    (429, None, RateLimited),
    (500, None, ProviderUnavailable),
    (502, None, ProviderUnavailable),
    (503, None, ProviderUnavailable),
    (504, None, ProviderUnavailable),
    (529, None, ProviderUnavailable),
    (400, "context_length_exceeded", ContextWindowExceeded),
    (400, "content_filter", ContentPolicyViolation),
]


@pytest.mark.parametrize(("status", "code", "cls"), STATUS_CASES)
async def test_openai_status_mapping(status: int, code: str | None, cls: type[ProviderError]) -> None:
    rec = Recorder(default=lambda r: openai_error(status, f"provider says {status}", code))
    with pytest.raises(cls) as info:
        await lm_for(rec).acall(prompt="hi")
    err = info.value
    assert type(err) is cls
    assert err.status == status and err.provider == "openai" and err.model == "gpt-4o-mini"
    assert err.provider_message == f"provider says {status}"
    assert f"provider says {status}" in str(err)
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is cls and clone.status == status and str(clone) == str(err)


@pytest.mark.parametrize(
    ("status", "etype", "cls"),
    [(400, "invalid_request_error", BadRequest), (401, "authentication_error", AuthenticationError),
     (403, "permission_error", AuthenticationError), (404, "not_found_error", ModelNotFound),
     (413, "request_too_large", ContextWindowExceeded), (429, "rate_limit_error", RateLimited),
     (500, "api_error", ProviderUnavailable), (529, "overloaded_error", ProviderUnavailable)],
)
async def test_anthropic_error_bodies(status: int, etype: str, cls: type[ProviderError]) -> None:
    body = {"type": "error", "error": {"type": etype, "message": f"anthropic: {etype}"}}
    rec = Recorder(default=lambda r: httpx.Response(status, json=body))
    with pytest.raises(cls) as info:
        await lm_for(rec, "anthropic/claude-3-5-haiku-latest").acall(prompt="hi")
    assert info.value.provider_message == f"anthropic: {etype}" and info.value.provider == "anthropic"


async def test_retry_after_is_carried() -> None:
    rec = Recorder(default=lambda r: openai_error(429, "slow down", headers={"retry-after": "7"}))
    with pytest.raises(RateLimited) as info:
        await lm_for(rec).acall(prompt="hi")
    assert info.value.retry_after_s == 7.0 and info.value.retryable


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now_s=1445412480.0) == 10.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_parse_error_body_shapes() -> None:
    assert parse_error_body(b'{"error": {"message": "m", "code": "c"}}') == ("m", "c")
    assert parse_error_body(b'{"type": "error", "error": {"type": "t", "message": "m"}}') == ("m", "t")
    assert parse_error_body(b'{"detail": "d"}') == ("d", None)
    assert parse_error_body(b"<html>502</html>") == ("<html>502</html>", None)
    assert parse_error_body(b"") == ("(empty body)", None)


async def test_provider_message_echoing_the_key_is_redacted() -> None:
    rec = Recorder(default=lambda r: openai_error(401, "Incorrect API key provided: sk-secret-value-999"))
    with pytest.raises(AuthenticationError) as info:
        await lm_for(rec).acall(prompt="hi")
    assert "sk-secret-value-999" not in str(info.value)
    assert "sk-secret-value-999" not in repr(info.value.to_dict())


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (httpx.ConnectError("refused"), ProviderUnavailable),
        (httpx.RemoteProtocolError("peer closed"), ProviderUnavailable),
        (httpx.ReadError("reset"), ProviderUnavailable),
        (httpx.ReadTimeout("slow"), ProviderTimeout),
        (httpx.ConnectTimeout("slow"), ProviderTimeout),
        (httpx.PoolTimeout("busy"), ProviderTimeout),
    ],
)
async def test_transport_exceptions_map_by_type_and_chain(exc: Exception, cls: type[ProviderError]) -> None:
    rec = Recorder(default=lambda r: (_ for _ in ()).throw(exc))
    with pytest.raises(cls) as info:
        await lm_for(rec).acall(prompt="hi")
    assert info.value.__cause__ is exc
    assert info.value.retryable


async def test_connection_refused_over_real_aiohttp_transport() -> None:
    lm = LM("openai/x", api_base="http://127.0.0.1:1/v1", cache=False, num_retries=0, timeout_s=Timeouts(connect_s=2))
    with pytest.raises(ProviderUnavailable) as info:
        await lm.acall(prompt="hi")
    assert info.value.__cause__ is not None
    await lm.aclose()


async def test_hang_hits_the_total_timeout_over_real_http(scripted_server: ScriptedServer) -> None:
    async def hang(request: web.Request) -> web.StreamResponse:
        await scripted_server.hang(5)
        return web.json_response(openai_reply("late"))

    scripted_server.handler = hang
    lm = LM("openai/x", api_base=scripted_server.url, cache=False, num_retries=0, timeout_s=0.2)
    with pytest.raises(ProviderTimeout):
        await lm.acall(prompt="hi")
    await lm.aclose()


async def test_read_timeout_over_real_http(scripted_server: ScriptedServer) -> None:
    async def slow_body(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"content-type": "application/json"})
        await resp.prepare(request)
        await resp.write(b'{"choices": [')
        await scripted_server.hang(3)
        return resp

    scripted_server.handler = slow_body
    lm = LM("openai/x", api_base=scripted_server.url, cache=False, num_retries=0,
            timeout_s=Timeouts(total_s=10, read_s=0.2))
    with pytest.raises(ProviderTimeout, match="did not answer in time"):  # the read bound, not the total
        await lm.acall(prompt="hi")
    await lm.aclose()


async def test_real_http_statuses_keep_their_error_class_body_and_retry_after(scripted_server: ScriptedServer) -> None:
    """Whole calls on the default pool go through aiohttp's own types (``AiohttpPool.post``):
    the status, the provider's message and Retry-After read the same as through httpx."""
    async def limited(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"error": {"message": "slow down", "code": "rate_limit_exceeded"}}, status=429, headers={"Retry-After": "7"}
        )

    scripted_server.handler = limited
    lm = LM("openai/x", api_base=scripted_server.url, cache=False, num_retries=0)
    with pytest.raises(RateLimited) as info:
        await lm.acall(prompt="hi")
    assert info.value.retry_after_s == 7.0 and info.value.provider_message == "slow down"
    assert info.value.fields.get("status") == 429

    async def gateway(request: web.Request) -> web.StreamResponse:
        return web.Response(status=502, body=b"<html>Bad gateway</html>")

    scripted_server.handler = gateway
    with pytest.raises(ProviderUnavailable, match="Bad gateway"):
        await lm.acall(prompt="hi")
    await lm.aclose()


async def test_connection_dropped_mid_body_over_real_http(scripted_server: ScriptedServer) -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"content-type": "application/json", "content-length": "500"})
        await resp.prepare(request)
        await resp.write(b'{"choices": [')
        assert request.transport is not None
        request.transport.close()
        return resp

    scripted_server.handler = cut
    lm = LM("openai/x", api_base=scripted_server.url, cache=False, num_retries=0)
    with pytest.raises(ProviderUnavailable) as info:
        await lm.acall(prompt="hi")
    assert info.value.__cause__ is not None and info.value.retryable
    await lm.aclose()


async def test_html_error_page_keeps_its_text() -> None:
    rec = Recorder(default=lambda r: httpx.Response(502, content=b"<html>Bad gateway</html>"))
    with pytest.raises(ProviderUnavailable, match="Bad gateway"):
        await lm_for(rec).acall(prompt="hi")


async def test_ok_status_with_anthropic_body_not_json() -> None:
    rec = Recorder(default=lambda r: httpx.Response(200, content=b"\x00garbage"))
    with pytest.raises(BadResponse) as info:
        await lm_for(rec, "anthropic/claude-3-5-haiku-latest").acall(prompt="hi")
    assert info.value.status == 200


async def test_anthropic_reply_without_content_is_bad_response() -> None:
    body = anthropic_reply("x")
    del body["content"]
    rec = Recorder(default=lambda r: httpx.Response(200, json=body))
    with pytest.raises(BadResponse, match="content"):
        await lm_for(rec, "anthropic/claude-3-5-haiku-latest").acall(prompt="hi")
