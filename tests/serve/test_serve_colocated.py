"""The colocated ingress in-process: ``IngressCore`` (routing, redirects, hosting) behind its
real ASGI app (``IngressHttp``), with DummyLM versions hosted by real ``VersionHost`` /
``Predictor`` objects. No Serve here: the supervisor is a small scripted stand-in (routing
table, long-poll, assignments), the one part that would need a cluster.

The same code runs in every ingress replica on Ray Serve (tests/serve/test_serve_app.py runs
it there, in both topologies)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fixtures.serve import dummy_spec

from dspex.errors import Overloaded

PROGRAM = "colo"  # no other test serves this program


# -- a scripted supervisor ------------------------------------------------------------------------
class _Method:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def remote(self, *args: Any) -> Any:
        return self.fn(*args)


class FakeSupervisor:
    """Publishes routing tables (``watch`` / ``routing_table``) and answers ``assignment``."""

    def __init__(self) -> None:
        from dspex.actors.routing import RoutingTable

        self.table = RoutingTable(PROGRAM, 0)
        self.specs: dict[str, Any] = {}  # predictor id -> spec
        self.asked: list[str] = []
        self.changed = asyncio.Event()

    def publish(self, routes: list[tuple[int, float, str, str]]) -> None:
        """``routes``: (version, weight, deployment key, predictor id)."""
        from dspex.actors.routing import Replica, Route, RoutingTable
        from dspex.cluster.serve.graph import ServeVersionHandle

        built = tuple(
            Route(v, w, (Replica(pid, ServeVersionHandle(PROGRAM, PROGRAM, pid, deployment=key)),)) for v, w, key, pid in routes
        )
        self.table = RoutingTable(PROGRAM, self.table.epoch + 1, built)
        self.changed.set()
        self.changed = asyncio.Event()

    @property
    def watch(self) -> _Method:
        async def watch(epoch: int, timeout_s: float) -> Any:
            if self.table.epoch > epoch:
                return self.table
            try:
                await asyncio.wait_for(self.changed.wait(), timeout_s)
            except TimeoutError:
                return None
            return self.table

        return _Method(watch)

    @property
    def routing_table(self) -> _Method:
        async def table() -> Any:
            return self.table

        return _Method(table)

    @property
    def assignment(self) -> _Method:
        async def assignment(predictor_id: str) -> Any:
            self.asked.append(predictor_id)
            await asyncio.sleep(0.01)  # a real round trip takes a moment: loads overlap
            return self.specs.get(predictor_id)

        return _Method(assignment)


# -- driving the ASGI app ----------------------------------------------------------------------------
async def call(
    app: Any, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    messages = [{"type": "http.request", "body": raw, "more_body": False}]
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await done.wait()  # a client that stays connected until the reply is complete
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": f"/{PROGRAM}{path}", "raw_path": f"/{PROGRAM}{path}".encode(), "root_path": f"/{PROGRAM}",
        "query_string": b"", "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    await app(scope, receive, send)
    done.set()
    start = sent[0]
    reply_headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], reply_headers, b"".join(m.get("body", b"") for m in sent[1:])


class Rig:
    def __init__(self, ingress: Any, app: Any, supervisor: FakeSupervisor | None) -> None:
        self.ingress = ingress
        self.app = app
        self.supervisor = supervisor

    async def predict(self, question: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        status, h, body = await call(self.app, "POST", f"/v1/programs/{PROGRAM}/predict", {"inputs": {"question": question}}, headers)
        return status, h, json.loads(body)


def _ingress_class() -> Any:
    from dspex.cluster.serve.ingress import IngressCore

    class Ingress(IngressCore):
        fake: FakeSupervisor | None = None

        def supervisor(self) -> Any:
            return self.fake

    return Ingress


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    """An ingress hosting v1 ("one") and v2 ("two") given by the supervisor's table at 50/50."""
    from dspex.cluster.serve.options import ServeOptions

    fake = FakeSupervisor()
    fake.specs = {"p1": dummy_spec(PROGRAM, 1, "one"), "p2": dummy_spec(PROGRAM, 2, "two")}
    fake.publish([(1, 50.0, "v1-a", "p1"), (2, 50.0, "v2-b", "p2")])
    Ingress = _ingress_class()
    Ingress.fake = fake
    ingress = Ingress(PROGRAM, PROGRAM, ServeOptions(route_prefix=f"/{PROGRAM}").to_dict())
    app = await ingress.__serve_build_asgi_app__()
    yield Rig(ingress, app, fake)
    _stop(ingress)


def _stop(ingress: Any) -> None:
    from dspex import telemetry
    from dspex.cluster.serve.ingress import _SERVE_METRICS_ID

    for task in (ingress._watcher, *ingress._background):
        if task is not None:
            task.cancel()
    telemetry.detach(_SERVE_METRICS_ID)  # the handler is process-wide


async def test_a_starting_replica_hosts_the_live_versions_before_it_serves(rig: Rig) -> None:
    assert set(rig.ingress.local.hosts) == {"v1-a", "v2-b"}  # loaded in __serve_build_asgi_app__
    assert sorted(rig.supervisor.asked) == ["p1", "p2"]  # type: ignore[union-attr]
    status, headers, body = await rig.predict("q", {"X-Dspex-Version": "2"})
    assert status == 200 and headers["x-dspex-version"] == "2"
    assert body == {"program": PROGRAM, "version": 2, "outputs": {"answer": "two"}}


async def test_weights_sticky_keys_and_pins_over_http(rig: Rig) -> None:
    versions: Counter[int] = Counter()
    for i in range(200):
        status, headers, body = await rig.predict(f"q{i}")
        assert status == 200 and headers["x-dspex-version"] == str(body["version"])
        assert body["outputs"]["answer"] == {1: "one", 2: "two"}[body["version"]]
        versions[body["version"]] += 1
    assert 60 <= versions[2] <= 140, versions  # 50/50 by a random draw
    for key in ("alice", "bob", "carol"):
        seen = {(await rig.predict("s", {"X-Dspex-Session": key}))[2]["version"] for _ in range(10)}
        assert len(seen) == 1
    assert (await rig.predict("p", {"X-Dspex-Version": "1"}))[2]["outputs"] == {"answer": "one"}


async def test_http_errors_keep_openai_shape(rig: Rig) -> None:
    status, _, body = await call(rig.app, "GET", "/nowhere")
    assert status == 404 and json.loads(body)["error"]["type"] == "not_found"
    status, headers, _ = await call(rig.app, "GET", f"/v1/programs/{PROGRAM}/predict")
    assert status == 405 and headers["allow"] == "POST"
    status, headers, _ = await call(rig.app, "POST", "/healthz")
    assert status == 405 and headers["allow"] == "GET"
    status, _, body = await call(rig.app, "POST", f"/v1/programs/{PROGRAM}/predict", b"not json")
    assert status == 422 and "not valid JSON" in json.loads(body)["error"]["message"]
    status, _, body = await call(rig.app, "POST", f"/v1/programs/{PROGRAM}/predict", {"inputs": []})
    assert status == 422
    status, _, _ = await call(rig.app, "POST", "/v1/programs/other/predict", {"inputs": {"question": "x"}})
    assert status == 404
    status, _, body = await call(rig.app, "POST", f"/v1/programs/{PROGRAM}/predict", {"question": "x"}, {"X-Dspex-Version": "9"})
    assert status == 404 and "not deployed" in json.loads(body)["error"]["message"]
    status, headers, body = await call(rig.app, "PUT", "/admin/weights", {"weights": {"1": 100}})
    assert status == 401 and headers["www-authenticate"] == "Bearer"


async def test_health_models_metrics_chat_and_stream(rig: Rig) -> None:
    status, _, body = await call(rig.app, "GET", "/healthz")
    assert status == 200 and json.loads(body)["weights"] == {"1": 50.0, "2": 50.0}
    status, _, body = await call(rig.app, "GET", "/v1/models")
    assert [m["id"] for m in json.loads(body)["data"]] == [PROGRAM]
    await rig.predict("m")
    status, _, body = await call(rig.app, "GET", "/metrics")
    assert status == 200 and b"dspex_serve_request" in body
    chat = {"model": PROGRAM, "messages": [{"role": "user", "content": "Which?"}]}
    status, headers, body = await call(rig.app, "POST", "/v1/chat/completions", chat, {"X-Dspex-Version": "1"})
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "one"
    status, headers, body = await call(
        rig.app, "POST", f"/v1/programs/{PROGRAM}/stream", {"inputs": {"question": "s"}}, {"X-Dspex-Version": "2"}
    )
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in body.decode().strip().split("\n\n") if b]
    final = json.loads(blocks[-1].split("\n")[1].removeprefix("data: "))
    assert blocks[-1].startswith("event: final") and final == {"outputs": {"answer": "two"}, "version": 2}


async def test_a_swap_reroutes_refused_calls_and_fails_none(rig: Rig) -> None:
    """The supervisor's order for a swap: publish the new table, drain the old version, then
    unhost it. Calls caught at the old version are refused as draining and re-routed."""
    fake = rig.supervisor
    assert fake is not None
    fake.specs["p3"] = dummy_spec(PROGRAM, 3, "three")
    results: list[tuple[int, Any]] = []
    stop = asyncio.Event()

    async def user(u: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            status, _, body = await rig.predict(f"u{u}-{i}")
            results.append((status, body.get("version")))
            await asyncio.sleep(0)  # DummyLM answers without suspending: let the test's steps run

    users = [asyncio.create_task(user(u)) for u in range(8)]
    await asyncio.sleep(0.05)
    await rig.ingress.host_version("v3-c", fake.specs["p3"])  # the supervisor's load, before publishing
    fake.publish([(3, 100.0, "v3-c", "p3")])
    drained = await asyncio.gather(rig.ingress.drain_version("v1-a", 5.0), rig.ingress.drain_version("v2-b", 5.0))
    assert all(d["drained"] for d in drained)
    await asyncio.sleep(0.01)  # replies of calls that finished during the drain are out
    swapped = len(results)
    await asyncio.sleep(0.05)
    assert await rig.ingress.unhost_version("v1-a") and await rig.ingress.unhost_version("v2-b")
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*users)
    assert {s for s, _ in results} == {200}  # nothing failed
    assert {v for _, v in results[swapped:]} == {3}  # after the drain, only the new version
    assert set(rig.ingress.local.hosts) == {"v3-c"}


async def test_a_drained_version_with_nowhere_to_go_answers_503() -> None:
    from dspex.cluster.serve.ingress import IngressCore
    from dspex.cluster.serve.options import ServeOptions

    ingress = IngressCore(PROGRAM, PROGRAM, ServeOptions(max_redirects=2, retry_after_s=3).to_dict())
    app = await ingress.__serve_build_asgi_app__()
    try:
        await ingress.host_version("v1-a", dummy_spec(PROGRAM, 1, "one"))
        ingress.reconfigure({"program": PROGRAM, "epoch": 1, "routes": [{"version": 1, "weight": 100.0, "deployments": ["v1-a"]}]})
        assert ingress.routes_config()["user_config_epoch"] == 1
        assert (await ingress.apredict({"question": "q"}))["outputs"] == {"answer": "one"}
        await ingress.drain_version("v1-a", 1.0)
        status, headers, body = await call(app, "POST", f"/v1/programs/{PROGRAM}/predict", {"inputs": {"question": "q"}})
        assert status == 503 and headers["retry-after"] == "3" and headers["x-dspex-version"] == "1"
        assert json.loads(body)["error"]["type"] == "overloaded"
        await ingress.resume_version("v1-a")
        assert (await ingress.apredict({"question": "q"}))["version"] == 1
        status_of = await ingress.version_status("v1-a")
        assert status_of["hosted"] and status_of["version"] == 1
        assert (await ingress.version_status("v9-z")) == {"key": "v9-z", "hosted": False}
        metrics = await ingress.version_metrics("v1-a", None)
        assert metrics is not None and metrics["count"] >= 2
        assert await ingress.version_metrics("v9-z") is None
    finally:
        _stop(ingress)


async def test_loads_from_the_supervisor_are_shared_and_unknown_versions_refused() -> None:
    from dspex.cluster.serve.hosting import LocalVersions

    fake = FakeSupervisor()
    fake.specs = {"p1": dummy_spec(PROGRAM, 1, "one")}
    local = LocalVersions(PROGRAM, lambda: fake)
    hosts = await asyncio.gather(*(local.ensure("v1-a", "p1") for _ in range(5)))
    assert len({id(h) for h in hosts}) == 1 and fake.asked == ["p1"]  # one load, five waiters
    with pytest.raises(Overloaded) as info:
        await local.ensure("v7-x", "p7")  # retired: the supervisor names no version for it
    assert info.value.fields.get("moved")
    assert "v7-x" not in local.hosts and not local._loading
    assert (await local.host("v1-a", dummy_spec(PROGRAM, 99, "other")))["version"] == 1  # a hosted key is kept
    assert await local.unhost("v1-a") and not await local.unhost("v1-a")
    assert (await local.drain("v1-a", 1.0))["drained"]  # nothing hosted: nothing to wait for


async def test_version_request_counts_and_latencies_reach_ray_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    from dspex.cluster.serve.version import _Metrics

    metrics = _Metrics({"program": PROGRAM, "version": "1", "model": "m"}, flush_s=0.05)
    incs: list[tuple[float, dict[str, str]]] = []
    observed: list[float] = []
    monkeypatch.setattr(metrics.requests, "inc", lambda value, tags: incs.append((value, dict(tags))))
    monkeypatch.setattr(metrics.latency, "observe", observed.append)
    for i in range(50):
        metrics.record("success" if i % 10 else "error", float(i))
    assert incs == [] and observed == []  # nothing written per request
    await asyncio.sleep(0.1)
    assert sorted(incs) == [(5.0, {"outcome": "error"}), (45.0, {"outcome": "success"})]
    assert observed == [float(i) for i in range(50)]  # every latency, in order
    metrics.record("rejected", None)
    metrics.flush()
    assert incs[-1] == (1.0, {"outcome": "rejected"}) and len(observed) == 50
    assert metrics._timer is None or not metrics._pending
