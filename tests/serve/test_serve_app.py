"""Programs served on real Ray Serve (one Serve for the session: fixtures/serve.py).

Program "qa" (DummyLM versions, instant): the traffic split, sticky keys, pinning, health,
metrics, the admin token and the OpenAI facade. Program "swap" (the sim server's LMs): a
new version promoted under load with no failed request, a failing version rolled back by the
supervisor, and SSE streaming.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fixtures.serve import dummy_spec, qa_program

pytestmark = [pytest.mark.ray, pytest.mark.serve]

ADMIN_TOKEN = "test-admin-token-0123456789"


async def wait_for(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


#: both topologies (ServeOptions.colocate_versions): versions in the ingress replicas (the
#: default) and one deployment per version (the split topology of issue 9)
TOPOLOGIES = ["colocated", "split"]


@pytest.fixture(scope="module", params=TOPOLOGIES)
def qa_app(serve_session: Any, request: pytest.FixtureRequest) -> Iterator[SimpleNamespace]:
    import ray
    from dspex.cluster.serve import (
        ServeOptions,
        delete_program,
        deploy_program,
        program_supervisor,
        token_sha256,
    )

    options = ServeOptions(
        route_prefix="/qa", admin_token_sha256=token_sha256(ADMIN_TOKEN), colocate_versions=request.param == "colocated"
    )
    handle = deploy_program(dummy_spec("qa", 1, "one"), options=options, tick_s=0.2)
    supervisor = program_supervisor("qa")
    ray.get(supervisor.prepare.remote(dummy_spec("qa", 2, "two")), timeout=120)
    try:
        yield SimpleNamespace(handle=handle, supervisor=supervisor, url=f"{serve_session.url}/qa")
    finally:
        delete_program("qa")


async def set_split(app: SimpleNamespace, weights: dict[Any, float]) -> None:
    """Set the split on the supervisor and wait until the ingress routes by it."""
    table = await app.supervisor.set_weights.remote(weights)

    async def seen() -> bool:
        return (await app.handle.routes_config.remote())["epoch"] >= table.epoch

    await wait_for(seen, 5.0, "the ingress to follow the supervisor")


async def test_weight_change_90_10_is_served_within_3pp(qa_app: SimpleNamespace) -> None:
    await set_split(qa_app, {1: 90.0, 2: 10.0})
    versions: Counter[Any] = Counter()
    for batch in range(20):
        results = await asyncio.gather(
            *(qa_app.handle.apredict.remote({"question": f"q{batch}-{i}"}) for i in range(100))
        )
        for r in results:
            assert r["outputs"]["answer"] == {1: "one", 2: "two"}[r["version"]]
            versions[r["version"]] += 1
    assert sum(versions.values()) == 2000
    share = versions[2] / 2000
    assert 0.07 <= share <= 0.13, versions
    # the split also reaches the ingress's user_config (the durable copy a restarted ingress
    # replica starts from), as a lightweight update: the ingress replica is not restarted
    from ray import serve

    epoch = (await qa_app.handle.routes_config.remote())["epoch"]

    async def in_user_config() -> bool:
        return (await qa_app.handle.routes_config.remote())["user_config_epoch"] >= epoch

    await wait_for(in_user_config, 10.0, "the routes to reach the ingress's user_config")
    assert serve.status().applications["qa"].deployments["ingress"].status.value == "HEALTHY"


async def test_sticky_keys_and_pinned_versions(qa_app: SimpleNamespace) -> None:
    await set_split(qa_app, {1: 50.0, 2: 50.0})
    seen: dict[str, set[str]] = {}
    async with httpx.AsyncClient(base_url=qa_app.url, timeout=30) as client:
        async def ask(key: str, i: int) -> None:
            r = await client.post(
                "/v1/programs/qa/predict", json={"inputs": {"question": f"{key}-{i}"}}, headers={"X-Dspex-Session": key}
            )
            assert r.status_code == 200, r.text
            body = r.json()
            assert r.headers["X-Dspex-Version"] == str(body["version"])
            seen.setdefault(key, set()).add(r.headers["X-Dspex-Version"])

        await asyncio.gather(*(ask(f"user-{k}", i) for k in range(60) for i in range(4)))
        assert all(len(v) == 1 for v in seen.values()), seen
        assert Counter(next(iter(v)) for v in seen.values()).keys() == {"1", "2"}

        pinned = await asyncio.gather(
            *(client.post("/v1/programs/qa/predict", json={"inputs": {"question": f"p{i}"}}, headers={"X-Dspex-Version": "2"}) for i in range(20))
        )
        assert {r.json()["outputs"]["answer"] for r in pinned} == {"two"}
        missing = await client.post("/v1/programs/qa/predict", json={"question": "x"}, headers={"X-Dspex-Version": "9"})
        assert missing.status_code == 404 and "not deployed" in missing.json()["error"]["message"]
        wrong_program = await client.post("/v1/programs/other/predict", json={"inputs": {"question": "x"}})
        assert wrong_program.status_code == 404
        bad = await client.post("/v1/programs/qa/predict", content=b"not json", headers={"content-type": "application/json"})
        assert bad.status_code == 422


async def test_health_and_metrics(qa_app: SimpleNamespace) -> None:
    async with httpx.AsyncClient(base_url=qa_app.url, timeout=30) as client:
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        await client.post("/v1/programs/qa/predict", json={"inputs": {"question": "m"}})
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert "dspex_serve_request" in metrics.text


async def test_admin_needs_the_bearer_token(qa_app: SimpleNamespace) -> None:
    async with httpx.AsyncClient(base_url=qa_app.url, timeout=30) as client:
        split = {"weights": {"1": 30, "2": 70}}
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": ADMIN_TOKEN}):
            r = await client.put("/admin/weights", json=split, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert ADMIN_TOKEN not in r.text and "wrong-token" not in r.text
        assert (await client.post("/admin/rollback", json={})).status_code == 401
        assert (await client.get("/admin/status")).status_code == 401

        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        r = await client.put("/admin/weights", json=split, headers=auth)
        assert r.status_code == 200, r.text
        assert {str(x["version"]): x["weight"] for x in r.json()["routes"]} == {"1": 30.0, "2": 70.0}
        status = await client.get("/admin/status", headers=auth)
        assert status.status_code == 200 and status.json()["weights"] == {"1": 30.0, "2": 70.0}
        bad = await client.put("/admin/weights", json={"weights": {"1": 30, "2": 30}}, headers=auth)
        assert bad.status_code == 422 and "sum to 100" in bad.json()["error"]["message"]


async def test_openai_sdk_calls_the_program(qa_app: SimpleNamespace) -> None:
    import openai

    client = openai.AsyncOpenAI(base_url=f"{qa_app.url}/v1", api_key="unused", max_retries=0)
    models = await client.models.list()
    assert [m.id for m in models.data] == ["qa"]
    reply = await client.chat.completions.create(
        model="qa", messages=[{"role": "user", "content": "Which version?"}], extra_headers={"X-Dspex-Version": "2"}
    )
    assert reply.choices[0].message.content == "two" and reply.choices[0].finish_reason == "stop"
    as_json = await client.chat.completions.create(
        model="qa", messages=[{"role": "user", "content": '{"question": "q"}'}], extra_headers={"X-Dspex-Version": "1"}
    )
    assert as_json.choices[0].message.content == "one"
    stream = await client.chat.completions.create(
        model="qa", messages=[{"role": "user", "content": "stream it"}], stream=True, extra_headers={"X-Dspex-Version": "1"}
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "one"
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    await client.close()


async def test_a_full_version_answers_503_with_retry_after(qa_app: SimpleNamespace, sim_server: Any) -> None:
    from dspex.clients.lm import LM

    lm = LM("openai/sim-small", api_base=sim_server.openai_base_url, api_key="sim", cache=False, num_retries=0)
    spec = dummy_spec("qa", "narrow", "x").replace(lm=lm, max_in_flight=1, max_queued=0)  # ~120 ms per call
    await qa_app.supervisor.prepare.remote(spec)
    async with httpx.AsyncClient(base_url=qa_app.url, timeout=30) as client:
        replies = await asyncio.gather(
            *(client.post("/v1/programs/qa/predict", json={"inputs": {"question": f"o{i}"}}, headers={"X-Dspex-Version": "narrow"})
              for i in range(6))
        )
    codes = Counter(r.status_code for r in replies)
    assert codes[200] >= 1 and codes[503] >= 1, codes
    refused = next(r for r in replies if r.status_code == 503)
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["type"] == "overloaded" and "max_in_flight=1" in refused.json()["error"]["message"]
    await qa_app.supervisor.scale_down.remote("narrow")


# -- "swap": real LM calls to the sim server -------------------------------------------------------
def sim_spec(version: int, model: str, sim_url: str, **kwargs: Any) -> Any:
    from dspex.actors import VersionSpec

    from dspex.clients.lm import LM

    lm = LM(f"openai/{model}", api_base=sim_url, api_key="sim", cache=False, num_retries=0)
    return VersionSpec("swap", version, factory=qa_program, lm=lm, **kwargs)


@pytest.fixture(scope="module", params=TOPOLOGIES)
def swap_app(serve_session: Any, sim_server: Any, request: pytest.FixtureRequest) -> Iterator[SimpleNamespace]:
    from dspex.cluster.serve import ServeOptions, delete_program, deploy_program, program_supervisor

    options = ServeOptions(route_prefix="/swap", colocate_versions=request.param == "colocated")
    handle = deploy_program(sim_spec(1, "sim-small-fast", sim_server.openai_base_url), options=options, tick_s=0.2)
    try:
        yield SimpleNamespace(handle=handle, supervisor=program_supervisor("swap"), url=f"{serve_session.url}/swap")
    finally:
        delete_program("swap")


@dataclass
class Load:
    """Closed-loop HTTP load: ``workers`` clients sending one request after another."""

    url: str
    workers: int = 8
    results: list[tuple[float, int, str | None]] = field(default_factory=list)  # (start, status, version)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            async def worker(w: int) -> None:
                i = 0
                while not self._stop.is_set():
                    i += 1
                    start = time.monotonic()
                    try:
                        r = await client.post("/v1/programs/swap/predict", json={"inputs": {"question": f"w{w}-{i}"}})
                        self.results.append((start, r.status_code, r.headers.get("X-Dspex-Version")))
                    except httpx.HTTPError:
                        self.results.append((start, 0, None))

            await asyncio.gather(*(worker(w) for w in range(self.workers)))

    def stop(self) -> None:
        self._stop.set()


async def test_new_version_promoted_under_load_fails_no_request(swap_app: SimpleNamespace, sim_server: Any) -> None:
    from dspex.actors import RolloutPlan

    status = await swap_app.supervisor.status.remote()
    old = status["active"]
    new = old + 1
    load = Load(swap_app.url)
    task = asyncio.create_task(load.run())
    await asyncio.sleep(0.5)
    spec = sim_spec(new, "sim-small-fast", sim_server.openai_base_url)
    await swap_app.supervisor.deploy.remote(spec, RolloutPlan.staged(steps=(25.0, 100.0), step_s=600.0))
    await asyncio.sleep(1.0)  # both versions serve at 75/25
    await swap_app.supervisor.promote.remote(True)
    promoted_s = time.monotonic()
    await asyncio.sleep(1.5)
    load.stop()
    await task

    statuses = Counter(s for _, s, _ in load.results)
    assert statuses.keys() == {200}, statuses  # zero failed requests
    assert len(load.results) > 100
    served = Counter(v for _, _, v in load.results)
    assert served[str(old)] > 0 and served[str(new)] > 0
    late = [v for start, _, v in load.results if start > promoted_s + 0.3]
    assert late and set(late) == {str(new)}
    status = await swap_app.supervisor.status.remote()
    assert status["active"] == new and list(status["versions"]) == [new]


async def test_failing_version_is_rolled_back_within_one_health_interval(
    swap_app: SimpleNamespace, sim: Any
) -> None:
    from dspex.actors import HealthPolicy, RolloutPlan

    tick_s = 0.2  # the supervisor's health interval (swap_app)
    status = await swap_app.supervisor.status.remote()
    good = status["active"]
    bad = good + 1
    sim.set_faults("sim-medium-fast", error_rate=1.0)  # the new version's LM fails every call
    plan = RolloutPlan.staged(
        steps=(20.0, 100.0), step_s=600.0, failure_threshold=2,
        health=HealthPolicy(window_s=2.0, min_samples=5, max_error_rate=0.2),
    )
    load = Load(swap_app.url)
    task = asyncio.create_task(load.run())
    await asyncio.sleep(0.3)
    await swap_app.supervisor.deploy.remote(sim_spec(bad, "sim-medium-fast", sim.openai_base_url), plan)

    async def rolled_back() -> bool:
        rollout = (await swap_app.supervisor.status.remote())["rollout"]
        return rollout["staged"] == bad and rollout["phase"] == "rolled_back"

    await wait_for(rolled_back, 30.0, "the supervisor to roll the failing version back", interval_s=0.02)
    observed_s = time.monotonic()
    await asyncio.sleep(1.0)
    load.stop()
    await task

    to_bad = [(start, code) for start, code, v in load.results if v == str(bad)]
    assert to_bad and all(code >= 500 for _, code in to_bad)  # it got traffic, and failed it
    late = [start for start, _ in to_bad if start > observed_s + tick_s]
    assert not late, f"{len(late)} request(s) reached the rolled-back version more than {tick_s} s after the rollback"
    after = [(code, v) for start, code, v in load.results if start > observed_s + tick_s]
    assert after and all(code == 200 and v == str(good) for code, v in after)
    status = await swap_app.supervisor.status.remote()
    assert status["active"] == good and "unhealthy" in status["rollout"]["reason"]


async def test_sse_streaming_of_partial_outputs(swap_app: SimpleNamespace) -> None:
    async with httpx.AsyncClient(base_url=swap_app.url, timeout=30) as client:
        r = await client.post("/v1/programs/swap/stream", json={"inputs": {"question": "What is 2 + 3?"}})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [
        (block.split("\n")[0].removeprefix("event: "), json.loads(block.split("\n")[1].removeprefix("data: ")))
        for block in r.text.strip().split("\n\n")
    ]
    kinds = [k for k, _ in events]
    assert kinds[-1] == "final" and "error" not in kinds
    final = events[-1][1]
    assert final["version"] == int(r.headers["X-Dspex-Version"]) and final["outputs"]["answer"]
    chunks = "".join(d["chunk"] for k, d in events if k == "chunk")
    if chunks:  # the LM streamed: the chunks spell the final answer
        assert chunks.strip() == str(final["outputs"]["answer"]).strip()
