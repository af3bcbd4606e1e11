"""A Redis outage answers 503 + Retry-After wherever Redis is in use, though the error
handlers no longer import Redis themselves (start-up of an embedded platform)."""

from __future__ import annotations

import redis.exceptions
from fastapi import FastAPI
from fastapi.testclient import TestClient

from mercato.platform.http_errors import install_error_handlers


def test_a_redis_error_is_a_503_once_redis_is_in_use() -> None:
    app = FastAPI()
    install_error_handlers(app)  # redis is imported (above), as the platform does when configured

    @app.get("/boom")
    async def boom() -> None:
        raise redis.exceptions.ConnectionError("down")

    answer = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
