"""Integration's domain metrics over HTTP (SQLite and PostgreSQL): jobs, token requests, the
token budget and the circuit, as `/metrics` shows them after a run."""

from __future__ import annotations

import httpx

from tests.integration.test_integration_api import ADMIN, api, wait_run
from tests.integration.test_integration_export import Contract
from tests.integration.test_operations_api import metric_value

__all__ = ["api"]  # the fixture, shared with the API tests


async def test_job_token_budget_and_circuit_metrics(
    api: tuple[httpx.AsyncClient, str, Contract],
) -> None:
    client, _, _ = api
    answer = await client.post("/api/v1/jobs/sync-external-orders/run", headers=ADMIN)
    run = await wait_run(client, "sync-external-orders", answer.json()["run_id"])
    assert run["status"] == "succeeded"

    scraped = await client.get("/metrics")
    assert scraped.status_code == 200
    text = scraped.text
    runs = metric_value(
        text, "mercato_job_runs_total", job="sync-external-orders", status="succeeded"
    )
    assert runs is not None and runs >= 1
    timed = metric_value(text, "mercato_job_duration_seconds_count", job="sync-external-orders")
    assert timed is not None and timed >= 1
    fetched = metric_value(
        text, "mercato_upstream_token_requests_total", upstream="partner", outcome="ok"
    )
    assert fetched is not None and fetched >= 1
    # The budget is read from this installation's token store: five an hour, one spent.
    assert metric_value(text, "mercato_upstream_budget_remaining", upstream="partner") == 4
    assert metric_value(text, "mercato_circuit_state", upstream="partner") == 0
