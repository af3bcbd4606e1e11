"""Fixtures shared by every test: isolated real services and a fresh data dir."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mercato.platform.settings import Settings
from tests import services
from tests.harness import delete_broker_topology, distributed_settings, embedded_settings
from tests.kafka_broker import Tansu, start_tansu

# Tests never read a developer's .env or environment by accident.
for _key in [k for k in os.environ if k.startswith("MERCATO_")]:
    if not _key.startswith("MERCATO_TEST"):
        del os.environ[_key]


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database of this test run (and xdist worker), dropped afterwards."""
    services.require("PostgreSQL", "127.0.0.1", 5432)
    name = f"mercato_t_{services.RUN_ID}_{_worker()}"
    url = services.create_pg_database(name)
    yield url
    services.drop_pg_database(name)


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """A RabbitMQ vhost of this test run (and xdist worker), deleted afterwards."""
    services.require("RabbitMQ", services.RABBIT_HOST, 5672)
    name = f"mercato-t-{services.RUN_ID}-{_worker()}"
    url = services.create_vhost(name)
    yield url
    services.delete_vhost(name)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis URL; isolate keys with `redis_prefix`."""
    services.require("Redis", "127.0.0.1", 6379)
    return services.REDIS_URL


@pytest.fixture
def redis_prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix unique to this test."""
    return f"mercato-t:{services.RUN_ID}:{_worker()}:{request.node.name}"[:200]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty data dir for one test."""
    path = tmp_path / "data"
    path.mkdir()
    return path


_db_counter = iter(range(1_000_000))


@pytest.fixture
def pg_database_url() -> Iterator[str]:
    """A PostgreSQL database of this one test, dropped afterwards."""
    services.require("PostgreSQL", "127.0.0.1", 5432)
    name = f"mercato_t_{services.RUN_ID}_{_worker()}_{next(_db_counter)}"
    url = services.create_pg_database(name)
    yield url
    services.drop_pg_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, data_dir: Path) -> str:
    """A service database URL, once on a SQLite file and once on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{data_dir / 'svc.db'}"
    url: str = request.getfixturevalue("pg_database_url")
    return url


@pytest.fixture(params=["embedded", "distributed"])
def backend(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Settings]:
    """Settings for one backend: embedded (SQLite, in-process) or distributed (PG, RabbitMQ,
    Redis). Tests taking this fixture run once on each."""
    if request.param == "embedded":
        yield embedded_settings(data_dir)
        return
    settings = distributed_settings(
        data_dir,
        request.getfixturevalue("pg_database_url"),
        request.getfixturevalue("rabbitmq_url"),
        request.getfixturevalue("redis_url"),
    )
    yield settings
    asyncio.run(delete_broker_topology(settings))


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tansu]:
    """One Tansu (a Kafka-compatible broker) of this test session (and xdist worker); tests
    isolate themselves by topic and group names."""
    broker = start_tansu(tmp_path_factory.mktemp("tansu"))
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_url(kafka_broker: Tansu) -> str:
    """The MERCATO_BROKER_URL of the session's Tansu."""
    return kafka_broker.url


@pytest.fixture
def kafka_backend(request: pytest.FixtureRequest, data_dir: Path, kafka_url: str) -> Settings:
    """Settings like the distributed backend's (PostgreSQL, Redis) with events over Kafka: the
    session's Tansu, with a stream topic of this test's own (groups are named by the prefix
    `distributed_settings` draws)."""
    return distributed_settings(
        data_dir,
        request.getfixturevalue("pg_database_url"),
        kafka_url,
        request.getfixturevalue("redis_url"),
        broker_topic=f"t{uuid.uuid4().hex[:8]}.events",
    )


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for one test, every span kept in memory (issue 13's traces across events)."""
    from mercato.platform import tracing

    exporter = InMemorySpanExporter()
    tracing.configure_tracing("mercato", exporter)
    yield exporter
    tracing.disable_tracing()
