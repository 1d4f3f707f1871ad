"""Errors to HTTP replies, at the ingress boundary (pure; no Serve or FastAPI needed).

| error | status | notes |
|---|---|---|
| ``Overloaded`` (a version's Predictor is full), Serve ``BackPressureError`` (past ``max_queued_requests``) | 503 | ``Retry-After`` |
| ``DeploymentError`` (nothing takes traffic), Serve ``DeploymentUnavailableError`` | 503 | ``Retry-After`` |
| ``RateLimited`` / ``CircuitOpen`` / ``ProviderUnavailable`` upstream | 503 | the provider's Retry-After when known |
| ``ProviderTimeout`` | 504 | |
| other ``ProviderError``, ``AdapterParseError`` (the LM's reply) | 502 | |
| ``ValidationError``, ``SignatureError``, ``ConfigurationError`` from bad inputs | 422 | |
| ``NotFound`` | 404 | |
| anything else | 500 | the type name only |

Bodies have OpenAI's error shape, ``{"error": {"type", "message"}}``, so OpenAI clients show
them. Messages are dspex's own (they never hold secrets); an unexpected error's text is not
sent, since third-party messages may echo request data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from dspex import errors as E

__all__ = ["HttpError", "http_error"]


@dataclass(frozen=True)
class HttpError:
    status: int
    type: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"error": {"type": self.type, "message": self.message, "code": self.status}}


def _retry_after(seconds: float | None, default_s: int) -> dict[str, str]:
    value = default_s if seconds is None or not math.isfinite(seconds) else max(1, math.ceil(seconds))
    return {"Retry-After": str(int(value))}


def _serve_error(exc: BaseException) -> str | None:
    """The Ray Serve exception's class name, when ``exc`` is one (without importing Ray)."""
    for cls in type(exc).__mro__:
        if cls.__module__.startswith("ray.serve"):
            return type(exc).__name__
    return None


def http_error(exc: BaseException, *, retry_after_s: int = 1) -> HttpError:
    name = type(exc).__name__
    serve_name = _serve_error(exc)
    if serve_name in ("BackPressureError", "DeploymentUnavailableError", "ReplicaUnavailableError"):
        return HttpError(
            503,
            "overloaded",
            f"The service is at capacity ({serve_name}); retry after the Retry-After delay.",
            _retry_after(None, retry_after_s),
        )
    if isinstance(exc, E.Overloaded):
        return HttpError(503, "overloaded", exc.message, _retry_after(None, retry_after_s))
    if isinstance(exc, E.NotFound):
        return HttpError(404, "not_found", exc.message)
    if isinstance(exc, E.ProviderTimeout):
        return HttpError(504, "upstream_timeout", exc.message)
    if isinstance(exc, E.RateLimited | E.CircuitOpen | E.ProviderUnavailable):
        return HttpError(503, "upstream_unavailable", exc.message, _retry_after(exc.retry_after_s, retry_after_s))
    if isinstance(exc, E.ProviderError | E.AdapterParseError):
        return HttpError(502, "upstream_error", exc.message)
    if isinstance(exc, E.ValidationError | E.SignatureError | E.ConfigurationError):
        return HttpError(422, "invalid_request", exc.message)
    if isinstance(exc, E.DeploymentError):
        return HttpError(503, "unavailable", exc.message, _retry_after(None, retry_after_s))
    if isinstance(exc, E.DSPexError):
        return HttpError(500, name, exc.message)
    return HttpError(500, "internal_error", f"The program failed with {name}; see the replica's log.")
