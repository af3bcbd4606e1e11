"""Operating Mercato over HTTP (issue 13), the same on both targets: an order's saga timeline
through the gateway, the event log filtered by correlation id, subject and type with secret
payload fields masked, and the domain metrics of every process that served the order (the
dev cluster's service replicas and its worker's own `--metrics-port`)."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.contract.api import (
    admin,
    newcomer,
    place,
    product,
    register,
    settled,
    until,
)
from tests.contract.conftest import Target

SAGA = {"order.placed", "payment.debited", "stock.reserved", "order.completed"}
SERVICES = ("orders", "wallet", "catalog")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape(url: str) -> Samples:
    """One process's `/metrics` (the suite calls from loopback: no token needed)."""
    answer = httpx.get(f"{url}/metrics", timeout=30)
    assert answer.status_code == 200, (url, answer.status_code, answer.text[:200])
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def _processes(target: Target) -> list[str]:
    """The base URLs of every process that may count a step of an order: the replicas of the
    saga's services and, on the cluster, the worker (its consumers and relays)."""
    urls = {url for service in SERVICES for url in target.replicas(service)}
    if target.cluster is not None:
        urls.add(target.cluster.worker_metrics_url)
    return sorted(urls)


def _total(scrapes: list[Samples], name: str, **labels: str) -> float:
    """`name{labels}` summed over processes (counters are per process)."""
    key = (name, frozenset(labels.items()))
    return sum(samples.get(key, 0.0) for samples in scrapes)


def _timeline(client: httpx.Client, headers: dict[str, str], order_id: str) -> dict[str, Any]:
    answer = client.get(f"/api/v1/orders/{order_id}/timeline", headers=headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _events(client: httpx.Client, boss: dict[str, str], service: str, **params: Any) -> Any:
    answer = client.get(f"/api/v1/events/{service}/events", params=params, headers=boss)
    assert answer.status_code == 200, answer.text
    page = answer.json()
    assert set(page) == {"items", "total", "skip", "limit"}, page
    return page


def test_timeline_event_log_and_metrics(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        before = [_scrape(url) for url in _processes(target)]
        buyer = newcomer(client, "traced", top_up="100")
        book = product(client, boss, price="20.00", stock=3)
        order = place(client, buyer, book["id"])
        assert settled(client, buyer, order["id"])["status"] == "completed"

        # The timeline through the gateway: the whole saga, oldest first, one correlation id.
        def whole() -> dict[str, Any] | None:
            body = _timeline(client, buyer, order["id"])
            return body if {e["type"] for e in body["events"]} >= SAGA else None

        timeline = until(whole, "the saga's events on the timeline")
        assert timeline["order_id"] == order["id"] and timeline["status"] == "completed"
        events = timeline["events"]
        kinds = [event["type"] for event in events]
        assert kinds[0] == "order.placed" and kinds[-1] == "order.completed", kinds
        times = [event["occurred_at"] for event in events]
        assert times == sorted(times)
        assert len({event["event_id"] for event in events}) == len(events)
        correlation = events[0]["correlation_id"]
        assert {event["correlation_id"] for event in events} == {correlation}
        # An admin reads it too; someone else does not find the order; no token is a 401.
        assert _timeline(client, boss, order["id"])["events"] == events
        stranger = newcomer(client, "stranger")
        other = client.get(f"/api/v1/orders/{order['id']}/timeline", headers=stranger)
        assert other.status_code == 404, other.text
        assert client.get(f"/api/v1/orders/{order['id']}/timeline").status_code == 401

        # The event log of each service, by the order's correlation id and by its subject.
        orders_log = _events(client, boss, "orders", correlation_id=correlation)
        assert {e["type"] for e in orders_log["items"]} == {"order.placed", "order.completed"}
        assert all(e["subject"] == order["id"] for e in orders_log["items"])
        wallet_log = _events(client, boss, "wallet", subject=order["id"])
        assert {e["type"] for e in wallet_log["items"]} == {"payment.debited"}
        catalog_log = _events(client, boss, "catalog", correlation_id=correlation)
        assert {e["type"] for e in catalog_log["items"]} == {"stock.reserved"}
        ids = {e["id"] for log in (orders_log, wallet_log, catalog_log) for e in log["items"]}
        assert ids == {event["event_id"] for event in events}
        paged = _events(client, boss, "orders", type="order.completed", limit=1)
        assert paged["limit"] == 1 and len(paged["items"]) == 1 and paged["total"] >= 1

        # user.created's password hash is masked; a person who is not an admin is refused.
        username, profile = register(client, "masked")
        created = until(
            lambda: _events(client, boss, "accounts", type="user.created", subject=profile["id"])[
                "items"
            ],
            f"user.created of {username} in the event log",
        )
        assert created[0]["data"]["password_hash"] == "***", created
        assert "$argon2" not in str(created)
        assert client.get("/api/v1/events/orders/events", headers=buyer).status_code == 403

        # Domain metrics: every process's /metrics, summed (counters are per process).
        def counted() -> list[Samples] | None:
            after = [_scrape(url) for url in _processes(target)]

            def grew(name: str, **labels: str) -> bool:
                return _total(after, name, **labels) > _total(before, name, **labels)

            done = (
                grew("mercato_orders_total", status="pending")
                and grew("mercato_orders_total", status="completed")
                and grew("mercato_events_published_total", service="orders", type="order.placed")
                and grew("mercato_events_published_total", service="orders", type="order.completed")
                and grew(
                    "mercato_events_handled_total",
                    consumer="wallet",
                    type="order.placed",
                    outcome="applied",
                )
                and grew(
                    "mercato_events_handled_total",
                    consumer="orders",
                    type="stock.reserved",
                    outcome="applied",
                )
                and grew("mercato_saga_duration_seconds_count")
                and grew("mercato_event_lag_seconds_count", consumer="catalog")
            )
            return after if done else None

        after = until(counted, "the order counted in the domain metrics", timeout=30)
        # Gauges read from the databases at scrape time, on the processes serving HTTP.
        for url in target.replicas("orders"):
            samples = _scrape(url)
            assert ("mercato_outbox_backlog", frozenset({("service", "orders")})) in samples
            assert ("mercato_dead_letters", frozenset({("service", "orders")})) in samples
        assert after
