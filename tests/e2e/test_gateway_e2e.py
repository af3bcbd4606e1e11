"""Through the dev cluster's nginx, the installation-wide answers are the embedded process's
(issue 14): one OpenAPI document with every operation, `/docs` and `/redoc` on it, and a
`/ready` over every service's replicas that turns 503, naming the service, when both replicas
of one service are SIGKILLed.

Marked disruptive: a whole cluster (two replicas of six services, the companion, a worker, the
partner sandbox, nginx) wants the machine's two cores to itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mercato.devcluster import ClusterConfig, DevCluster
from mercato.gateway import GATEWAY, ROUTES
from mercato.gateway_app import embedded_document
from tests import services
from tests.harness import embedded_settings

pytestmark = [pytest.mark.disruptive, pytest.mark.timeout(900)]

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def all_ready(body: dict[str, Any]) -> bool:
    """The one client-side check that reads `mercato run`'s `/ready` and the gateway's."""
    return body["status"] == "ok" and all(
        body["services"][service]["status"] == "ok" for service in ROUTES
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    services.require_dev_cluster()
    tag = uuid.uuid4().hex[:8]
    database, vhost = f"mercato_gateway_{tag}", f"mercato-gateway-{tag}"
    made = DevCluster(
        ClusterConfig(
            workdir=tmp_path_factory.mktemp("gateway-cluster"),
            database_url=services.create_pg_database(database),
            broker_url=services.create_vhost(vhost),
            redis_url=services.REDIS_URL,
            port=0,  # the cluster binds it and hands it to nginx
            partner_port=0,  # any free port, another one if it is taken meanwhile
            replicas=2,
            env={
                "MERCATO_ADMIN_PASSWORD": "Admin-Pass-1234",
                "MERCATO_REDIS_PREFIX": f"mercato-gateway:{tag}",
                "MERCATO_JOB_EXPORT_PRODUCTS_INITIAL_DELAY": "3600",
                "MERCATO_JOB_SYNC_EXTERNAL_PRODUCTS_INITIAL_DELAY": "3600",
                "MERCATO_JOB_SYNC_EXTERNAL_ORDERS_INITIAL_DELAY": "3600",
            },
        )
    )
    try:
        made.start(timeout=600)
        yield made
    finally:
        made.stop()
        services.delete_vhost(vhost)
        services.drop_pg_database(database)


def test_ports_picked_by_the_cluster_are_where_it_answers(cluster: DevCluster) -> None:
    assert cluster.port != 0 and cluster.base_url.endswith(f":{cluster.port}")
    partner = cluster.children["partner"].port
    assert partner
    assert cluster.env["MERCATO_EXTERNAL_BASE_URL"] == f"http://127.0.0.1:{partner}"
    assert httpx.get(f"http://127.0.0.1:{partner}/_stats", timeout=10).status_code == 200
    for service in ROUTES:
        assert len(cluster.replica_urls(service)) == 2
    assert len(cluster.replica_urls(GATEWAY)) == 1


def test_the_gateway_serves_the_embedded_document_and_its_docs(
    cluster: DevCluster, tmp_path: Path
) -> None:
    with httpx.Client(base_url=cluster.base_url, timeout=120) as client:
        document = client.get("/openapi.json")
        pages = {path: client.get(path) for path in ("/docs", "/redoc", "/docs/oauth2-redirect")}
        own = client.get("/services/catalog/openapi.json")
    assert document.status_code == 200, document.text
    embedded = embedded_document(embedded_settings(tmp_path))
    assert operations(document.json()) == operations(embedded)
    assert document.json()["info"]["title"] == "Mercato"
    for path, page in pages.items():
        assert page.status_code == 200, (path, page.text)
        assert page.headers["content-type"].startswith("text/html"), path
    assert "swagger-ui" in pages["/docs"].text and "redoc" in pages["/redoc"].text
    # One replica's own document stays reachable, and holds only that service's operations.
    assert own.status_code == 200
    assert ("/api/v1/products", "get") in operations(own.json())
    assert ("/api/v1/orders", "post") not in operations(own.json())


def test_ready_says_every_service_has_its_replicas_ready(cluster: DevCluster) -> None:
    answer = httpx.get(f"{cluster.base_url}/ready", timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert all_ready(body)
    for service in ROUTES:
        replicas = body["services"][service]["replicas"]
        expected = {url.removeprefix("http://") for url in cluster.replica_urls(service)}
        assert replicas == dict.fromkeys(expected, "ok"), (service, body)
    # Each replica's own /ready reads the same way, for its own service.
    for url in cluster.replica_urls("identity"):
        own = httpx.get(f"{url}/ready", timeout=30).json()
        assert own["status"] == "ok"
        assert own["services"]["identity"]["status"] == "ok"
        assert set(own["services"]["identity"]["checks"]) == {
            "database:identity",
            "redis",
            "broker",
        }


def test_ready_is_503_naming_a_service_whose_replicas_were_killed(cluster: DevCluster) -> None:
    victims = ("catalog-1", "catalog-2")
    for name in victims:
        cluster.kill(name)
    try:
        answer = httpx.get(f"{cluster.base_url}/ready", timeout=30)
        assert answer.status_code == 503, answer.text
        body = answer.json()
        assert body["status"] == "unavailable" and not all_ready(body)
        catalog = body["services"]["catalog"]
        assert catalog["status"] == "unavailable"
        assert set(catalog["replicas"].values()) == {"unavailable: ConnectError"}
        down = {service for service, entry in body["services"].items() if entry["status"] != "ok"}
        assert down == {"catalog"}
        # nginx's own liveness answer does not depend on any service.
        assert httpx.get(f"{cluster.base_url}/health", timeout=30).status_code == 200
    finally:
        for name in victims:
            cluster.restart(name)
        cluster.wait_healthy(300)
    answer = httpx.get(f"{cluster.base_url}/ready", timeout=30)
    assert answer.status_code == 200 and all_ready(answer.json())
