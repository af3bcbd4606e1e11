"""The HTTP shell: every failure is problem+json, never a 500 without a correlation id."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import structlog
from fastapi import APIRouter
from pydantic import BaseModel

from mercato.platform.errors import Conflict
from mercato.platform.logging import configure_logging
from mercato.platform.web import create_base_app

PROBLEM = "application/problem+json"


class Body(BaseModel):
    name: str
    count: int


def build() -> httpx.AsyncClient:
    app = create_base_app("t", max_body_bytes=1024)
    router = APIRouter()

    @router.post("/things")
    async def create(body: Body) -> dict[str, str]:
        return {"name": body.name}

    @router.post("/conflict")
    async def conflict() -> None:
        raise Conflict("name already taken")

    @router.get("/redis-down")
    async def redis_down() -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError

        raise RedisConnectionError("Connection closed by server.")

    @router.post("/boom")
    async def boom(body: dict[str, str]) -> None:
        assert body  # a local holding the request body
        raise RuntimeError("kaput")

    app.include_router(router)
    # As a server does: the 500 answer is sent, the exception is not re-raised to the client.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with build() as c:
        yield c


async def test_validation_error_names_the_fields_without_echoing_values(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.post("/things", json={"name": "secret-value", "count": "many"})
    assert answer.status_code == 422 and answer.headers["content-type"] == PROBLEM
    body = answer.json()
    assert {"type", "title", "status", "detail", "errors"} <= set(body)
    assert body["errors"][0]["loc"] == ["body", "count"]
    assert "secret-value" not in answer.text and "many" not in answer.text


async def test_malformed_json_is_a_4xx_problem(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/things", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422 and answer.headers["content-type"] == PROBLEM


async def test_404_405_409_are_problems(client: httpx.AsyncClient) -> None:
    for answer, status in [
        (await client.get("/nowhere"), 404),
        (await client.get("/things"), 405),
        (await client.post("/conflict"), 409),
    ]:
        assert answer.status_code == status
        assert answer.headers["content-type"] == PROBLEM
        assert answer.json()["status"] == status


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    answer = await client.post("/things", content=b"x" * 2048)
    assert answer.status_code == 413 and answer.headers["content-type"] == PROBLEM

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):  # no content-length: the limit is counted as the body streams
            yield b"y" * 512

    streamed = await client.post("/things", content=chunks())
    assert streamed.status_code == 413


async def test_unhandled_error_is_500_problem_with_correlation_id_and_no_secret_logged(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", json=True)
    answer = await client.post(
        "/boom", json={"password": "hunter2-secret"}, headers={"X-Correlation-ID": "corr-42"}
    )
    assert answer.status_code == 500 and answer.headers["content-type"] == PROBLEM
    assert answer.json()["correlation_id"] == "corr-42"
    assert answer.headers["x-correlation-id"] == "corr-42"
    assert "hunter2" not in answer.text and "kaput" not in answer.text
    err = capsys.readouterr().err
    assert '"unhandled error"' in err and "corr-42" in err and "RuntimeError" in err
    assert "hunter2" not in err


def test_console_tracebacks_never_show_local_variables(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=False)
    try:
        password = "hunter" + "2-secret"
        assert password
        raise RuntimeError("kaput")
    except RuntimeError:
        structlog.get_logger("t").exception("failed")
    finally:
        configure_logging("INFO", json=True)
    err = capsys.readouterr().err
    assert "kaput" in err and "hunter2" not in err


async def test_every_answer_carries_a_correlation_id(client: httpx.AsyncClient) -> None:
    answer = await client.get("/health")
    assert answer.status_code == 200 and answer.headers["x-correlation-id"]
    # An id that is not a plain token is replaced, never reflected.
    odd = await client.get("/health", headers={"X-Correlation-ID": "<script>"})
    assert odd.headers["x-correlation-id"] != "<script>"


async def test_metrics_label_requests_by_route_template(client: httpx.AsyncClient) -> None:
    from prometheus_client import generate_latest

    await client.post("/things", json={"name": "a", "count": 1})
    await client.get("/no/such/thing")
    lines = generate_latest().decode().splitlines()
    assert any('route="/things",status="200"' in line for line in lines)
    assert any('route="unmatched",status="404"' in line for line in lines)


async def test_shared_state_outage_is_503_with_retry_after(client: httpx.AsyncClient) -> None:
    answer = await client.get("/redis-down")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert answer.headers["content-type"] == PROBLEM
