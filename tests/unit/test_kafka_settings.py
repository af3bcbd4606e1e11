"""MERCATO_BROKER_URL picks the transport; a kafka:// URL's options reach the clients."""

from __future__ import annotations

from pathlib import Path

import pytest

from mercato.platform.events.inprocess import InProcessTransport
from mercato.platform.events.kafka import KafkaTransport
from mercato.platform.events.rabbitmq import RabbitMQTransport
from mercato.platform.runtime import make_transport
from mercato.platform.settings import Settings


def settings(tmp_path: Path, broker_url: str | None) -> Settings:
    return Settings(data_dir=tmp_path, broker_url=broker_url, broker_topic="shop.events")


def test_the_url_scheme_picks_the_transport(tmp_path: Path) -> None:
    assert isinstance(make_transport(settings(tmp_path, None)), InProcessTransport)
    rabbit = make_transport(settings(tmp_path, "amqp://guest:guest@127.0.0.1:5672/"))
    assert isinstance(rabbit, RabbitMQTransport)
    kafka = make_transport(settings(tmp_path, "kafka://k1:9092,k2:9092"))
    assert isinstance(kafka, KafkaTransport)
    assert kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert kafka.names.stream == "shop.events"
    assert kafka.names.group("wallet") == "mercato.wallet"
    assert kafka.idempotence and kafka.partitions == 6
    assert kafka.consumer_options["session_timeout_ms"] == 10_000


def test_kafka_url_options(tmp_path: Path) -> None:
    url = "kafka://k:9092?idempotence=false&partitions=3&session_timeout_ms=3000"
    kafka = KafkaTransport(url, prefix="t1")
    assert not kafka.idempotence and kafka.partitions == 3
    assert kafka.consumer_options["session_timeout_ms"] == 3000
    assert kafka.names.retry_topic("orders", 0.2) == "t1.orders.retry.200ms"
    assert kafka.names.consumer_topics("orders", (1, 0.2, 1)) == [
        "mercato.events",
        "t1.orders.replay",
        "t1.orders.retry.200ms",
        "t1.orders.retry.1000ms",
    ]
    with pytest.raises(ValueError):
        KafkaTransport("http://k:9092")
