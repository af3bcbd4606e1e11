"""`mercato run` on an empty data dir: it starts, migrates and answers the operational endpoints."""

from __future__ import annotations

from tests.e2e.conftest import RunningPlatform


def test_run_on_empty_data_dir_answers_health_ready_metrics_docs(platform: RunningPlatform) -> None:
    with platform.client() as client:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ok"
        assert "mercato_http_requests_total" in client.get("/metrics").text
        assert client.get("/openapi.json").json()["info"]["title"] == "Mercato"
        assert client.get("/docs").status_code == 200
        assert client.get("/redoc").status_code == 200
        missing = client.get("/no/such/path")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["status"] == 404
