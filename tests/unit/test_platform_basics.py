"""Envelope, retry schedule, settings, money and ids: the platform's small rules, without I/O."""

from __future__ import annotations

import stat
import uuid
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import BaseModel, ValidationError

from mercato.platform.events.consumer import retry_delay
from mercato.platform.events.envelope import (
    Envelope,
    EventPayload,
    current_causation_id,
    current_correlation_id,
    make_envelope,
)
from mercato.platform.ids import new_id, new_id_str
from mercato.platform.money import Money, format_money, parse_money
from mercato.platform.settings import DEFAULT_RETRY_DELAYS, Settings


class Shipped(EventPayload):
    event_type: ClassVar[str] = "parcel.shipped"
    event_version: ClassVar[int] = 2
    secret_fields: ClassVar[frozenset[str]] = frozenset({"pin"})

    parcel_id: str
    pin: str


def test_envelope_has_design_fields_and_uuid7_id() -> None:
    env = make_envelope(Shipped(parcel_id="p1", pin="1234"), source="post", subject="p1")
    assert set(env.model_dump()) == {
        "id", "type", "version", "source", "occurred_at", "subject", "correlation_id",
        "causation_id", "data", "traceparent", "tracestate",
    }  # fmt: skip
    assert uuid.UUID(env.id).version == 7
    assert (env.type, env.version, env.source, env.subject) == ("parcel.shipped", 2, "post", "p1")
    assert env.correlation_id == env.id and env.causation_id is None
    assert env.occurred_at.tzinfo is not None


def test_envelope_round_trips_and_parses_its_payload() -> None:
    env = make_envelope(Shipped(parcel_id="p1", pin="1234"), source="post", subject="p1")
    again = Envelope.from_json(env.to_json())
    assert again == env
    assert again.payload(Shipped) == Shipped(parcel_id="p1", pin="1234")


def test_envelope_inherits_correlation_and_causation_from_the_context() -> None:
    corr = current_correlation_id.set("req-1")
    cause = current_causation_id.set("evt-0")
    try:
        env = make_envelope(Shipped(parcel_id="p", pin="0"), source="post", subject="p")
    finally:
        current_correlation_id.reset(corr)
        current_causation_id.reset(cause)
    assert (env.correlation_id, env.causation_id) == ("req-1", "evt-0")


def test_envelope_log_view_masks_secret_fields() -> None:
    env = make_envelope(Shipped(parcel_id="p1", pin="9876"), source="post", subject="p1")
    view = env.for_log(Shipped.secret_fields)
    assert "9876" not in repr(view)
    assert view["secret_keys"] == ["pin"]


def test_malformed_envelope_is_refused() -> None:
    with pytest.raises(ValidationError):
        Envelope.from_json('{"id": "x", "type": "t"}')


def test_retry_schedule_grows_then_ends() -> None:
    delays = (1.0, 5.0, 30.0)
    assert [retry_delay(n, delays) for n in range(4)] == [1.0, 5.0, 30.0, None]
    assert retry_delay(-1, delays) is None
    assert list(DEFAULT_RETRY_DELAYS) == sorted(DEFAULT_RETRY_DELAYS)


def test_settings_defaults_give_an_embedded_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path("/"))  # no .env here
    settings = Settings()
    assert not settings.distributed
    assert settings.database_url_for("wallet") == "sqlite+aiosqlite:///data/wallet.db"


def test_settings_read_the_environment_and_per_service_overrides(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MERCATO_DATABASE_URL", "postgresql+asyncpg://pg/mercato")
    monkeypatch.setenv("MERCATO_WALLET_DATABASE_URL", "postgresql+asyncpg://pg/wallet")
    monkeypatch.setenv("MERCATO_BROKER_URL", "amqp://guest:guest@localhost/")
    monkeypatch.setenv("MERCATO_EVENT_RETRY_DELAYS", "0.5, 2,10")
    settings = Settings()
    assert settings.distributed
    assert settings.database_url_for("orders") == "postgresql+asyncpg://pg/mercato"
    assert settings.database_url_for("wallet") == "postgresql+asyncpg://pg/wallet"
    assert settings.event_retry_delays == (0.5, 2.0, 10.0)


def test_settings_read_a_dotenv_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MERCATO_DATA_DIR=/srv/mercato\nMERCATO_LOG_LEVEL=DEBUG\n")
    settings = Settings()
    assert settings.data_dir == Path("/srv/mercato") and settings.log_level == "DEBUG"


def test_ids_are_time_ordered_uuid7() -> None:
    first, second = new_id(), new_id()
    assert first.version == 7 and first < second
    assert uuid.UUID(new_id_str()).version == 7


class Priced(BaseModel):
    price: Money


@pytest.mark.parametrize(
    ("raw", "text"), [(19.99, "19.99"), ("19.9", "19.90"), (5, "5.00"), ("0.10", "0.10")]
)
def test_money_accepts_numbers_and_strings_and_answers_two_places(raw: object, text: str) -> None:
    assert Priced.model_validate({"price": raw}).model_dump(mode="json") == {"price": text}


@pytest.mark.parametrize("raw", ["1.999", 0.001, "abc", "NaN", "Infinity", True, None, [], "1e12"])
def test_money_refuses_what_is_not_an_amount(raw: object) -> None:
    with pytest.raises(ValidationError):
        Priced.model_validate({"price": raw})


def test_money_helpers() -> None:
    assert parse_money("  3.5 ") == Decimal("3.50")
    assert format_money(Decimal("7")) == "7.00"


def test_a_database_file_makes_private_only_a_directory_of_mercatos_own(tmp_path: Path) -> None:
    from mercato.platform.db import _private_file

    ours, shared = tmp_path / "data", tmp_path / "srv"
    for directory in (ours, shared):
        directory.mkdir()
        directory.chmod(0o755)
        (directory / "secrets.key").touch()
    (shared / "someone-elses.conf").touch()
    _private_file(ours / "catalog.db")
    _private_file(shared / "catalog.db")
    assert stat.S_IMODE(ours.stat().st_mode) == 0o700
    # A directory holding anything else (think `/`, or /srv) keeps its mode; the file is 0600.
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert stat.S_IMODE((shared / "catalog.db").stat().st_mode) == 0o600
