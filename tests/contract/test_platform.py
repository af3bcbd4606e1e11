"""Platform endpoints, the same on both targets: health, readiness naming every service, the one
OpenAPI document with its docs, metrics for scraping, problem+json for what nobody answers."""

from __future__ import annotations

import httpx

from tests.contract.api import is_problem
from tests.contract.conftest import Target

SERVICES = ("accounts", "identity", "catalog", "wallet", "orders", "integration")


def test_health_and_ready_name_every_service(target: Target) -> None:
    with target.client() as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 200, ready.text
        named = ready.json()["services"]
        assert set(SERVICES) <= set(named), named


def test_one_openapi_document_holds_every_services_operations(target: Target) -> None:
    with target.client() as client:
        document = client.get("/openapi.json")
        assert document.status_code == 200
        paths = document.json()["paths"]
        for path in (
            "/api/v1/accounts/register",
            "/api/v1/auth/login",
            "/oauth/token",
            "/api/v1/products",
            "/api/v1/wallet/topup",
            "/api/v1/orders",
            "/api/v1/jobs",
        ):
            assert path in paths, path
        for page in ("/docs", "/redoc"):
            shown = client.get(page)
            assert shown.status_code == 200 and "openapi.json" in shown.text, page


def test_every_process_exposes_metrics_for_scraping(target: Target) -> None:
    for service in SERVICES:
        for url in target.replicas(service):
            scraped = httpx.get(f"{url}/metrics", timeout=10)
            assert scraped.status_code == 200, (service, url)
            assert "# TYPE" in scraped.text


def test_a_path_nobody_answers_is_a_problem(target: Target) -> None:
    with target.client() as client:
        is_problem(client.get("/api/v1/nothing-here"), 404)
        is_problem(client.get("/api/v1/products/not-a-uuid"), 422)
