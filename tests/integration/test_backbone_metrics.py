"""`mercato_events_handled_total` and `mercato_events_published_total` count what the backbone
does: retries and the dead letter of a poison event, a duplicate, each published event (SQLite
and PostgreSQL, in-process and RabbitMQ)."""

from __future__ import annotations

from prometheus_client import REGISTRY

from tests.backbone import Harness
from tests.integration.test_event_backbone import harness, transport_kind

__all__ = ["harness", "transport_kind"]  # the backbone tests' fixtures

KIND = "thing.happened"


def _handled(outcome: str) -> float:
    labels = {"consumer": "consumer", "type": KIND, "outcome": outcome}
    return REGISTRY.get_sample_value("mercato_events_handled_total", labels) or 0.0


def _published() -> float:
    labels = {"service": "producer", "type": KIND}
    return REGISTRY.get_sample_value("mercato_events_published_total", labels) or 0.0


async def test_outcomes_are_counted(harness: Harness) -> None:
    before = {o: _handled(o) for o in ("applied", "duplicate", "retried", "dead_lettered")}
    published = _published()
    harness.failures["poison"] = -1
    harness.start_consumer()
    harness.start_relay()
    await harness.emit("poison", 0)
    good = await harness.emit("good", 1)
    await harness.wait_effects(1)

    async def buried() -> bool:
        return _handled("dead_lettered") - before["dead_lettered"] == 1

    await harness.wait_for(buried)
    await harness.transport.redeliver("consumer", good)  # applied already: a duplicate

    async def duplicate() -> bool:
        return _handled("duplicate") - before["duplicate"] == 1

    await harness.wait_for(duplicate)
    assert _handled("applied") - before["applied"] == 1
    assert _handled("retried") - before["retried"] == len(harness.retry_delays)
    assert _published() - published == 2
