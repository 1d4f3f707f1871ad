"""Delivering a rollout's webhooks: JSON POSTs with retries, signed when a secret is named.

The URL is the webhook's ``url``, or read from the environment variable ``url_env`` at delivery
time (Slack / Teams incoming-webhook URLs are themselves secrets). With ``secret_env`` the body
is signed: ``X-Dspex-Signature: sha256=<hex HMAC-SHA256 of the body>`` with the token in that
variable. Connection errors, timeouts, 429 and 5xx are retried with exponential backoff (a
``Retry-After`` up to ``max_retry_after_s`` is honoured); other 4xx are not (the receiver
refused the payload). Errors name the webhook and the variable, never a URL read from the
environment nor a token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from dspex.errors import ConfigurationError

from .actions import NotifyWebhook

__all__ = ["SIGNATURE_HEADER", "WebhookDelivery", "WebhookSender"]

log = logging.getLogger("dspex.pipelines.rollouts")

SIGNATURE_HEADER = "X-Dspex-Signature"


@dataclass(frozen=True)
class WebhookDelivery:
    webhook: str
    event: str
    delivered: bool
    attempts: int
    status: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None


class WebhookSender:
    """``await sender.send(action)`` for a ``NotifyWebhook`` action (see the module docstring)."""

    def __init__(
        self,
        *,
        client: httpx.AsyncClient | None = None,
        max_attempts: int = 4,
        backoff_s: float = 0.25,
        max_retry_after_s: float = 10.0,
        timeout_s: float = 5.0,
        env: Mapping[str, str] | None = None,
        keep: int = 200,
    ) -> None:
        if max_attempts < 1 or backoff_s < 0:
            raise ConfigurationError(
                f"WebhookSender needs max_attempts >= 1 and backoff_s >= 0, got {max_attempts}, {backoff_s}."
            )
        self._client = client
        self._owned = client is None
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.timeout_s = timeout_s
        self.env = env if env is not None else os.environ
        self.deliveries: deque[WebhookDelivery] = deque(maxlen=keep)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
        return self._client

    async def aclose(self) -> None:
        if self._owned and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _url(self, action: NotifyWebhook) -> str:
        if action.url is not None:
            return action.url
        assert action.url_env is not None
        url = self.env.get(action.url_env)
        if not url:
            raise LookupError(f"environment variable {action.url_env} (its URL) is not set")
        return url

    def _headers(self, action: NotifyWebhook, body: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "X-Dspex-Event": action.event,
            "User-Agent": "dspex-rollouts",
        }
        if action.secret_env:
            secret = self.env.get(action.secret_env)
            if not secret:
                raise LookupError(
                    f"environment variable {action.secret_env} (its signing secret) is not set"
                )
            digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        return headers

    async def send(self, action: NotifyWebhook) -> WebhookDelivery:
        body = json.dumps(dict(action.payload), sort_keys=True, default=str).encode()
        try:
            url = self._url(action)
            headers = self._headers(action, body)
        except LookupError as exc:
            return self._done(
                WebhookDelivery(action.webhook, action.event, False, 0, error=str(exc))
            )
        status: int | None = None
        error = ""
        for attempt in range(1, self.max_attempts + 1):
            wait_s = self.backoff_s * 2 ** (attempt - 1)
            try:
                response = await self._http().post(
                    url, content=body, headers=headers, timeout=self.timeout_s
                )
            except httpx.HTTPError as exc:
                # the exception text may carry the URL: keep only its type
                status, error = None, f"{type(exc).__name__} (no answer)"
            else:
                status = response.status_code
                if status < 300:
                    return self._done(
                        WebhookDelivery(action.webhook, action.event, True, attempt, status)
                    )
                error = f"HTTP {status}"
                if status != 429 and status < 500:
                    break  # the receiver refused this payload; sending it again will not help
                retry_after = _retry_after_s(response)
                if retry_after is not None:
                    wait_s = min(retry_after, self.max_retry_after_s)
            if attempt < self.max_attempts:
                await asyncio.sleep(wait_s)
        return self._done(
            WebhookDelivery(action.webhook, action.event, False, attempt, status, error)
        )

    def _done(self, delivery: WebhookDelivery) -> WebhookDelivery:
        self.deliveries.append(delivery)
        if not delivery.delivered:
            log.warning(
                "webhook %r (%s) not delivered after %d attempt(s): %s",
                delivery.webhook,
                delivery.event,
                delivery.attempts,
                delivery.error,
            )
        return delivery
