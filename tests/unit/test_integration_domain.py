"""Integration rules: schedules, the CSV row format, export names and rotation, provider data."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from mercato.integration.domain import (
    CSV_HEADER,
    BadProduct,
    classify,
    csv_row,
    dummyjson_product,
    export_file_name,
    files_to_rotate,
    parse_schedule,
    partner_order,
)
from mercato.integration.exporter import _parsed
from mercato.integration.settings import IntegrationSettings

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("300", 300), ("30s", 30), ("5m", 300), ("every 5m", 300), ("1h", 3600), ("2 min", 120)],
)
def test_interval_schedules_parse(text: str, seconds: float) -> None:
    schedule = parse_schedule(text)
    assert schedule.interval == seconds and schedule.cron is None


@pytest.mark.parametrize("text", ["", "0", "0.5s", "every", "5 fortnights", "* * *", "61 * * * *"])
def test_bad_schedules_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_schedule(text)


def test_interval_ticks_follow_the_last_tick_and_coalesce_missed_ones() -> None:
    every5 = parse_schedule("5m")
    assert every5.first_tick(T0, 30) == T0 + timedelta(seconds=30)
    assert every5.next_after(T0, T0) == T0 + timedelta(minutes=5)
    # Down for 23 minutes: one catch-up tick, then back on the 5-minute grid of the old ticks.
    late = T0 + timedelta(minutes=23)
    assert every5.next_after(T0, late) == T0 + timedelta(minutes=25)
    assert every5.describe() == "every 300s"


def test_cron_schedules_tick_on_the_cron_grid() -> None:
    quarter = parse_schedule("*/15 * * * *")
    assert quarter.cron == "*/15 * * * *"
    assert quarter.first_tick(T0 + timedelta(minutes=1), 10) == T0 + timedelta(minutes=15)
    assert quarter.next_after(T0, T0 + timedelta(minutes=31)) == T0 + timedelta(minutes=45)
    assert quarter.describe() == "cron */15 * * * *"


def test_settings_read_schedules_and_refuse_bad_ones() -> None:
    settings = IntegrationSettings(job_sync_external_orders_schedule="*/10 * * * *")
    assert settings.schedule("sync-external-orders").cron == "*/10 * * * *"
    assert settings.schedule("export-products").interval == 300
    assert settings.initial_delay("export-products") == 30
    assert settings.initial_delay("sync-external-orders") == 10
    with pytest.raises(ValueError):
        IntegrationSettings(job_export_products_schedule="sometimes")
    with pytest.raises(ValueError):
        IntegrationSettings(export_file_pattern="../evil_%S.csv")


def test_csv_row_formats_price_status_owner_and_utc_date() -> None:
    product = {
        "id": "0190c5f0-0000-7000-8000-000000000001",
        "name": 'Lamp, "big"',
        "description": "line one\nline two",
        "price": "19.9",
        "status": "available",
        "owner_id": None,
        "created_at": "2026-03-01T14:30:22.123456+02:00",
    }
    row = csv_row(product)
    assert row == (
        product["id"],
        'Lamp, "big"',
        "line one\nline two",
        "19.90",
        "Available",
        "",
        "2026-03-01T12:30:22Z",
    )
    # Through the csv module and back: quoting keeps commas, quotes and newlines intact.
    buffer = io.StringIO()
    csv.writer(buffer).writerows([CSV_HEADER, row])
    assert list(csv.reader(io.StringIO(buffer.getvalue()))) == [list(CSV_HEADER), list(row)]


def test_csv_row_status_without_a_status_field_and_bad_products() -> None:
    base = {"id": "p", "name": "n", "price": 3, "created_at": "2026-01-01T00:00:00Z"}
    assert csv_row({**base, "active": True, "stock": 0})[4] == "Unavailable"
    assert csv_row({**base, "active": True, "stock": 2, "owner_id": "u1"})[4:6] == (
        "Available",
        "u1",
    )
    assert csv_row({**base, "status": "unavailable"})[3] == "3.00"
    for broken in ({**base, "price": "x"}, {"id": "p"}, {**base, "created_at": "yesterday"}):
        with pytest.raises(BadProduct):
            csv_row(broken)


def test_export_names_are_timestamped_and_never_collide() -> None:
    pattern = "products_%Y%m%d_%H%M%S.csv"
    name = export_file_name(pattern, T0)
    assert name == "products_20260301_120000.csv"
    assert export_file_name(pattern, T0, [name]) == "products_20260301_120000_2.csv"
    taken = [name, "products_20260301_120000_2.csv"]
    assert export_file_name(pattern, T0, taken) == "products_20260301_120000_3.csv"
    # The plain name was rotated away while _2 remains: the next one is _3, not the plain name.
    assert export_file_name(pattern, T0, taken[1:]) == "products_20260301_120000_3.csv"
    assert export_file_name(pattern, T0 + timedelta(seconds=1), taken).endswith("120001.csv")


def test_rotation_keeps_the_newest() -> None:
    newest_first = [f"f{i}" for i in range(12, 0, -1)]
    assert files_to_rotate(newest_first, 10) == ["f2", "f1"]
    assert files_to_rotate(newest_first[:3], 10) == []


def test_dummyjson_products_are_normalised_and_checked() -> None:
    raw = {
        "id": 7,
        "title": " Eco Mug 7 ",
        "description": "A mug",
        "price": 12.345,
        "category": "kitchen",
        "brand": "",
        "stock": 4,
        "rating": 4.5,
    }
    product = dummyjson_product(raw)
    assert product.external_id == "7" and product.name == "Eco Mug 7"
    assert product.price == Decimal("12.35") and product.brand is None and product.stock == 4
    assert product.fingerprint() == dummyjson_product(dict(raw)).fingerprint()
    assert product.fingerprint() != dummyjson_product({**raw, "stock": 5}).fingerprint()
    for broken in ({**raw, "title": ""}, {**raw, "price": "free"}, {"id": 1}, {**raw, "stock": -1}):
        with pytest.raises(ValueError):
            dummyjson_product(broken)


def test_partner_orders_and_classification() -> None:
    raw = {
        "id": "PO-000001",
        "status": "paid",
        "total": 31.5,
        "currency": "usd",
        "customer_email": "a@example.com",
        "items": [{"sku": "SKU-1", "quantity": 1, "unit_price": 31.5}],
        "created_at": "2025-02-01T10:00:00Z",
    }
    order = partner_order(raw)
    assert order.total == Decimal("31.50") and order.currency == "USD"
    assert order.placed_at == datetime(2025, 2, 1, 10, tzinfo=UTC)
    assert classify(None, order.fingerprint()) == "created"
    assert classify(order.fingerprint(), order.fingerprint()) == "unchanged"
    changed = partner_order({**raw, "status": "shipped"})
    assert classify(order.fingerprint(), changed.fingerprint()) == "updated"
    with pytest.raises(ValueError):
        partner_order({**raw, "total": None})


def test_ndjson_chunk_parsing_keeps_good_lines_and_names_bad_ones() -> None:
    good = [b'{"id":"a","n":1}', b'{"id":"b","s":"},{"}']
    assert _parsed(good) == [{"id": "a", "n": 1}, {"id": "b", "s": "},{"}]
    assert _parsed([]) == []
    # A broken line costs only itself, even where it would pair up with its neighbour.
    mixed = [b'{"id":"a"}', b'{"id":"b"', b"[1]", b'{"id":"c"}', b'{"x":1},{"y":2}']
    parsed = _parsed(mixed)
    assert parsed[0] == {"id": "a"} and parsed[3] == {"id": "c"}
    assert [type(p) for p in parsed] == [dict, BadProduct, BadProduct, dict, BadProduct]
    paired = [b'{"a":1},{"b":2', b'"c":3}']
    assert all(isinstance(p, BadProduct) for p in _parsed(paired))
    two_in_one = _parsed([b'{"x":1},{"y":2}', b'{"id":"c"}'])
    assert isinstance(two_in_one[0], BadProduct) and two_in_one[1] == {"id": "c"}
