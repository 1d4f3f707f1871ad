"""The event bus: emit, spans (sync / async / nested), raising handlers, and the real call path."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import pytest

import dspex as dspy
from dspex import telemetry
from dspex.telemetry import catalog
from dspex.telemetry import names as n
from dspex.telemetry.metrics import MetricsStore
from dspex.utils import DummyLM

pytestmark = pytest.mark.usefixtures("clean_telemetry")


def _recorder(events: list[Any]) -> Any:
    def handler(event: tuple[str, ...], m: dict[str, Any], md: dict[str, Any], config: Any) -> None:
        events.append((event, m, md))

    return handler


def all_events() -> list[tuple[str, ...]]:
    spans = [e for s in n.SPANS for e in (n.start(s), n.stop(s), n.exception(s))]
    singles = [getattr(n, c) for c in n.__all__ if c.isupper() and c != "SPANS" and getattr(n, c) not in n.SPANS]
    return spans + singles


def test_emit_reaches_attached_handler_only_for_its_events() -> None:
    seen: list[Any] = []
    telemetry.attach("t.one", n.CACHE_HIT, _recorder(seen), config={"x": 1})
    telemetry.emit(n.CACHE_HIT, {"count": 2}, {"cache": "lm"})
    telemetry.emit(n.CACHE_MISS, {"count": 1}, {"cache": "lm"})
    assert seen == [(n.CACHE_HIT, {"count": 2}, {"cache": "lm"})]
    assert telemetry.detach("t.one") is True
    assert telemetry.detach("t.one") is False
    telemetry.emit(n.CACHE_HIT, {"count": 2}, {})
    assert len(seen) == 1


def test_attach_rejects_bad_names_and_duplicate_ids() -> None:
    with pytest.raises(ValueError, match="non-empty tuple of strings"):
        telemetry.attach("t.bad", ("dspex", 3), _recorder([]))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty tuple"):
        telemetry.attach("t.bad", (), _recorder([]))
    telemetry.attach("t.dup", n.CACHE_HIT, _recorder([]))
    with pytest.raises(ValueError, match="already attached"):
        telemetry.attach("t.dup", n.CACHE_MISS, _recorder([]))


def test_span_without_listeners_stays_inactive() -> None:
    with telemetry.span(n.PREDICT, signature="QA") as sp:
        assert telemetry.current_span() is None
    assert sp.span_id == 0 and "span_id" not in sp.metadata


def test_nested_spans_carry_trace_and_parent_ids() -> None:
    seen: list[Any] = []
    telemetry.attach_many("t.spans", all_events(), _recorder(seen))
    with telemetry.span(n.MODULE, module="Outer") as outer:
        with telemetry.span(n.PREDICT, signature="QA") as inner:
            inner.set(num_demos=3)
            assert telemetry.current_span() is inner
        assert telemetry.current_span() is outer
    assert [e for e, _, _ in seen] == [n.start(n.MODULE), n.start(n.PREDICT), n.stop(n.PREDICT), n.stop(n.MODULE)]
    (_, m_start, md_outer), (_, _, md_inner), (_, m_stop, md_stop), _ = seen
    assert md_outer["parent_id"] is None
    assert md_inner["parent_id"] == md_outer["span_id"]
    assert md_inner["trace_id"] == md_outer["trace_id"]
    assert m_start["system_time"] > 0
    assert m_stop["num_demos"] == 3 and m_stop["duration_s"] >= 0
    assert md_stop["signature"] == "QA"


async def test_async_spans_in_concurrent_tasks_keep_their_own_parents() -> None:
    seen: list[Any] = []
    telemetry.attach_many("t.async", all_events(), _recorder(seen))

    async def one(name: str) -> None:
        async with telemetry.span(n.MODULE, module=name):
            await asyncio.sleep(0)
            async with telemetry.span(n.PREDICT, signature=name):
                await asyncio.sleep(0)

    await asyncio.gather(one("A"), one("B"))
    starts = {md.get("module") or md.get("signature"): md for e, _, md in seen if e[-1] == "start"}
    # each predict's parent is the module span of its own task, never the other task's
    modules = [md for e, _, md in seen if e == n.start(n.MODULE)]
    predicts = [md for e, _, md in seen if e == n.start(n.PREDICT)]
    assert len(modules) == 2 and len(predicts) == 2
    for p in predicts:
        parent = next(m for m in modules if m["module"] == p["signature"])
        assert p["parent_id"] == parent["span_id"]
    assert starts["A"]["trace_id"] != starts["B"]["trace_id"]


def test_span_exception_event_names_the_error_and_reraises() -> None:
    seen: list[Any] = []
    telemetry.attach("t.exc", n.exception(n.LM_CALL), _recorder(seen))
    with pytest.raises(dspy.errors.RateLimited):
        with telemetry.span(n.LM_CALL, model="m", provider="p"):
            raise dspy.errors.RateLimited("slow down", provider="p")
    ((event, m, md),) = seen
    assert event == n.exception(n.LM_CALL)
    assert md["kind"] == "RateLimited" and isinstance(md["reason"], dspy.errors.RateLimited)
    assert m["duration_s"] >= 0


def test_raising_handler_is_detached_and_the_call_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    store = MetricsStore()
    store.attach("t.metrics")
    calls: list[int] = []

    def broken(event: Any, m: Any, md: Any, config: Any) -> None:
        calls.append(1)
        raise RuntimeError("handler bug")

    telemetry.attach_many("t.broken", [n.start(n.LM_CALL), n.stop(n.LM_CALL)], broken)
    lm = DummyLM([{"answer": "4"}, {"answer": "5"}])
    with caplog.at_level(logging.WARNING, logger="dspex.telemetry"):
        assert lm(prompt="2+2?") == ["[[ ## answer ## ]]\n4"]
    assert "t.broken" not in {hid for hid, _ in telemetry.list_handlers()}
    assert "'t.broken' raised" in caplog.text
    assert lm(prompt="2+3?") == ["[[ ## answer ## ]]\n5"]  # detached: not called again
    assert calls == [1]
    # the other handler saw both calls, and the failure was counted
    assert store.current("dspex_lm_calls_total", {"outcome": "ok"}) == 2
    assert store.current("dspex_telemetry_handler_failures_total", {"handler": "t.broken"}) == 1


def test_predict_call_path_emits_spans_with_measurements(metrics_store: MetricsStore) -> None:
    seen: list[Any] = []
    telemetry.attach_many("t.path", all_events(), _recorder(seen))

    class QA(dspy.Signature):
        """Answer the question."""

        question: str = dspy.InputField()
        answer: str = dspy.OutputField()

    lm = DummyLM([{"reasoning": "add them", "answer": "4"}])
    with dspy.context(lm=lm):
        result = dspy.ChainOfThought(QA)(question="2+2?")
    assert result.answer == "4"

    names_seen = [e for e, _, _ in seen]
    for event in (n.start(n.PROGRAM), n.start(n.CHAIN_OF_THOUGHT), n.start(n.PREDICT), n.stop(n.LM_CALL), n.stop(n.PREDICT)):
        assert event in names_seen, event
    by_span = {md["span_id"]: (e, md) for e, _, md in seen if "span_id" in md and e[-1] == "start"}
    lm_stop = next((m, md) for e, m, md in seen if e == n.stop(n.LM_CALL))
    m, md = lm_stop
    assert m["input_tokens"] > 0 and m["output_tokens"] > 0 and m["cost_usd"] == 0.0 and m["duration_s"] >= 0
    assert md["model"] == "dummy" and md["provider"] == "dummy" and md["cache_hit"] is False
    # the parent chain: lm.call -> predict -> chain_of_thought -> module
    chain = []
    cur = md["span_id"]
    while cur:
        event, start_md = by_span[cur]
        chain.append(event[:-1])
        cur = start_md["parent_id"]
    assert chain == [n.LM_CALL, n.PREDICT, n.CHAIN_OF_THOUGHT, n.PROGRAM]
    # and the metrics store turned them into series
    assert metrics_store.current("dspex_predictions_total", {"signature": "QA", "outcome": "ok"}) == 1
    assert metrics_store.current("dspex_tokens_total", {"type": "input"}) == m["input_tokens"]
    assert metrics_store.window("dspex_lm_call_duration_seconds", "1m").count == 1


def test_every_name_is_documented_and_every_binding_uses_a_known_event() -> None:
    doc = (Path(n.__file__).parent / "events.md").read_text()
    constants = [c for c in n.__all__ if c.isupper() and c != "SPANS"]
    for c in constants:
        assert f"`{c}`" in doc, f"{c} missing from events.md"
    known = set(all_events())
    for b in catalog.BINDINGS:
        assert b.event in known, b.event
    # every metric named in the doc exists
    documented = set(re.findall(r"`(dspex_[a-z_]+)", doc)) - {"dspex_telemetry_label_values_folded_total"}
    assert documented and documented <= set(catalog.METRICS_BY_NAME), documented - set(catalog.METRICS_BY_NAME)


def test_public_surface_resolves() -> None:
    for name in telemetry.__all__:
        assert getattr(telemetry, name) is not None, name
    assert telemetry.serve_metrics.__module__ == "dspex.telemetry.prometheus"
    assert telemetry.otel.enable_tracing.__module__ == "dspex.telemetry.otel"
    assert telemetry._events._HANDLER_DETACHED == n.TELEMETRY_HANDLER_DETACHED
    with pytest.raises(AttributeError):
        telemetry.no_such_thing  # noqa: B018
