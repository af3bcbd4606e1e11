"""W3C trace context travels inside the event envelope (DESIGN §3)."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from mercato.platform import tracing
from mercato.platform.events.envelope import Envelope, EventPayload, make_envelope


class Pinged(EventPayload):
    event_type = "test.pinged"
    n: int


def test_trace_context_round_trips_through_the_envelope(spans: InMemorySpanExporter) -> None:
    with tracing.outbox_span("test.pinged", "s-1"):
        envelope = make_envelope(Pinged(n=1), source="test", subject="s-1")
    assert envelope.traceparent is not None
    read = Envelope.from_json(envelope.to_json())
    assert read == envelope and read.traceparent == envelope.traceparent
    with tracing.publish_spans("test", [read]):
        pass
    with tracing.consumer_span("wallet", read):
        assert tracing.log_ids()["trace_id"] == format(
            spans.get_finished_spans()[0].context.trace_id,  # type: ignore[union-attr]
            "032x",
        )
        # An event emitted while handling carries the handler's context onward.
        onward = make_envelope(Pinged(n=2), source="test", subject="s-1")
    write, publish, handle = spans.get_finished_spans()
    assert write.context is not None and handle.context is not None
    assert publish.kind is SpanKind.PRODUCER and handle.kind is SpanKind.CONSUMER
    for child in (publish, handle):
        assert child.parent is not None and child.parent.span_id == write.context.span_id
        assert child.context is not None and child.context.trace_id == write.context.trace_id
    assert onward.traceparent is not None
    assert onward.traceparent.split("-")[1:3] == [
        format(handle.context.trace_id, "032x"),
        format(handle.context.span_id, "016x"),
    ]


def test_an_untraced_envelope_has_no_trace_fields() -> None:
    assert not tracing.enabled()
    envelope = make_envelope(Pinged(n=1), source="test", subject="s-1")
    assert envelope.traceparent is None and "traceparent" not in envelope.to_json()
    # An envelope written before the fields existed still reads, and the other way round.
    old = Envelope.from_json(envelope.model_dump_json(exclude={"traceparent", "tracestate"}))
    assert old == envelope
    with tracing.consumer_span("wallet", old):
        assert tracing.envelope_context() == {} and tracing.log_ids() == {}


def test_log_lines_carry_the_trace_and_correlation_ids(spans: InMemorySpanExporter) -> None:
    from mercato.platform.events.envelope import current_correlation_id
    from mercato.platform.logging import _add_correlation

    token = current_correlation_id.set("corr-1")
    try:
        with tracing.outbox_span("test.pinged", "s-1"):
            line = dict(_add_correlation(None, "info", {"event": "hello"}))
    finally:
        current_correlation_id.reset(token)
    (span,) = spans.get_finished_spans()
    assert span.context is not None
    assert line["correlation_id"] == "corr-1"
    assert line["trace_id"] == format(span.context.trace_id, "032x")
    assert line["span_id"] == format(span.context.span_id, "016x")
