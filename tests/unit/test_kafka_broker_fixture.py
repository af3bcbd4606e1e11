"""An absent Kafka broker skips its tests, except under CI=true, where it fails them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mercato.tansu import BrokerUnavailable, Tansu
from tests import kafka_broker


def no_broker(self: Tansu, port: int | None = None) -> None:
    raise BrokerUnavailable("no Tansu here")


def test_absent_broker_skips_outside_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Tansu, "start", no_broker)
    monkeypatch.setattr(kafka_broker.services, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="no Tansu here"):
        kafka_broker.start_tansu(tmp_path)


def test_absent_broker_fails_under_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Tansu, "start", no_broker)
    monkeypatch.setattr(kafka_broker.services, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        kafka_broker.start_tansu(tmp_path)


def test_a_port_taken_by_someone_else_is_not_mistaken_for_our_broker(tmp_path: Path) -> None:
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        broker = Tansu(tmp_path)
        try:
            with pytest.raises(BrokerUnavailable):
                broker.start(taken)  # it answers on that port, but it is not ours
            broker.start()  # a random port instead
            assert broker.port != taken and broker.running
        finally:
            broker.stop()
