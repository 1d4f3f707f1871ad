"""The Predictor without Ray: calls, backpressure, routing refusals, drain, history, sinks."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from dspex.actors import (
    CallbackSink,
    Execution,
    ExecutionLogSink,
    Predictor,
    SinkDispatcher,
    VersionSpec,
)

import dspex
from dspex.errors import ConfigurationError, DeploymentError, Overloaded, ProviderTimeout, ToolError
from dspex.utils.dummies import DummyLM


class QA(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.answer = dspex.Predict("question -> answer")

    async def aforward(self, question: str) -> Any:
        return await self.answer.acall(question=question)


class Gate(dspex.Module):
    """Waits until released; the test controls how many calls run at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.started = 0

    async def aforward(self, x: int) -> Any:
        self.started += 1
        await self.release.wait()
        if x < 0:
            raise ToolError("negative input")
        return dspex.Prediction(y=x * 2)


class SyncOnly(dspex.Module):
    def forward(self, x: int) -> Any:
        return dspex.Prediction(y=x + 1)


def qa_spec(version: int = 1, **kw: Any) -> VersionSpec:
    return VersionSpec("qa", version, factory=QA, lm=DummyLM([{"answer": f"v{version}"}]).cycle(), **kw)


def gate_spec(**kw: Any) -> tuple[VersionSpec, Gate]:
    gate = Gate()
    # instance= is deep-copied on load; a factory returning the same object lets the test hold it
    return VersionSpec("gate", 1, factory=lambda: gate, **kw), gate


async def test_executes_the_hosted_program_with_its_lm() -> None:
    p = Predictor("p1", qa_spec(3), signature_cache=None)
    out = await p.execute({"question": "hi"})
    assert out.answer == "v3"
    assert (await p.acall(question="again")).answer == "v3"
    info = await p.status()
    assert info["version"] == 3 and info["totals"]["count"] == 2 and info["signatures"] == {"answer": "compiled"}


async def test_sync_programs_run_in_a_thread_pool_sized_to_the_limit() -> None:
    p = Predictor("p1", VersionSpec("s", 1, factory=SyncOnly, max_in_flight=40), signature_cache=None)
    outs = await asyncio.gather(*(p.execute({"x": i}) for i in range(40)))
    assert [o.y for o in outs] == [i + 1 for i in range(40)]
    assert p._executor is not None and p._executor._max_workers == 40


async def test_backpressure_rejects_beyond_in_flight_and_queue() -> None:
    spec, gate = gate_spec(max_in_flight=2, max_queued=1)
    p = Predictor("p1", spec, signature_cache=None)
    running = [asyncio.ensure_future(p.execute({"x": i})) for i in range(3)]
    await asyncio.sleep(0.01)
    assert gate.started == 2  # the third waits in the queue
    with pytest.raises(Overloaded, match=r"max_in_flight=2\) and 1 waiting \(max_queued=1\)") as err:
        await p.execute({"x": 9})
    assert err.value.fields["limit"] == 2 and err.value.retryable
    gate.release.set()
    assert [r.y for r in await asyncio.gather(*running)] == [0, 2, 4]
    totals = (await p.status())["totals"]
    assert (totals["count"], totals["rejected"]) == (3, 1)
    assert p._in_flight == 0


async def test_refuses_calls_for_another_version_or_while_standby() -> None:
    p = Predictor("p1", qa_spec(1), signature_cache=None)
    with pytest.raises(Overloaded, match="hosts qa@1, not version 2") as err:
        await p.execute({"question": "q"}, version=2)
    assert err.value.fields["moved"] is True
    standby = Predictor("p2", None, signature_cache=None)
    with pytest.raises(Overloaded, match="standby") as err:
        await standby.execute({"question": "q"})
    assert err.value.fields["moved"] is True
    with pytest.raises(DeploymentError, match="dict of input fields"):
        await p.execute(["q"])  # type: ignore[arg-type]


async def test_drain_waits_for_running_calls_then_refuses_new_ones() -> None:
    spec, gate = gate_spec(max_in_flight=4)
    p = Predictor("p1", spec, signature_cache=None)
    running = [asyncio.ensure_future(p.execute({"x": i})) for i in range(3)]
    await asyncio.sleep(0.01)
    drain = asyncio.ensure_future(p.drain(timeout_s=5))
    await asyncio.sleep(0.01)
    assert not drain.done()
    with pytest.raises(Overloaded, match="draining") as err:
        await p.execute({"x": 1})
    assert err.value.fields["draining"] is True
    with pytest.raises(DeploymentError, match="drain\\(\\) it before loading"):
        await p.load(qa_spec(2))
    gate.release.set()
    assert len(await asyncio.gather(*running)) == 3  # every admitted call finished
    assert await drain == {"drained": True, "in_flight": 0}
    # a drained predictor takes another version, and serves again
    info = await p.load(qa_spec(2))
    assert info["version"] == 2 and info["generation"] == 2 and not info["draining"]
    assert (await p.execute({"question": "x"}, version=2)).answer == "v2"
    assert (await p.unload())["version"] is None


async def test_drain_times_out_and_says_so() -> None:
    spec, gate = gate_spec()
    p = Predictor("p1", spec, signature_cache=None)
    call = asyncio.ensure_future(p.execute({"x": 1}))
    await asyncio.sleep(0.01)
    assert await p.drain(timeout_s=0.05) == {"drained": False, "in_flight": 1}
    gate.release.set()
    await call


async def test_errors_and_timeouts_are_recorded_and_raised() -> None:
    spec, gate = gate_spec(call_timeout_s=0.05)
    p = Predictor("p1", spec, signature_cache=None)
    with pytest.raises(ProviderTimeout, match=r"call_timeout_s=0\.05"):
        await p.execute({"x": 1})
    gate.release.set()
    with pytest.raises(ToolError):
        await p.execute({"x": -1})
    hist = await p.history()
    assert [h["status"] for h in hist] == ["error", "error"]
    assert hist[0]["error_type"] == "ProviderTimeout" and hist[1]["error_type"] == "ToolError"
    assert hist[1]["inputs"] is None  # inputs are not kept unless asked
    metrics = await p.metrics()
    assert metrics["count"] == 2 and metrics["errors"] == 2


async def test_history_is_bounded() -> None:
    p = Predictor("p1", qa_spec(1, history_size=5, record_inputs=True), signature_cache=None)
    for i in range(12):
        await p.execute({"question": str(i)})
    hist = await p.history(limit=100)
    assert len(hist) == 5 and [h["inputs"]["question"] for h in hist] == ["7", "8", "9", "10", "11"]
    assert all(h["latency_ms"] >= 0 and h["model"] == "dummy" for h in hist)


async def test_sinks_never_block_a_call() -> None:
    release = threading.Event()
    got: list[Execution] = []

    def slow_sink(e: Execution) -> None:
        release.wait(5)
        got.append(e)

    p = Predictor("p1", qa_spec(1), sinks=[CallbackSink(slow_sink)], signature_cache=None)
    for i in range(5):
        await asyncio.wait_for(p.execute({"question": str(i)}), 1.0)  # the sink is stuck
    assert got == []
    release.set()
    assert p.sinks.flush(5.0)
    assert [e.status for e in got] == ["success"] * 5 and got[0].program == "qa"


def test_sink_dispatcher_drops_the_oldest_when_full() -> None:
    release = threading.Event()
    entered = threading.Event()
    got: list[str] = []

    def sink(e: Execution) -> None:
        entered.set()
        release.wait(5)
        got.append(e.execution_id)

    d = SinkDispatcher([CallbackSink(sink)], max_queue=3)
    d.submit(Execution("0", "p", 1, "x", "success", 0.0))
    assert entered.wait(5)  # the thread holds "0" in the (stuck) sink
    for i in range(1, 6):
        d.submit(Execution(str(i), "p", 1, "x", "success", 0.0))
    assert d.pending == 3
    release.set()
    assert d.flush(5.0)
    # the first was taken by the thread before the queue filled; of the rest the oldest went
    assert d.dropped == 2 and got == ["0", "3", "4", "5"]
    d.close()


def test_a_failing_sink_is_counted_not_raised() -> None:
    def bad(_: Execution) -> None:
        raise RuntimeError("db down")

    d = SinkDispatcher([CallbackSink(bad)])
    d.submit(Execution("1", "p", 1, "x", "success", 0.0))
    assert d.flush(5.0)
    assert d.failures == 1
    d.close()


def test_execution_log_sink_maps_onto_store_rows() -> None:
    rows: list[Any] = []

    class Log:
        def record(self, rec: Any) -> None:
            rows.append(rec)

    sink = ExecutionLogSink(Log())
    sink.record(Execution("1", "qa", 3, "p", "success", 1700000000.0, latency_ms=12.5, model="sim-small"))
    sink.record(Execution("2", "qa", 3, "p", "rejected", 1700000000.0))
    sink.record(Execution("3", "qa", 3, "p", "error", 1700000000.0, latency_ms=3.0, error_type="BadResponse"))
    assert [(r.model, r.status, r.version_id, r.error_type) for r in rows] == [
        ("sim-small", "success", "3", None),
        ("program:qa", "error", "3", "BadResponse"),
    ]


def test_version_spec_validation() -> None:
    with pytest.raises(ConfigurationError, match="exactly one of factory"):
        VersionSpec("qa", 1)
    with pytest.raises(ConfigurationError, match="exactly one of factory"):
        VersionSpec("qa", 1, factory=QA, instance=QA())
    with pytest.raises(ConfigurationError, match="version id"):
        VersionSpec("qa", True, factory=QA)
    with pytest.raises(ConfigurationError, match="max_in_flight"):
        VersionSpec("qa", 1, factory=QA, max_in_flight=0)
    with pytest.raises(ConfigurationError, match="program name"):
        VersionSpec("", 1, factory=QA)
    with pytest.raises(ConfigurationError, match="not a dspex program"):
        VersionSpec("qa", 1, factory=lambda: object()).build()
    with pytest.raises(ConfigurationError, match="factory of qa@1 raised"):
        VersionSpec("qa", 1, factory=lambda: 1 / 0).build()


async def test_state_is_loaded_into_the_program() -> None:
    trained = QA()
    trained.answer.demos = [dspex.Example(question="2+2?", answer="4")]
    spec = VersionSpec("qa", 1, factory=QA, state=trained.dump_state(), lm=DummyLM([{"answer": "x"}]).cycle())
    p = Predictor("p1", spec, signature_cache=None)
    await p.ready()
    assert p._hosted is not None and p._hosted.program.answer.demos[0].answer == "4"
    # a whole instance is copied, so the predictor's program is not the caller's
    q = Predictor("p2", VersionSpec("qa", 2, instance=trained, lm=spec.lm), signature_cache=None)
    await q.ready()
    assert q._hosted is not None and q._hosted.program is not trained
    assert q._hosted.program.answer.demos[0].question == "2+2?"


def test_execution_log_sink_travels_as_a_url_and_writes_in_the_receiver(tmp_path: Any) -> None:
    import pickle

    from dspex.errors import ConfigurationError as ConfigError
    from dspex.store import open_store

    url = f"sqlite:///{tmp_path / 'exec.db'}"
    shipped = pickle.loads(pickle.dumps(ExecutionLogSink(url=url)))
    shipped.record(Execution("1", "qa", 7, "p", "success", 1700000000.0, latency_ms=5.0, model="sim-small"))
    shipped.log.flush()
    from sqlalchemy import text

    store = open_store(url)
    with store.engine.connect() as conn:
        rows = conn.execute(text("select program, version_id, model, status from executions")).all()
    assert [tuple(r) for r in rows] == [("qa", "7", "sim-small", "success")]
    with pytest.raises(ConfigError, match="password"):
        ExecutionLogSink(url="postgresql://u:secret@db/x")
    with pytest.raises(ConfigError, match="cannot leave its process"):
        pickle.dumps(ExecutionLogSink(object()))
