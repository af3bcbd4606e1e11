"""The platform's domain metrics (Prometheus names `mercato_*`), on the process's one registry.

Counters and histograms are updated where things happen (a relay's publish, a consumer's
outcome, a job's run, a token request). The gauges that mirror database state (outbox backlog,
oldest unsent age, open dead letters) are set at scrape time by `refresh_event_gauges`, so no
event pays a query for them. What each service reports goes through the small functions here,
so services never touch prometheus-client themselves.
"""

from __future__ import annotations

import enum
import weakref
from collections import Counter as Tally
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Literal

from prometheus_client import Counter, Gauge, Histogram

from mercato.platform.clock import utcnow

# Seconds from an event's occurrence to its effect, and from placement to a saga's end: from
# the in-process few milliseconds to a retry schedule's ten minutes.
_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

OUTBOX_BACKLOG = Gauge("mercato_outbox_backlog", "Events not yet relayed", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "mercato_outbox_oldest_age_seconds", "Age of the oldest unsent event", ["service"]
)
DEAD_LETTERS = Gauge("mercato_dead_letters", "Dead letters not yet replayed", ["service"])
EVENTS_PUBLISHED = Counter(
    "mercato_events_published_total", "Events the relay published", ["service", "type"]
)
EVENTS_HANDLED = Counter(
    "mercato_events_handled_total",
    "Deliveries of events to consumers, by outcome",
    ["consumer", "type", "outcome"],
)
EVENT_LAG = Histogram(
    "mercato_event_lag_seconds",
    "From an event's occurred_at to its effect's commit",
    ["consumer"],
    buckets=_LAG_BUCKETS,
)
ORDERS = Counter("mercato_orders_total", "Orders placed and ended, by status", ["status"])
SAGA_DURATION = Histogram(
    "mercato_saga_duration_seconds",
    "From an order's placement to its completion or failure",
    buckets=_LAG_BUCKETS,
)
JOB_RUNS = Counter("mercato_job_runs_total", "Job runs, by final status", ["job", "status"])
JOB_DURATION = Histogram(
    "mercato_job_duration_seconds",
    "How long a job run took",
    ["job"],
    buckets=(0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
TOKEN_REQUESTS = Counter(
    "mercato_upstream_token_requests_total",
    "Token requests to an upstream's token endpoint, by outcome",
    ["upstream", "outcome"],
)
BUDGET_REMAINING = Gauge(
    "mercato_upstream_budget_remaining",
    "Token requests an upstream's hourly budget still allows",
    ["upstream"],
)
CIRCUIT_STATE = Gauge(
    "mercato_circuit_state", "An upstream's circuit: 0 closed, 1 half-open, 2 open", ["upstream"]
)


class Handled(enum.StrEnum):
    """What became of one delivery, as `mercato_events_handled_total` labels it."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"


CIRCUIT_VALUES: Mapping[str, int] = {"closed": 0, "half-open": 1, "half_open": 1, "open": 2}
CircuitState = Literal["closed", "half_open", "open"]
_CIRCUIT_STATES: Mapping[str, CircuitState] = {
    "closed": "closed",
    "half-open": "half_open",
    "half_open": "half_open",
    "open": "open",
}


def published(service: str, types: Iterable[str]) -> None:
    """Count events a relay published (after the transport confirmed them)."""
    for kind, count in Tally(types).items():
        EVENTS_PUBLISHED.labels(service, kind).inc(count)


def handled(consumer: str, kind: str, outcome: Handled, occurred_at: datetime | None) -> None:
    """Count one delivery; an applied one also records its lag since `occurred_at`."""
    EVENTS_HANDLED.labels(consumer, kind, outcome.value).inc()
    if outcome is Handled.APPLIED and occurred_at is not None:
        EVENT_LAG.labels(consumer).observe(max(0.0, (utcnow() - occurred_at).total_seconds()))


def order_status(status: str, placed_at: datetime | None = None) -> None:
    """Count an order reaching `status`; a final one also records the saga's duration."""
    ORDERS.labels(status).inc()
    if placed_at is not None:
        SAGA_DURATION.observe(max(0.0, (utcnow() - placed_at).total_seconds()))


def job_run(job: str, status: str, seconds: float | None) -> None:
    """Count a job run that ended with `status`, and how long it took."""
    JOB_RUNS.labels(job, status).inc()
    if seconds is not None:
        JOB_DURATION.labels(job).observe(max(0.0, seconds))


def token_request(upstream: str, outcome: str, budget_remaining: int | None = None) -> None:
    """Count a token request to `upstream` (`ok`, `rejected`, `error`, `over_budget`...)."""
    TOKEN_REQUESTS.labels(upstream, outcome).inc()
    if budget_remaining is not None:
        BUDGET_REMAINING.labels(upstream).set(budget_remaining)


def budget_remaining(upstream: str, remaining: int) -> None:
    """What `upstream`'s token budget still allows this hour."""
    BUDGET_REMAINING.labels(upstream).set(remaining)


def circuit_state(breaker: object | None) -> CircuitState | None:
    """A breaker's `state` as of now, `closed`, `half_open` or `open` (None: no breaker): what
    the circuit gauge reports at each scrape and the integration token status shows."""
    if breaker is None:
        return None
    return _CIRCUIT_STATES.get(str(getattr(breaker, "state", "closed")), "closed")


def watch_circuit(upstream: str, breaker: object) -> None:
    """Report `breaker.state` as `upstream`'s circuit at each scrape (an open breaker turns
    half-open by the clock alone, with no call to say so). Held weakly: a breaker thrown away
    reads as closed."""
    ref = weakref.ref(breaker)

    def value() -> float:
        return float(CIRCUIT_VALUES[circuit_state(ref()) or "closed"])

    CIRCUIT_STATE.labels(upstream).set_function(value)


def event_gauges(
    service: str, backlog: int, oldest_age_seconds: float | None, dead_letters: int
) -> None:
    """Set one service's database-state gauges (called at scrape time)."""
    OUTBOX_BACKLOG.labels(service).set(backlog)
    OUTBOX_OLDEST_AGE.labels(service).set(oldest_age_seconds or 0.0)
    DEAD_LETTERS.labels(service).set(dead_letters)
