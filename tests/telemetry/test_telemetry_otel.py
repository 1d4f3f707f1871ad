"""dspex spans exported as OpenTelemetry spans (in-memory exporter): parents, GenAI attributes,
content only when switched on, secrets never."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import dspex as dspy
from dspex import telemetry
from dspex.errors import ProviderTimeout
from dspex.telemetry import names as n
from dspex.telemetry.otel import disable_tracing, enable_tracing
from dspex.utils import DummyLM

pytestmark = pytest.mark.usefixtures("clean_telemetry")


@pytest.fixture
def exporter() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    yield exp, provider
    disable_tracing()
    provider.shutdown()


class QA(dspy.Signature):
    """Answer the question."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


def by_name(spans: tuple[ReadableSpan, ...], prefix: str) -> ReadableSpan:
    return next(s for s in spans if s.name.startswith(prefix))


def test_program_spans_nest_with_the_right_parents_and_genai_attributes(exporter: tuple[InMemorySpanExporter, TracerProvider]) -> None:
    exp, provider = exporter
    enable_tracing(provider)
    lm = DummyLM([{"reasoning": "add", "answer": "4"}])
    with dspy.context(lm=lm):
        dspy.ChainOfThought(QA)(question="2+2? my api_key is sk-live-123")
    spans = exp.get_finished_spans()
    module = by_name(spans, "program ChainOfThought")
    cot = by_name(spans, "chain_of_thought QA")
    predict = by_name(spans, "predict QA")
    chat = by_name(spans, "chat dummy")
    assert module.parent is None
    assert cot.parent is not None and cot.parent.span_id == module.context.span_id
    assert predict.parent is not None and predict.parent.span_id == cot.context.span_id
    assert chat.parent is not None and chat.parent.span_id == predict.context.span_id
    assert len({s.context.trace_id for s in (module, cot, predict, chat)}) == 1
    attrs = dict(chat.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.system"] == "dummy" and attrs["gen_ai.request.model"] == "dummy"
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["dspex.cache_hit"] is False
    assert chat.end_time is not None and chat.start_time is not None and chat.end_time >= chat.start_time
    assert predict.start_time <= chat.start_time and chat.end_time <= predict.end_time  # type: ignore[operator]
    for s in spans:  # content is off by default
        assert not any("sk-live" in str(v) for v in (s.attributes or {}).values())
        assert "dspex.inputs" not in (s.attributes or {})


def test_dspex_spans_nest_under_the_applications_own_span(exporter: tuple[InMemorySpanExporter, TracerProvider]) -> None:
    exp, provider = exporter
    enable_tracing(provider)
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("handle request") as outer:
        with telemetry.span(n.PREDICT, signature="QA"):
            pass
    pred = by_name(exp.get_finished_spans(), "predict QA")
    assert pred.parent is not None and pred.parent.span_id == outer.get_span_context().span_id


def test_content_is_recorded_only_when_on_and_secrets_never(exporter: tuple[InMemorySpanExporter, TracerProvider]) -> None:
    exp, provider = exporter
    inputs = {"question": "what is 2+2?", "api_key": "sk-live-123", "nested": {"Authorization": "Bearer abc"}}
    enable_tracing(provider)
    with telemetry.span(n.PREDICT, signature="QA", inputs=inputs) as sp:
        sp.meta(outputs={"answer": "4"})
    off = by_name(exp.get_finished_spans(), "predict QA")
    assert "dspex.inputs" not in (off.attributes or {}) and "dspex.outputs" not in (off.attributes or {})
    exp.clear()
    enable_tracing(provider, record_content=True)  # replaces the first bridge
    with telemetry.span(n.PREDICT, signature="QA", inputs=inputs) as sp:
        sp.meta(outputs={"answer": "4"})
    (on,) = exp.get_finished_spans()
    recorded = str(on.attributes)
    assert "what is 2+2?" in str((on.attributes or {})["dspex.inputs"])
    assert '"answer": "4"' in str((on.attributes or {})["dspex.outputs"])
    assert "sk-live-123" not in recorded and "Bearer abc" not in recorded and "[redacted]" in recorded


def test_a_failed_call_is_an_error_span(exporter: tuple[InMemorySpanExporter, TracerProvider]) -> None:
    exp, provider = exporter
    enable_tracing(provider)
    with pytest.raises(ProviderTimeout):
        with telemetry.span(n.PROVIDER_REQUEST, provider="openai", model="gpt-4o-mini", attempt=0):
            raise ProviderTimeout("took too long", provider="openai", model="gpt-4o-mini")
    (span,) = exp.get_finished_spans()
    assert span.name == "chat gpt-4o-mini"
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "ProviderTimeout"
    assert any(e.name == "exception" for e in span.events)
    assert disable_tracing() is True and disable_tracing() is False
    with telemetry.span(n.PREDICT, signature="QA"):
        pass
    assert len(exp.get_finished_spans()) == 1  # off again
