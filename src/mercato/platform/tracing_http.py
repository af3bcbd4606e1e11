"""The HTTP side of tracing: a server span per request (apart from `tracing` so that use
cases, which import `tracing` through the unit of work, do not import FastAPI)."""

from __future__ import annotations

from fastapi import FastAPI

from mercato.platform.tracing import tracer_provider

# Probes and scrapes arrive every few seconds and say nothing about an order.
_UNTRACED_URLS = "/health,/ready,/metrics"


def instrument_app(app: FastAPI) -> None:
    """Give each HTTP request of `app` a server span (continuing a caller's `traceparent`);
    nothing when tracing is off."""
    provider = tracer_provider()
    if provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls=_UNTRACED_URLS)
