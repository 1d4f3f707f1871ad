"""The registry against the store: actions persist, survive a restart (both databases), other
processes' changes are picked up, and API keys are never stored, printed or logged."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from dspex.errors import (
    AlreadyExists,
    ConfigurationError,
    InvalidTransition,
    NotFound,
    ValidationError,
)
from dspex.registry import HealthStatus, ModelRegistry, ModelStatus, Strategy
from dspex.store import Store, open_store
from dspex.utils.asyncio_bridge import background_loop, run_sync

PY = sys.executable


def _register_two(reg: ModelRegistry) -> None:
    reg.register("fast", "openai", "gpt-4o-mini", secret_ref="OPENAI_API_KEY", input_price_per_1m_usd=0.15,
                 output_price_per_1m_usd=0.6, max_tokens=512, context_window=128_000, supports_functions=True,
                 config={"temperature": 0.0})
    reg.register("strong", "anthropic", "claude-x", secret_ref="ANTHROPIC_API_KEY", input_price_per_1m_usd=3,
                 output_price_per_1m_usd=15, context_window=200_000, supports_streaming=True)
    reg.approve("fast")
    reg.assign("qa", "fast", strategy="primary", priority=10, conditions={"input_size_max": 5000})
    reg.assign("qa", "strong", strategy=Strategy.FALLBACK, priority=1, weight=50)


def test_actions_persist_and_survive_a_process_restart(store: Store) -> None:
    reg = ModelRegistry(store)
    _register_two(reg)
    reg.deprecate("strong", reason="too slow")
    reg.retest("strong")
    url = store.url.render_as_string(hide_password=False)
    code = textwrap.dedent(
        """
        import json, sys
        from dspex.registry import ModelRegistry
        from dspex.store import open_store
        reg = ModelRegistry(open_store(sys.argv[1]))
        out = {m.name: [m.status.value, m.provider, m.model_name, m.secret_ref, m.input_price_per_1m_usd,
                        m.output_price_per_1m_usd, m.max_tokens, m.context_window, m.supports_functions,
                        m.supports_streaming, m.config, m.status_reason] for m in reg.models()}
        out["qa"] = [[pm.model.name, pm.strategy.value, pm.priority, pm.weight, pm.conditions]
                     for pm in reg.assignments("qa")]
        print(json.dumps(out))
        """
    )
    r = subprocess.run([PY, "-c", code, url], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["fast"] == ["available", "openai", "gpt-4o-mini", "OPENAI_API_KEY", 0.15, 0.6, 512, 128000, True,
                           False, {"temperature": 0.0}, None]
    assert got["strong"][:2] == ["testing", "anthropic"] and got["strong"][9] is True
    assert got["qa"] == [["fast", "primary", 10, 100, {"input_size_max": 5000}],
                         ["strong", "fallback", 1, 50, {}]]


def test_illegal_transition_leaves_the_store_unchanged(registry: ModelRegistry) -> None:
    registry.register("m", "openai", "x")
    with pytest.raises(InvalidTransition, match="Cannot retest a model that is testing"):
        registry.retest("m")
    registry.approve("m")
    with pytest.raises(InvalidTransition) as info:
        registry.approve("m")
    assert info.value.allowed == ("deprecate", "error")
    fresh = ModelRegistry(registry.store)
    assert fresh.get("m").status is ModelStatus.AVAILABLE


def test_a_status_changed_by_another_process_is_respected(registry: ModelRegistry) -> None:
    registry.register("m", "openai", "x")
    other = ModelRegistry(registry.store)
    other.approve("m")
    other.deprecate("m")
    # this registry still believes "testing"; approving must be judged against "deprecated"
    with pytest.raises(InvalidTransition, match="deprecated"):
        registry.approve("m")
    assert registry.get("m").status is ModelStatus.DEPRECATED
    registry.retest("m")
    assert ModelRegistry(registry.store).get("m").status is ModelStatus.TESTING


def test_refresh_sees_other_processes_changes_and_keeps_model_identity(registry: ModelRegistry) -> None:
    registry.register("m", "openai", "x", context_window=1000)
    m = registry.get("m")
    other = ModelRegistry(registry.store)
    other.update("m", context_window=4000, input_price_per_1m_usd=1.0)
    other.register("n", "openai", "y")
    other.assign("p", "n")
    rev = m.revision
    registry.refresh()
    assert registry.get("m") is m and m.context_window == 4000 and m.input_price_per_1m_usd == 1.0
    assert m.revision > rev  # the router rebuilds this model's client
    assert [pm.model.name for pm in registry.assignments("p")] == ["n"]
    other.remove("n")
    registry.refresh()
    with pytest.raises(NotFound):
        registry.get("n")
    assert registry.assignments("p") == ()


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda r: r.register("fast", "openai", "x"), AlreadyExists),
        (lambda r: r.register("z", "mystery", "x"), ValidationError),
        (lambda r: r.register("z", "openai", ""), ValidationError),
        (lambda r: r.register("z", "openai", "x", max_tokens=0), ValidationError),
        (lambda r: r.register("z", "openai", "x", context_window=-5), ValidationError),
        (lambda r: r.register("z", "openai", "x", input_price_per_1m_usd=-1), ValidationError),
        (lambda r: r.get("nope"), NotFound),
        (lambda r: r.assign("qa", "fast"), AlreadyExists),
        (lambda r: r.assign("qa", "nope"), NotFound),
        (lambda r: r.assign("qa2", "fast", strategy="random"), ValidationError),
        (lambda r: r.assign("qa2", "fast", conditions={"max_size": 3}), ValidationError),
        (lambda r: r.assign("qa2", "fast", conditions={"input_size_max": -3}), ValidationError),
        (lambda r: r.assign("qa2", "fast", conditions={"cost_limit": "cheap"}), ValidationError),
        (lambda r: r.assign("qa2", "fast", conditions={"context_required": []}), ValidationError),
        (lambda r: r.assign("qa2", "fast", weight=-1), ValidationError),
        (lambda r: r.unassign("qa", "nope"), NotFound),
        (lambda r: r.update("fast", status="available"), ValidationError),
        (lambda r: r.update("fast", context_window=0), ValidationError),
    ],
)
def test_bad_input_is_refused(registry: ModelRegistry, call: Any, error: type[Exception]) -> None:
    _register_two(registry)
    with pytest.raises(error):
        call(registry)


def test_assignments_update_and_unassign(registry: ModelRegistry) -> None:
    _register_two(registry)
    registry.update_assignment("qa", "strong", priority=20, strategy="load_balanced", conditions={"cost_limit": 1})
    assert [pm.model.name for pm in registry.assignments("qa")] == ["strong", "fast"]
    fresh = ModelRegistry(registry.store)
    pm = fresh.assignments("qa")[0]
    assert (pm.model.name, pm.strategy, pm.conditions) == ("strong", Strategy.LOAD_BALANCED, {"cost_limit": 1.0})
    registry.unassign("qa", "strong")
    assert [pm.model.name for pm in ModelRegistry(registry.store).assignments("qa")] == ["fast"]
    assert registry.programs() == ["qa"]
    assert registry.estimate_cost("fast", "x" * 40, output_tokens=0).input_tokens == 10


# -- secrets ----------------------------------------------------------------------------------

SECRET = "sk-test-THIS-IS-THE-SECRET-9f8e7d6c5b4a"


@pytest.fixture
def auth_server() -> Iterator[dict[str, Any]]:
    """A real OpenAI-compatible endpoint on 127.0.0.1 that checks the bearer key."""
    state: dict[str, Any] = {"seen": [], "reject": False}

    async def chat(request: web.Request) -> web.Response:
        state["seen"].append(request.headers.get("authorization", ""))
        if state["reject"]:
            return web.json_response({"error": {"message": "Incorrect API key provided", "type": "auth"}},
                                     status=401)
        body = await request.json()
        return web.json_response({
            "id": "c1", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "OK"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        })

    async def start() -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["port"] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner

    runner = run_sync(start())
    yield state
    run_sync(runner.cleanup())


def test_secrets_are_never_stored_printed_or_logged(
    sqlite_url: str, auth_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("DSPEX_TEST_KEY", SECRET)
    store = open_store(sqlite_url, shared=False)
    reg = ModelRegistry(store)  # the real LM client (dspex.clients.LM)
    base = f"http://127.0.0.1:{auth_server['port']}/v1"
    m = reg.register("real", "openai", "gpt-test", base_url=base, secret_ref="DSPEX_TEST_KEY")
    ok = reg.health_check("real", timeout_s=5)
    assert ok.success, ok.error
    assert auth_server["seen"] == [f"Bearer {SECRET}"]  # the key did reach the provider
    assert reg.health("real") is HealthStatus.HEALTHY
    auth_server["reject"] = True
    bad = reg.health_check("real", timeout_s=5)
    assert not bad.success and bad.error is not None and "AuthenticationError" in bad.error
    print(m, repr(m), reg.get("real"), bad, ok)
    logging.getLogger("test").info("model %r result %r", m, bad)
    # nowhere: not in reprs, errors, logs, stdout, nor anywhere in the database files
    texts = [repr(m), str(bad), repr(bad), caplog.text, capsys.readouterr().out]
    for t in texts:
        assert SECRET not in t
    store.close()
    db = Path(str(store.url.database))
    blobs = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    assert b"DSPEX_TEST_KEY" in blobs  # the reference is stored ...
    assert SECRET.encode() not in blobs  # ... the key is not
    assert os.environ["DSPEX_TEST_KEY"] == SECRET


def test_registering_a_key_as_secret_ref_stores_nothing(registry: ModelRegistry) -> None:
    with pytest.raises(ConfigurationError) as info:
        registry.register("leak", "openai", "x", secret_ref=SECRET)
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        registry.register("leak", "openai", "x", config={"api_key": SECRET})
    assert SECRET not in str(info.value)
    assert registry.models() == []
    assert ModelRegistry(registry.store).models() == []


def test_health_check_through_a_background_loop_does_not_block_it(registry: ModelRegistry) -> None:
    registry.register("m", "openai", "x")
    res = registry.health_check("m")
    assert res.success and res.health is HealthStatus.HEALTHY
    assert background_loop().is_running()


def test_actions_and_metric_flushes_from_two_threads_do_not_deadlock(registry: ModelRegistry) -> None:
    """An action holds the registry's lock while it writes; a flush holds the store's write lock
    while it collects the changed metrics. Neither may wait on the other."""
    import threading

    from dspex.store import ExecutionLog

    m = registry.register("m", "openai", "x")
    log = ExecutionLog(registry.store, flush_interval_ms=1, batch_rows=10)
    registry.attach_log(log)
    stop = threading.Event()

    def actions() -> None:
        for _ in range(15):
            registry.approve("m")
            registry.deprecate("m")
            registry.retest("m")
        stop.set()

    def metrics() -> None:
        while not stop.is_set():
            registry.observe(m, success=True, latency_ms=1.0)
            log.flush()

    threads = [threading.Thread(target=actions), threading.Thread(target=metrics)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    alive = [t for t in threads if t.is_alive()]
    stop.set()
    assert not alive, "deadlock between a registry action and a metrics flush"
    log.close()
    assert ModelRegistry(registry.store).get("m").status is ModelStatus.TESTING
