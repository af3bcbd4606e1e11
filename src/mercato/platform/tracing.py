"""Traces across events: OpenTelemetry, off unless `MERCATO_OTEL_EXPORTER` names an exporter.

One order is one trace. The HTTP request's server span (FastAPI instrumentation) is the parent
of an `outbox write` span for each event its transaction emits; that span's W3C trace context
travels inside the envelope (`traceparent`, `tracestate`, as CloudEvents' distributed tracing
extension names them), so each relay publish (a producer span) and each consumer's handling (a
consumer span) in whatever process is a child of it, whichever transport carried the event. A
handler's own events are emitted inside its consumer span and carry the trace onward.

Off, every entry point here is one `is None` check: no span, no context, no `traceparent`.
The provider is this module's own rather than OpenTelemetry's global one, which can be set only
once per process; tests switch tracing on and off around an in-memory exporter.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from mercato.platform.events.envelope import Envelope

EXPORTERS = ("otlp", "console")

_propagator = TraceContextTextMapPropagator()
_noop: AbstractContextManager[None] = nullcontext()
_provider: TracerProvider | None = None
_tracer: Tracer | None = None


def enabled() -> bool:
    """Whether this process records spans."""
    return _tracer is not None


def tracer_provider() -> TracerProvider | None:
    """This process's provider, None when tracing is off (`tracing_http` instruments apps)."""
    return _provider


def configure_tracing(service_name: str, exporter: str | SpanExporter | None) -> None:
    """Record spans as `service_name` and hand them to `exporter`: `otlp` (the standard
    `OTEL_EXPORTER_OTLP_*` variables say where), `console`, or a `SpanExporter` (tests: each
    span is exported as it ends). None leaves tracing off."""
    global _provider, _tracer
    if exporter is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    disable_tracing()
    processor: SpanProcessor
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter())
    elif exporter == "console":
        processor = BatchSpanProcessor(ConsoleSpanExporter())
    elif isinstance(exporter, str):
        raise ValueError(f"MERCATO_OTEL_EXPORTER must be one of {', '.join(EXPORTERS)}")
    else:
        processor = SimpleSpanProcessor(exporter)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(processor)
    _provider, _tracer = provider, provider.get_tracer("mercato")
    # Outgoing calls (JWKS, upstream APIs, the export job reading catalog) join the trace and
    # pass it on in their `traceparent` header.
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)


def disable_tracing() -> None:
    """Flush and stop recording (tests; a process keeps its tracing until it exits)."""
    global _provider, _tracer
    if _provider is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor().uninstrument()
    provider, _provider, _tracer = _provider, None, None
    provider.shutdown()


def envelope_context() -> dict[str, str]:
    """The current span's W3C trace context as envelope fields (`traceparent`, `tracestate`
    when there is one); empty when tracing is off."""
    if _tracer is None:
        return {}
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier


def outbox_span(event_type: str, subject: str) -> AbstractContextManager[Any]:
    """The span of writing one event to the outbox: current while its envelope is made, so the
    envelope carries it as the parent of the event's publishing and handling."""
    if _tracer is None:
        return _noop
    return _tracer.start_as_current_span(
        f"outbox write {event_type}",
        kind=SpanKind.INTERNAL,
        attributes={"messaging.destination.name": event_type, "mercato.subject": subject},
    )


def consumer_span(consumer: str, envelope: Envelope) -> AbstractContextManager[Any]:
    """The span of one consumer handling one event, a child of the context in its envelope
    (a new trace when it has none); current while the handler runs, so its events follow."""
    if _tracer is None:
        return _noop
    return _tracer.start_as_current_span(
        f"{consumer} process {envelope.type}",
        context=_parent(envelope),
        kind=SpanKind.CONSUMER,
        attributes={**_attributes(envelope), "messaging.consumer.group.name": consumer},
    )


def publish_spans(service: str, envelopes: Sequence[Envelope]) -> AbstractContextManager[Any]:
    """One producer span per event while the relay publishes a batch, each a child of its
    envelope's context; a failed publish marks them all."""
    if _tracer is None:
        return _noop
    return _publishing(_tracer, service, envelopes)


@contextmanager
def _publishing(tracer: Tracer, service: str, envelopes: Sequence[Envelope]) -> Iterator[None]:
    spans = [
        tracer.start_span(
            f"{envelope.type} publish",
            context=_parent(envelope),
            kind=SpanKind.PRODUCER,
            attributes={**_attributes(envelope), "mercato.service": service},
        )
        for envelope in envelopes
    ]
    try:
        yield
    except BaseException as exc:
        for span in spans:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        for span in spans:
            span.end()


def log_ids() -> dict[str, str]:
    """`trace_id` and `span_id` of the current span for a log line; empty when tracing is off
    or nothing is being traced."""
    if _tracer is None:
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {
        "trace_id": trace.format_trace_id(context.trace_id),
        "span_id": trace.format_span_id(context.span_id),
    }


def _parent(envelope: Envelope) -> Any:
    if envelope.traceparent is None:
        return None
    carrier = {"traceparent": envelope.traceparent}
    if envelope.tracestate:
        carrier["tracestate"] = envelope.tracestate
    return _propagator.extract(carrier)


def _attributes(envelope: Envelope) -> dict[str, str]:
    return {
        "messaging.message.id": envelope.id,
        "messaging.destination.name": envelope.type,
        "mercato.subject": envelope.subject,
        "mercato.correlation_id": envelope.correlation_id,
    }
