"""Traces across events (issue 13): one order is one trace, on every transport, and tracing
off writes and exports nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import select

from mercato.platform import tracing
from mercato.platform.events.tables import outbox
from mercato.platform.settings import Settings
from tests.commerce import create_product, final, place, top_up
from tests.harness import Stack, admin, embedded_settings, eventually, register_user, stack

CONSUMERS = {"wallet", "catalog", "orders"}


async def _completed_order(s: Stack) -> str:
    """Place one order that completes; its id."""
    boss = await admin(s)
    book = await create_product(s, boss, name="Traced", price="10.00", stock=3)
    jane = await register_user(s, "jane")
    await top_up(s, jane, "50")
    order = await place(s, jane, [(book["id"], 1)])
    assert (await final(s, jane, order["id"]))["status"] == "completed"
    return str(order["id"])


def _consumer_of(span: ReadableSpan) -> str:
    return str((span.attributes or {}).get("messaging.consumer.group.name", ""))


async def _one_order_is_one_trace(settings: Settings, exporter: InMemorySpanExporter) -> None:
    async with stack(settings) as s:
        order_id = await _completed_order(s)

        def of_order() -> list[ReadableSpan]:
            # The trace the order's HTTP request started.
            (request,) = [
                span
                for span in exporter.get_finished_spans()
                if span.kind is SpanKind.SERVER
                and span.name == "POST /api/v1/orders"
                and span.context is not None
            ]
            assert request.context is not None
            trace_id = request.context.trace_id
            return [
                span
                for span in exporter.get_finished_spans()
                if span.context is not None and span.context.trace_id == trace_id
            ]

        async def complete() -> bool:
            # order.completed is published (by the relay) after the saga's last commit.
            names = {span.name for span in of_order()}
            return "order.completed publish" in names

        await eventually(complete, timeout=20, what="order.completed published in the trace")
        trace = of_order()
        handled = {
            (_consumer_of(span), span.name.split()[-1])
            for span in trace
            if span.kind is SpanKind.CONSUMER
        }
        assert {consumer for consumer, _ in handled} >= CONSUMERS, handled
        assert {
            ("wallet", "order.placed"),
            ("catalog", "order.placed"),
            ("orders", "payment.debited"),
            ("orders", "stock.reserved"),
        } <= handled
        names = {span.name for span in trace}
        assert {"outbox write order.placed", "order.placed publish"} <= names
        assert {"outbox write order.completed", "outbox write payment.debited"} <= names
        # The handling of order.placed is a child of the outbox write its envelope names.
        by_id = {span.context.span_id: span for span in trace if span.context is not None}
        for span in trace:
            if span.kind is SpanKind.CONSUMER:
                assert span.parent is not None and span.parent.span_id in by_id
                assert by_id[span.parent.span_id].name.startswith("outbox write ")
        subjects = {
            (span.attributes or {}).get("mercato.subject")
            for span in trace
            if span.name.startswith("order.")
        }
        assert subjects == {order_id}


async def test_one_order_is_one_trace(backend: Settings, spans: InMemorySpanExporter) -> None:
    """In-process (embedded) and over RabbitMQ (distributed)."""
    await _one_order_is_one_trace(backend, spans)


@pytest.mark.kafka
async def test_one_order_is_one_trace_on_kafka(
    kafka_backend: Settings, spans: InMemorySpanExporter
) -> None:
    await _one_order_is_one_trace(kafka_backend, spans)


async def test_tracing_off_records_and_writes_nothing(backend: Settings) -> None:
    exporter = InMemorySpanExporter()  # never handed to tracing: off is the default
    assert not tracing.enabled()
    async with stack(backend) as s:
        await _completed_order(s)
        async with s.platform.databases["orders"].read() as conn:
            rows = (await conn.execute(select(outbox.c.envelope))).scalars().all()
    assert rows and not any("traceparent" in raw for raw in rows)
    assert exporter.get_finished_spans() == ()
    assert tracing.envelope_context() == {} and tracing.log_ids() == {}


async def test_a_callers_traceparent_is_continued(
    data_dir: Path, spans: InMemorySpanExporter
) -> None:
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    header = {"traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01"}
    async with stack(embedded_settings(data_dir)) as s:
        answer = await s.client.get("/api/v1/products", headers=header)
        assert answer.status_code == 200
        await s.client.get("/health", headers=header)
    served = [span for span in spans.get_finished_spans() if span.kind is SpanKind.SERVER]
    assert [span.name for span in served] == ["GET /api/v1/products"]  # probes are not traced
    assert served[0].context is not None
    assert format(served[0].context.trace_id, "032x") == caller_trace
