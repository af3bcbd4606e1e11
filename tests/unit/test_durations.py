"""Durations in settings (`20s`, `5m`, `1h`, seconds) and one-line settings errors."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mercato.integration.settings import IntegrationSettings
from mercato.platform.config import SettingsError, load
from mercato.platform.durations import parse_duration, parse_durations
from mercato.platform.settings import Settings


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("20s", 20.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("300", 300.0),
        ("2.5", 2.5),
        ("1.5h", 5400.0),
        (" 5 m ", 300.0),
        ("2 days", 172800.0),
        ("250ms", 0.25),
        ("PT20S", 20.0),
        ("0", 0.0),
    ],
)
def test_duration_text_is_read_as_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_numbers_and_timedeltas_are_seconds() -> None:
    assert parse_duration(7) == 7.0
    assert parse_duration(0.5) == 0.5
    assert parse_duration(timedelta(minutes=2)) == 120.0


@pytest.mark.parametrize("bad", ["2x", "", "  ", "-5s", "soon", "every 5m", "nan", "inf"])
def test_what_is_not_a_duration_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match="a duration such as 20s"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", [True, None, -1, float("nan"), [1]])
def test_non_duration_values_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_a_list_of_durations() -> None:
    assert parse_durations("1s, 5s,30,2m") == (1.0, 5.0, 30.0, 120.0)
    assert parse_durations([1, "1m"]) == (1.0, 60.0)


def test_every_delay_setting_reads_the_same_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERCATO_JOB_SYNC_EXTERNAL_ORDERS_INITIAL_DELAY", "2s")
    monkeypatch.setenv("MERCATO_JOB_EXPORT_PRODUCTS_INITIAL_DELAY", "1m")
    monkeypatch.setenv("MERCATO_JOB_LEASE_SECONDS", "2m")
    monkeypatch.setenv("MERCATO_HTTP_TOTAL_TIMEOUT", "45s")
    monkeypatch.setenv("MERCATO_RELAY_POLL_SECONDS", "500ms")
    monkeypatch.setenv("MERCATO_EVENT_RETRY_DELAYS", "1s,30s,5m")
    integ = IntegrationSettings(_env_file=None)  # type: ignore[call-arg]
    assert integ.initial_delay("sync-external-orders") == 2.0
    assert integ.initial_delay("export-products") == 60.0
    assert integ.job_lease_seconds == 120.0
    assert integ.http_total_timeout == 45.0
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.relay_poll_seconds == 0.5
    assert settings.event_retry_delays == (1.0, 30.0, 300.0)


def test_bounds_still_apply_to_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERCATO_SCHEDULER_POLL_SECONDS", "0s")
    with pytest.raises(SettingsError, match="MERCATO_SCHEDULER_POLL_SECONDS"):
        load(IntegrationSettings, _env_file=None)


def test_a_bad_setting_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERCATO_JOB_SYNC_EXTERNAL_ORDERS_INITIAL_DELAY", "2x")
    monkeypatch.setenv("MERCATO_EXTERNAL_PAGE_SIZE", "lots")
    with pytest.raises(SettingsError) as caught:
        load(IntegrationSettings, _env_file=None)
    message = str(caught.value)
    assert "\n" not in message
    assert "MERCATO_JOB_SYNC_EXTERNAL_ORDERS_INITIAL_DELAY" in message and "'2x'" in message
    assert "MERCATO_EXTERNAL_PAGE_SIZE" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_settings_error_never_shows_the_value_it_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A secret-looking value in a field whose type check fails is named, never echoed.
    monkeypatch.setenv("MERCATO_EXTERNAL_TOKEN_BUDGET_PER_HOUR", "hunter2-secret")
    with pytest.raises(SettingsError) as caught:
        load(IntegrationSettings, _env_file=None)
    assert "MERCATO_EXTERNAL_TOKEN_BUDGET_PER_HOUR" in str(caught.value)
    assert "hunter2" not in str(caught.value)
