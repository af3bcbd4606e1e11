"""Issue 13 over HTTP on both backends: the event log, an order's timeline, domain metrics."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from mercato.platform.auth.principal import ADMIN_SCOPE
from mercato.platform.settings import Settings
from tests.commerce import create_product, final, place, top_up
from tests.harness import Stack, admin, register_user, stack
from tests.integration.test_rbac import machine_token


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The sample `name{labels}` of a Prometheus exposition, or None."""
    return _samples(text).get((name, frozenset(labels.items())))


def _from(s: Stack, address: str) -> httpx.AsyncClient:
    """A client of the same app whose requests come from `address`."""
    transport = httpx.ASGITransport(app=s.app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://mercato.test")


async def test_timeline_event_log_and_metrics(backend: Settings) -> None:
    async with stack(backend) as s:
        # Counters are the process's: what this test adds is measured from here.
        baseline = (await s.client.get("/metrics")).text
        boss = await admin(s)
        book = await create_product(s, boss, name="Timeline", price="20.00", stock=1)
        jane = await register_user(s, "jane")
        john = await register_user(s, "john")
        await top_up(s, jane, "100")
        await top_up(s, john, "100")

        placed = await place(s, jane, [(book["id"], 1)])
        assert (await final(s, jane, placed["id"]))["status"] == "completed"
        late = await place(s, john, [(book["id"], 1)])
        assert (await final(s, john, late["id"]))["status"] == "failed"

        # The owner's timeline, oldest first, one correlation id from placement to the end.
        answer = await s.client.get(f"/api/v1/orders/{placed['id']}/timeline", headers=jane.headers)
        assert answer.status_code == 200, answer.text
        timeline = answer.json()
        assert timeline["order_id"] == placed["id"] and timeline["status"] == "completed"
        events = timeline["events"]
        kinds = [event["type"] for event in events]
        assert kinds[0] == "order.placed" and kinds[-1] == "order.completed"
        assert sorted(kinds) == sorted(
            ["order.placed", "payment.debited", "stock.reserved", "order.completed"]
        )
        assert len({event["event_id"] for event in events}) == len(events)
        correlation = events[0]["correlation_id"]
        assert {event["correlation_id"] for event in events} == {correlation}
        times = [event["occurred_at"] for event in events]
        assert times == sorted(times)

        # A failed order shows its rejection and the compensation.
        failed = await s.client.get(f"/api/v1/orders/{late['id']}/timeline", headers=boss.headers)
        assert failed.status_code == 200, failed.text
        failed_kinds = {event["type"] for event in failed.json()["events"]}
        assert {"order.placed", "stock.rejected", "order.failed"} <= failed_kinds
        assert {"payment.debited", "payment.refunded"} <= failed_kinds

        # Someone else's order does not exist for them; without a token it is a 401.
        other = await s.client.get(f"/api/v1/orders/{placed['id']}/timeline", headers=john.headers)
        assert other.status_code == 404
        anon = await s.client.get(f"/api/v1/orders/{placed['id']}/timeline")
        assert anon.status_code == 401

        # The event log of orders, filtered by the order's correlation id and by type.
        log = await s.client.get(
            "/api/v1/events/orders/events",
            params={"correlation_id": correlation},
            headers=boss.headers,
        )
        assert log.status_code == 200, log.text
        page = log.json()
        assert set(page) == {"items", "total", "skip", "limit"}
        assert {e["type"] for e in page["items"]} == {"order.placed", "order.completed"}
        assert all(e["subject"] == placed["id"] for e in page["items"])
        by_type = await s.client.get(
            "/api/v1/events/orders/events",
            params={"type": "order.failed", "limit": 1},
            headers=boss.headers,
        )
        assert by_type.json()["total"] == 1 and by_type.json()["limit"] == 1
        assert by_type.json()["items"][0]["subject"] == late["id"]
        by_subject = await s.client.get(
            "/api/v1/events/wallet/events", params={"subject": late["id"]}, headers=boss.headers
        )
        assert {e["type"] for e in by_subject.json()["items"]} == {
            "payment.debited",
            "payment.refunded",
        }

        # Secret payload fields are masked.
        users = await s.client.get(
            "/api/v1/events/accounts/events",
            params={"type": "user.created"},
            headers=boss.headers,
        )
        created = users.json()["items"]
        assert created and all(e["data"]["password_hash"] == "***" for e in created)
        assert "$argon2" not in users.text
        refused = await s.client.get("/api/v1/events/orders/events", headers=jane.headers)
        assert refused.status_code == 403

        # Domain metrics, from loopback without a token.
        scraped = await s.client.get("/metrics")
        assert scraped.status_code == 200
        text = scraped.text

        def added(name: str, **labels: str) -> float:
            now = metric_value(text, name, **labels)
            assert now is not None, (name, labels)
            return now - (metric_value(baseline, name, **labels) or 0.0)

        assert added("mercato_events_published_total", service="orders", type="order.placed") == 2
        assert (
            added(
                "mercato_events_handled_total",
                consumer="wallet",
                type="order.placed",
                outcome="applied",
            )
            == 2
        )
        assert metric_value(text, "mercato_outbox_backlog", service="orders") is not None
        oldest = metric_value(text, "mercato_outbox_oldest_age_seconds", service="catalog")
        assert oldest is not None
        assert metric_value(text, "mercato_dead_letters", service="wallet") == 0
        assert added("mercato_orders_total", status="pending") == 2
        assert added("mercato_orders_total", status="completed") == 1
        assert added("mercato_orders_total", status="failed") == 1
        assert added("mercato_event_lag_seconds_count", consumer="orders") >= 4
        assert added("mercato_saga_duration_seconds_count") == 2

        # From elsewhere: a token is needed, and an admin's.
        async with _from(s, "203.0.113.9") as outsider:
            nobody = await outsider.get("/metrics")
            assert nobody.status_code == 401
            assert nobody.headers["content-type"].startswith("application/problem+json")
            assert (await outsider.get("/metrics", headers=jane.headers)).status_code == 403
            assert (await outsider.get("/metrics", headers=boss.headers)).status_code == 200
            robot_token = await machine_token(s, boss.headers, "ops", ADMIN_SCOPE)
            robot = {"Authorization": f"Bearer {robot_token}"}
            assert (await outsider.get("/metrics", headers=robot)).status_code == 200
            reader_token = await machine_token(s, boss.headers, "reader", "catalog.read")
            reader = {"Authorization": f"Bearer {reader_token}"}
            assert (await outsider.get("/metrics", headers=reader)).status_code == 403

        # A machine with mercato.admin reads any timeline; another machine none.
        seen = await s.client.get(f"/api/v1/orders/{placed['id']}/timeline", headers=robot)
        assert seen.status_code == 200 and seen.json()["events"] == events
        blind = await s.client.get(f"/api/v1/orders/{placed['id']}/timeline", headers=reader)
        assert blind.status_code == 403
