"""Map what can go wrong on the wire to ``dspex.errors`` at the boundary (STYLE.md 2-3).

Statuses go through ``error_for_status`` with the provider's own error code; transport
exceptions are classified by their type (aiohttp's own, from ``AiohttpPool.post``, or httpx's,
and then the type of the aiohttp exception they were raised from), never by message text.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp
import httpx

from dspex.clients._secret import Secret
from dspex.errors import (
    BadResponse,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    error_for_status,
)

__all__ = ["error_from_exception", "error_from_response", "parse_error_body", "parse_retry_after"]


def parse_retry_after(headers: Mapping[str, str], *, now_s: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``retry-after`` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now_s is None else now_s
    return max(0.0, when.timestamp() - now)


def parse_error_body(content: bytes) -> tuple[str, str | None]:
    """(provider message, provider error code) from an OpenAI or Anthropic error body."""
    try:
        data = json.loads(content)
    except ValueError:
        text = content.decode("utf-8", "replace").strip()
        return (text[:500] or "(empty body)"), None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or "")
        # OpenAI: {"error": {"message", "type", "code"}}; Anthropic: {"error": {"type", "message"}}
        code = err.get("code") or err.get("type")
        return message or json.dumps(err)[:500], (str(code) if code else None)
    if isinstance(err, str):
        return err, None
    if isinstance(data, dict) and isinstance(data.get("detail"), str):  # FastAPI-style servers
        return data["detail"], None
    return json.dumps(data)[:500], None


class _StatusReply(Protocol):
    """What ``error_from_response`` reads: an ``httpx.Response`` or a ``transport.Reply``."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Any: ...


def error_from_response(
    response: _StatusReply, content: bytes, *, provider: str, model: str, secret: Secret
) -> ProviderError:
    message, code = parse_error_body(content)
    message = secret.redact(message)
    return error_for_status(
        response.status_code,
        f"{provider} model {model!r} answered HTTP {response.status_code}: {message}",
        provider=provider,
        model=model,
        retry_after_s=parse_retry_after(response.headers),
        provider_message=message,
        error_code=code,
    )


def _aiohttp_cause_is_connection(exc: BaseException) -> bool:
    # httpx-aiohttp maps every aiohttp.ClientConnectionError (refused, reset, disconnected) to
    # httpx.ConnectTimeout; the aiohttp exception it came from tells what really happened.
    return _is_connection(exc.__cause__)


def _is_connection(exc: BaseException | None) -> bool:
    """Refused, reset, disconnected or a body cut short; not a timeout."""
    return isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError) and not isinstance(
        exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError
    )


def error_from_exception(
    exc: BaseException, *, provider: str, model: str, timeout_s: float | None, secret: Secret | None = None
) -> ProviderError:
    """A transport failure as a ``ProviderError`` (the caller raises it ``from exc``)."""
    detail = str(exc)[:300]
    if secret is not None:
        detail = secret.redact(detail)
    kind = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    if isinstance(exc, aiohttp.ServerTimeoutError) or (
        isinstance(exc, httpx.TimeoutException) and not _aiohttp_cause_is_connection(exc)
    ):
        return ProviderTimeout(
            f"{provider} model {model!r} did not answer in time ({kind}).",
            provider=provider,
            model=model,
            provider_message=kind,
        )
    if isinstance(exc, TimeoutError):
        return ProviderTimeout(
            f"{provider} model {model!r} did not finish within the total timeout of {timeout_s} s.",
            provider=provider,
            model=model,
            provider_message="total timeout",
        )
    if isinstance(exc, httpx.TransportError | OSError) or _is_connection(exc) or _aiohttp_cause_is_connection(exc):
        return ProviderUnavailable(
            f"{provider} model {model!r} could not be reached ({kind}).",
            provider=provider,
            model=model,
            provider_message=kind,
        )
    if isinstance(exc, ValueError | UnicodeDecodeError):
        return BadResponse(
            f"{provider} model {model!r} sent a body that is not valid JSON ({kind}).",
            provider=provider,
            model=model,
            provider_message=kind,
        )
    return ProviderUnavailable(
        f"{provider} model {model!r} call failed unexpectedly ({kind}).",
        provider=provider,
        model=model,
        provider_message=kind,
    )
