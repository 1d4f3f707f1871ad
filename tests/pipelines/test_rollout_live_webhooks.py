"""Webhook delivery over real HTTP on 127.0.0.1: retries, Retry-After, signing, URLs from the
environment, and no secret in what is kept or logged."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from dspex.pipelines.rollouts import NotifyWebhook, RolloutSpec, Webhook, error_rate
from dspex.pipelines.rollouts.webhooks import SIGNATURE_HEADER, WebhookSender


class Receiver:
    """A webhook endpoint answering a scripted list of statuses, then 200."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str]]] = []
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        status, headers = self.script.pop(0) if self.script else (200, {})
        return web.Response(status=status, headers=headers, text="ok")


@pytest_asyncio.fixture(loop_scope="function")  # the server must run on the test's own loop
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/hook", r.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    r.url = f"http://127.0.0.1:{port}/hook"
    yield r
    await runner.cleanup()


def action(**kw: Any) -> NotifyWebhook:
    kw.setdefault("webhook", "ops")
    kw.setdefault("url", None)
    kw.setdefault("event", "rolled_back")
    kw.setdefault("payload", {"program": "qa", "version": 2, "event": "rolled_back"})
    return NotifyWebhook(**kw)


async def test_delivers_with_retries_and_honours_retry_after(receiver: Receiver) -> None:
    receiver.script = [(503, {}), (429, {"Retry-After": "0.05"})]
    sender = WebhookSender(backoff_s=0.01)
    try:
        delivery = await sender.send(action(url=receiver.url))
    finally:
        await sender.aclose()
    assert delivery.delivered and delivery.attempts == 3 and delivery.status == 200
    assert len(receiver.received) == 3
    headers, body = receiver.received[-1]
    assert json.loads(body)["version"] == 2 and headers["X-Dspex-Event"] == "rolled_back"


async def test_a_refused_payload_is_not_retried(receiver: Receiver) -> None:
    receiver.script = [(400, {})]
    sender = WebhookSender(backoff_s=0.01)
    try:
        delivery = await sender.send(action(url=receiver.url))
    finally:
        await sender.aclose()
    assert not delivery.delivered and delivery.attempts == 1 and delivery.error == "HTTP 400"


async def test_url_and_signing_secret_from_the_environment_stay_secret(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-signing-token"
    env = {"OPS_HOOK_URL": receiver.url, "OPS_HOOK_SECRET": secret}
    sender = WebhookSender(env=env, backoff_s=0.01, max_attempts=2)
    try:
        ok = await sender.send(action(url_env="OPS_HOOK_URL", secret_env="OPS_HOOK_SECRET"))
        receiver.script = [(500, {}), (500, {})]
        with caplog.at_level(logging.WARNING, logger="dspex.pipelines.rollouts"):
            failed = await sender.send(action(url_env="OPS_HOOK_URL", secret_env="OPS_HOOK_SECRET"))
        missing = await sender.send(action(url_env="NOT_SET_ANYWHERE"))
    finally:
        await sender.aclose()
    assert ok.delivered
    headers, body = receiver.received[0]
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"sha256={expected}"
    assert not failed.delivered and failed.error == "HTTP 500"
    assert (
        not missing.delivered
        and missing.attempts == 0
        and "NOT_SET_ANYWHERE" in (missing.error or "")
    )
    kept = json.dumps([d.to_dict() for d in sender.deliveries]) + caplog.text
    assert secret not in kept and receiver.url not in kept


async def test_an_unreachable_receiver_fails_without_leaking_its_url() -> None:
    sender = WebhookSender(
        backoff_s=0.01, max_attempts=2, env={"HOOK": "http://127.0.0.1:9/secret-path"}
    )
    try:
        delivery = await sender.send(action(url_env="HOOK"))
    finally:
        await sender.aclose()
    assert not delivery.delivered and delivery.attempts == 2
    assert "secret-path" not in json.dumps(delivery.to_dict())


def test_the_spec_refuses_credentials_in_a_webhook_url() -> None:
    from dspex.errors import ValidationError

    with pytest.raises(ValidationError, match="credentials"):
        RolloutSpec(
            webhooks=(Webhook("x", url="https://user:pw@hooks.example/x"),),
            gates=(error_rate(0.1),),
        )
