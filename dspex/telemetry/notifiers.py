"""Alert notifiers: the log, a callback, and a webhook (HTTP POST with retries).

The webhook body follows Alertmanager's webhook format (``version`` "4", ``status``,
``alerts`` with ``labels``, ``annotations``, ``startsAt``, ``endsAt``), so receivers written
for Alertmanager accept it. A webhook URL can itself be a secret (Slack and Teams put the
token in the path) and headers can carry tokens, so neither appears in logs or reprs: only
the scheme and host do.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from dspex.telemetry.alerts import AlertState, Transition

__all__ = ["CallbackNotifier", "LogNotifier", "WebhookNotifier", "alertmanager_payload"]

log = logging.getLogger("dspex.telemetry.alerts")


class LogNotifier:
    """Logs firing alerts as warnings and resolved ones as info."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or log

    def notify(self, transitions: Sequence[Transition]) -> None:
        for tr in transitions:
            level = logging.WARNING if tr.state is AlertState.FIRING else logging.INFO
            self.logger.log(
                level,
                "alert %s is %s: %s = %s (threshold %s) %s",
                tr.rule,
                tr.state.value,
                tr.expression,
                "no data" if tr.value is None else f"{tr.value:g}",
                f"{tr.threshold:g}",
                tr.summary,
            )


class CallbackNotifier:
    """Calls ``fn(transition)`` for each transition."""

    def __init__(self, fn: Callable[[Transition], Any]) -> None:
        self.fn = fn

    def notify(self, transitions: Sequence[Transition]) -> None:
        for tr in transitions:
            self.fn(tr)


def _iso(ts: float | None) -> str:
    if ts is None:
        return "0001-01-01T00:00:00Z"  # Alertmanager's "not set"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def alertmanager_payload(transitions: Sequence[Transition], receiver: str = "dspex") -> dict[str, Any]:
    alerts = []
    for tr in transitions:
        alerts.append(
            {
                "status": "firing" if tr.state is AlertState.FIRING else "resolved",
                "labels": {"alertname": tr.rule, "severity": tr.severity},
                "annotations": {
                    "summary": tr.summary,
                    "expression": tr.expression,
                    "value": "" if tr.value is None else f"{tr.value:g}",
                    "threshold": f"{tr.threshold:g}",
                },
                "startsAt": _iso(tr.active_since if tr.active_since is not None else tr.at),
                "endsAt": _iso(tr.at if tr.state is AlertState.RESOLVED else None),
            }
        )
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "version": "4",
        "receiver": receiver,
        "status": "firing" if firing else "resolved",
        "alerts": alerts,
    }


class WebhookNotifier:
    """POSTs transitions as JSON; retries network errors, 429 and 5xx with exponential backoff.

    ``notify`` returns whether the receiver accepted (2xx). A failure after the last retry is
    logged, not raised: the evaluator goes on. ``close()`` cuts a pending backoff short.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        retries: int = 3,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("A webhook URL is an absolute http(s) URL.")  # the URL itself may be secret
        if retries < 0 or backoff_s < 0 or timeout_s <= 0:
            raise ValueError("retries and backoff_s must be >= 0 and timeout_s > 0.")
        self._url = url
        self._headers = dict(headers or {})
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._transport = transport
        self._closing = threading.Event()
        self.target = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"

    def notify(self, transitions: Sequence[Transition]) -> bool:
        body = alertmanager_payload(transitions)
        with httpx.Client(timeout=self.timeout_s, transport=self._transport) as client:
            for attempt in range(self.retries + 1):
                if attempt and self._closing.wait(self.backoff_s * 2 ** (attempt - 1)):
                    break
                try:
                    r = client.post(self._url, json=body, headers=self._headers)
                except httpx.HTTPError as exc:
                    reason = type(exc).__name__
                else:
                    if 200 <= r.status_code < 300:
                        return True
                    reason = f"HTTP {r.status_code}"
                    if r.status_code != 429 and r.status_code < 500:
                        break  # the receiver refused this payload; retrying will not change that
                log.info("alert webhook to %s failed (%s), attempt %d", self.target, reason, attempt + 1)
        log.warning("alert webhook to %s gave up after %d attempt(s)", self.target, attempt + 1)
        return False

    def close(self) -> None:
        """Cut a pending backoff short; until ``open()``, each notify makes one attempt."""
        self._closing.set()

    def open(self) -> None:
        self._closing.clear()

    def __repr__(self) -> str:
        return f"WebhookNotifier(target={self.target!r}, retries={self.retries})"
