"""The HTTP server over real sockets: both APIs' shapes, errors, every fault, latency,
admin endpoints, API keys."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from fixtures.sim import task_messages

from dspex import telemetry
from dspex.sim import FaultSpec, LatencySpec, ModelSpec, SimConfig, SimServer, get_task, load_task

FAST = "sim-medium-fast"
ARITH = get_task("arithmetic")
# one client for the module: a new httpx client per call builds an SSL context (~40 ms)
HTTP = httpx.Client(timeout=10.0)


def _chat(sim: SimServer, body: dict, timeout: float = 10.0) -> httpx.Response:
    return HTTP.post(sim.openai_base_url + "/chat/completions", json=body, timeout=timeout)


def _anthropic(sim: SimServer, body: dict, **headers: str) -> httpx.Response:
    return HTTP.post(
        sim.base_url + "/v1/messages",
        json=body,
        headers={"anthropic-version": "2023-06-01", **headers},
    )


def _task_body(i: int = 0, model: str = FAST, **extra: object) -> dict:
    ex = load_task("arithmetic", i + 1, split="dev")[i]
    return {"model": model, "messages": task_messages(ex, ARITH), **extra}


def test_models_in_both_vendor_shapes(sim: SimServer) -> None:
    openai_shape = HTTP.get(sim.openai_base_url + "/models").json()
    assert openai_shape["object"] == "list"
    ids = [m["id"] for m in openai_shape["data"]]
    assert {"sim-small", "sim-medium", "sim-large", FAST} <= set(ids)
    assert all(m["object"] == "model" for m in openai_shape["data"])
    anthropic_shape = HTTP.get(
        sim.openai_base_url + "/models", headers={"anthropic-version": "2023-06-01"}
    ).json()
    assert anthropic_shape["has_more"] is False and anthropic_shape["data"][0]["type"] == "model"
    one = HTTP.get(sim.openai_base_url + "/models/sim-large").json()
    assert one["id"] == "sim-large" and one["context_window"] == 200_000
    missing = HTTP.get(sim.openai_base_url + "/models/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_chat_completion_shape_usage_and_determinism(sim: SimServer) -> None:
    r = _chat(sim, _task_body())
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == FAST
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["message"]["content"].endswith("[[ ## completed ## ]]")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 50 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert r.headers["x-request-id"] == body["id"]
    again = _chat(sim, _task_body()).json()
    assert again["choices"][0]["message"]["content"] == body["choices"][0]["message"]["content"]
    three = _chat(sim, _task_body(n=3, temperature=0.9, seed=11)).json()
    assert [c["index"] for c in three["choices"]] == [0, 1, 2]


def test_anthropic_message_shape(sim: SimServer) -> None:
    msgs = _task_body()["messages"]
    r = _anthropic(
        sim, {"model": FAST, "max_tokens": 500, "system": msgs[0]["content"], "messages": msgs[1:]}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (
        body["type"] == "message"
        and body["role"] == "assistant"
        and body["stop_reason"] == "end_turn"
    )
    assert body["content"][0]["type"] == "text"
    assert body["usage"]["input_tokens"] > 50 and body["usage"]["output_tokens"] > 0
    # the same prompt through either API gets the same answer
    openai_text = _chat(sim, _task_body()).json()["choices"][0]["message"]["content"]
    assert body["content"][0]["text"] == openai_text


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": FAST, "messages": []}, "messages"),
        ({"model": FAST, "messages": [{"content": "x"}]}, "role"),
        ({"model": FAST, "messages": [{"role": "user", "content": "x"}], "n": 0}, "'n'"),
        (
            {"model": FAST, "messages": [{"role": "user", "content": "x"}], "temperature": 3},
            "temperature",
        ),
        (
            {
                "model": FAST,
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "yaml"},
            },
            "response_format",
        ),
        (
            {
                "model": FAST,
                "messages": [{"role": "user", "content": "x"}],
                "tool_choice": {"type": "function", "function": {"name": "f"}},
            },
            "tool_choice",
        ),
        (
            {"model": FAST, "messages": [{"role": "user", "content": "x"}], "max_tokens": -1},
            "max_tokens",
        ),
    ],
)
def test_invalid_openai_bodies_are_400(sim: SimServer, body: dict, needle: str) -> None:
    r = _chat(sim, body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and needle in err["message"]


def test_invalid_json_unknown_model_and_anthropic_errors(sim: SimServer) -> None:
    r = HTTP.post(
        sim.openai_base_url + "/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    r = _chat(sim, {"model": "gpt-nope", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = _anthropic(
        sim,
        {"model": "claude-nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
    )
    assert (
        r.status_code == 404
        and r.json()["error"]["type"] == "not_found_error"
        and r.json()["type"] == "error"
    )
    r = _anthropic(sim, {"model": FAST, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    r = _anthropic(
        sim, {"model": FAST, "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert sim.stats()["unknown_model_requests"] == 2


def test_error_rate_and_status(sim: SimServer) -> None:
    sim.set_faults(FAST, error_rate=1.0, error_status=503)
    r = _chat(sim, _task_body())
    assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"
    sim.set_faults(FAST, error_rate=0.3, error_status=500)
    statuses = [_chat(sim, _task_body(i % 5)).status_code for i in range(200)]
    failures = statuses.count(500)
    assert set(statuses) == {200, 500}
    assert 35 <= failures <= 85  # binomial(200, 0.3): mean 60, sd 6.5
    stats = sim.model_stats(FAST)
    assert stats["errors"]["500"] == failures and stats["faults"]["error"] == failures + 1
    # a retry of a failed request can succeed: fault draws do not follow the prompt
    same = [_chat(sim, _task_body(0)).status_code for _ in range(30)]
    assert 200 in same and 500 in same


def test_rpm_limit_answers_429_with_retry_after(sim: SimServer) -> None:
    sim.set_faults(FAST, rpm_limit=5)
    codes = [_chat(sim, _task_body()) for _ in range(7)]
    assert [r.status_code for r in codes] == [200] * 5 + [429] * 2
    limited = codes[5]
    assert 0 < float(limited.headers["retry-after"]) <= 60
    assert limited.headers["x-ratelimit-limit-requests"] == "5"
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert codes[0].headers["x-ratelimit-remaining-requests"] == "4"
    r = _anthropic(
        sim, {"model": FAST, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    )
    assert (
        r.status_code == 429
        and r.json()["error"]["type"] == "rate_limit_error"
        and "retry-after" in r.headers
    )


def test_hang_makes_clients_time_out_then_504(sim: SimServer) -> None:
    sim.set_faults(FAST, hang_rate=1.0, hang_s=5.0)
    t0 = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        _chat(sim, _task_body(), timeout=0.3)
    assert time.monotonic() - t0 < 2
    sim.set_faults(FAST, hang_s=0.2)
    r = _chat(sim, _task_body())
    assert r.status_code == 504 and r.json()["error"]["type"] == "timeout"
    assert sim.model_stats(FAST)["faults"]["hang"] == 2


def test_outage_on_and_off(sim: SimServer) -> None:
    sim.outage(FAST, on=True)
    assert _chat(sim, _task_body()).status_code == 503
    r = _anthropic(
        sim, {"model": FAST, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    )
    assert r.status_code == 503 and r.json()["type"] == "error"
    assert _chat(sim, _task_body(model="sim-small-fast")).status_code == 200  # other models are up
    sim.outage(FAST, on=False)
    assert _chat(sim, _task_body()).status_code == 200


def test_malformed_output(sim: SimServer) -> None:
    sim.set_faults(FAST, malformed_rate=1.0)
    text = _chat(sim, _task_body()).json()["choices"][0]["message"]["content"]
    assert "[[ ## completed ## ]]" not in text and "[[ # " in text
    json_body = _task_body()
    json_body["messages"] = task_messages(
        load_task("arithmetic", 1, split="dev")[0], ARITH, adapter="json"
    )
    content = _chat(sim, json_body).json()["choices"][0]["message"]["content"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)
    assert sim.model_stats(FAST)["faults"]["malformed"] == 2


def test_latency_is_simulated_and_requests_overlap(sim: SimServer) -> None:
    t0 = time.monotonic()
    assert _chat(sim, _task_body(model="sim-small")).status_code == 200
    single = time.monotonic() - t0
    assert single >= 0.12  # base latency of sim-small

    async def burst() -> float:
        async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=64)) as client:
            start = time.monotonic()
            rs = await asyncio.gather(
                *(
                    client.post(
                        sim.openai_base_url + "/chat/completions",
                        json=_task_body(i % 20, "sim-small"),
                    )
                    for i in range(48)
                )
            )
            assert all(r.status_code == 200 for r in rs)
            return time.monotonic() - start

    elapsed = asyncio.run(burst())
    assert elapsed < 1.5  # 48 requests of ~0.2 s each overlap on one loop
    assert sim.model_stats("sim-small")["max_in_flight"] >= 10
    sim.set_faults(FAST, extra_latency_ms=150)
    t0 = time.monotonic()
    _chat(sim, _task_body())
    assert time.monotonic() - t0 >= 0.15


def test_context_window_and_max_tokens(sim: SimServer) -> None:
    huge = {"model": "sim-small-fast", "messages": [{"role": "user", "content": "word " * 20_000}]}
    r = _chat(sim, huge)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert _chat(sim, {**huge, "model": "sim-large-fast"}).status_code == 200
    cut = _chat(sim, _task_body(max_completion_tokens=5)).json()
    assert cut["choices"][0]["finish_reason"] == "length" and cut["usage"]["completion_tokens"] == 5
    r = _anthropic(
        sim,
        {
            "model": FAST,
            "max_tokens": 3,
            "messages": [{"role": "user", "content": "Tell me a long story"}],
        },
    )
    assert r.json()["stop_reason"] == "max_tokens"


def test_admin_stats_count_requests_tokens_and_cost(sim: SimServer) -> None:
    bodies = [_chat(sim, _task_body(i, model="sim-large-fast")).json() for i in range(4)]
    _anthropic(
        sim,
        {
            "model": "sim-large-fast",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}],
        },
    )
    stats = sim.model_stats("sim-large-fast")
    prompt = sum(b["usage"]["prompt_tokens"] for b in bodies)
    completion = sum(b["usage"]["completion_tokens"] for b in bodies)
    assert stats["requests"] == 5 and stats["ok"] == 5
    assert stats["by_api"] == {"openai": 4, "anthropic": 1}
    assert stats["prompt_tokens"] > prompt and stats["completion_tokens"] > completion
    price = SimConfig.for_tests().model("sim-large-fast").price
    assert stats["cost_usd"] == pytest.approx(
        price.cost_usd(stats["prompt_tokens"], stats["completion_tokens"])
    )
    assert stats["task_answers"]["correct"] + stats["task_answers"]["wrong"] == 4
    totals = sim.stats()["totals"]
    assert totals["requests"] >= 5
    sim.reset()
    assert sim.model_stats("sim-large-fast")["requests"] == 0


def test_admin_faults_are_validated_and_reset(sim: SimServer) -> None:
    before = sim.faults()[FAST]
    assert before == FaultSpec().model_dump()
    r = HTTP.post(sim.base_url + "/admin/faults", json={"model": FAST, "faults": {"error_rate": 2}})
    assert r.status_code == 400 and "error_rate" in r.json()["error"]["message"]
    r = HTTP.post(
        sim.base_url + "/admin/faults", json={"model": FAST, "faults": {"no_such_fault": 1}}
    )
    assert r.status_code == 400
    r = HTTP.post(sim.base_url + "/admin/faults", json={"model": "nope", "error_rate": 0.1})
    assert r.status_code == 404
    assert sim.faults()[FAST] == before  # nothing changed
    everyone = sim.set_faults("*", extra_latency_ms=1)
    assert set(everyone) == {m.name for m in SimConfig.for_tests().models}
    sim.reset(counters=False, faults=True)
    assert sim.faults()[FAST]["extra_latency_ms"] == 0
    cfg = HTTP.get(sim.base_url + "/admin/config").json()
    assert [m["name"] for m in cfg["models"]][:3] == ["sim-small", "sim-medium", "sim-large"]


def test_requests_emit_telemetry(sim: SimServer) -> None:
    seen: list[tuple] = []
    telemetry.attach(
        "test-sim-request", ("dspex", "sim", "request"), lambda e, m, md, c: seen.append((m, md))
    )
    try:
        _chat(sim, _task_body())
    finally:
        telemetry.detach("test-sim-request")
    assert len(seen) == 1
    measurements, metadata = seen[0]
    assert metadata["model"] == FAST and metadata["status"] == 200
    assert measurements["prompt_tokens"] > 0 and measurements["cost_usd"] > 0


def test_api_keys_are_checked_and_never_echoed() -> None:
    secret = "sk-sim-very-secret-123"
    config = SimConfig(models=[ModelSpec(name="m", skill=0.5)], api_keys=[secret])
    assert secret not in repr(config) and secret not in str(config)
    with SimServer(config) as sim:
        url = sim.openai_base_url + "/chat/completions"
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        missing = HTTP.post(url, json=body)
        wrong = HTTP.post(url, json=body, headers={"authorization": "Bearer sk-wrong-key"})
        assert missing.status_code == 401 and wrong.status_code == 401
        assert (
            wrong.json()["error"]["code"] == "invalid_api_key" and "sk-wrong-key" not in wrong.text
        )
        assert (
            HTTP.post(url, json=body, headers={"authorization": f"Bearer {secret}"}).status_code
            == 200
        )
        anth = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        assert (
            HTTP.post(sim.base_url + "/v1/messages", json=anth).json()["error"]["type"]
            == "authentication_error"
        )
        assert (
            HTTP.post(
                sim.base_url + "/v1/messages", json=anth, headers={"x-api-key": secret}
            ).status_code
            == 200
        )
        assert HTTP.get(sim.base_url + "/admin/stats").status_code == 401
        assert (
            sim.stats()["models"]["m"]["requests"] == 2
        )  # refused requests never reach a model; the admin client sends the key
        cfg = HTTP.get(sim.base_url + "/admin/config", headers={"x-api-key": secret}).text
        assert secret not in cfg and "redacted" in cfg
        assert secret not in repr(sim)


def test_server_stops_cleanly_and_frees_its_port() -> None:
    config = SimConfig(models=[ModelSpec(name="slow", skill=0.5, latency=LatencySpec(base_ms=50))])
    sim = SimServer(config).start()
    url = sim.base_url
    assert HTTP.get(url + "/health").json()["status"] == "ok"
    sim.stop()
    with pytest.raises(httpx.ConnectError):
        HTTP.get(url + "/health", timeout=1)
    sim.stop()  # idempotent


def test_anthropic_output_format_and_the_unversioned_openai_path(sim: SimServer) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    r = _anthropic(
        sim,
        {
            "model": FAST,
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "a number"}],
            "output_format": {"type": "json_schema", "schema": schema},
        },
    )
    assert isinstance(json.loads(r.json()["content"][0]["text"])["n"], int)
    r = HTTP.post(
        sim.base_url + "/chat/completions",
        json={"model": FAST, "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 200
