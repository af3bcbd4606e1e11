"""`mercato backup` under order load and `mercato restore` into a fresh data dir (SQLite): the
restored platform starts, holds every order acknowledged before the backup, leaves nothing
pending for ever, and every balance equals its ledger; partial or mismatched backups are refused
with one line."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mercato.backup import MANIFEST, backup, restore
from mercato.platform.settings import Settings
from mercato.platform.snapshot import SnapshotError
from mercato.wallet.store import ledger, wallets
from tests import services
from tests.commerce import create_product, place, top_up
from tests.harness import (
    Stack,
    admin,
    delete_broker_topology,
    distributed_settings,
    embedded_settings,
    eventually,
    register_user,
    stack,
)


async def _balances_match_ledgers(s: Stack) -> None:
    async with s.platform.databases["wallet"].read() as conn:
        balances = dict((await conn.execute(select(wallets.c.user_id, wallets.c.balance))).all())
        sums = dict(
            (
                await conn.execute(
                    select(ledger.c.user_id, func.sum(ledger.c.amount)).group_by(ledger.c.user_id)
                )
            ).all()
        )
    assert balances
    for user_id, balance in balances.items():
        assert Decimal(sums.get(user_id) or 0) == balance, user_id


async def _backup_under_load_then_restore(
    source: Settings, target: Settings, snapshot: Path
) -> None:
    """Place orders from three buyers while a backup runs, restore it into `target`, and check
    the restored platform."""
    acknowledged: list[tuple[str, float]] = []
    async with stack(source) as s:
        boss = await admin(s)
        book = await create_product(s, boss, name="Load", price="1.00", stock=10_000)
        buyers = [await register_user(s, f"buyer{i}") for i in range(3)]
        for buyer in buyers:
            await top_up(s, buyer, "1000")
        stop = asyncio.Event()

        async def load(buyer_index: int) -> None:
            while not stop.is_set():
                order = await place(s, buyers[buyer_index], [(book["id"], 1)])
                acknowledged.append((order["id"], time.monotonic()))

        tasks = [asyncio.create_task(load(i)) for i in range(len(buyers))]
        await asyncio.sleep(1.0)
        started = time.monotonic()
        report = await asyncio.to_thread(backup, source, snapshot)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*tasks)
    before = [order_id for order_id, at in acknowledged if at < started]
    assert len(before) >= 3 and len(acknowledged) > len(before)  # the load ran throughout
    assert set(report.services) == {
        "accounts",
        "identity",
        "catalog",
        "wallet",
        "orders",
        "integration",
    }
    manifest = json.loads((snapshot / MANIFEST).read_text())
    assert manifest["services"]["orders"]["heads"]["alembic_version_orders"] == ["orders_0002"]

    await asyncio.to_thread(restore, target, snapshot)
    async with stack(target) as r:
        boss = await admin(r)
        for order_id in before:
            found = await r.client.get(f"/api/v1/orders/{order_id}", headers=boss.headers)
            assert found.status_code == 200, order_id

        async def settled() -> bool:
            pending = await r.client.get(
                "/api/v1/admin/orders", params={"status": "pending"}, headers=boss.headers
            )
            return bool(pending.json()["total"] == 0)

        await eventually(settled, timeout=60, what="no order pending")

        async def drained() -> bool:
            for service in r.platform.databases:
                stats = await r.client.get(f"/api/v1/events/{service}/stats", headers=boss.headers)
                body = stats.json()
                if body["outbox_backlog"] or body["queued_incoming"] or body["dead_letters"]:
                    return False
            return True

        await eventually(drained, timeout=60, what="every outbox and queue drained")
        await _balances_match_ledgers(r)
        completed = await r.client.get(
            "/api/v1/admin/orders", params={"status": "completed"}, headers=boss.headers
        )
        assert completed.json()["total"] >= len(before)


async def test_a_backup_under_load_restores_into_a_working_platform(tmp_path: Path) -> None:
    await _backup_under_load_then_restore(
        embedded_settings(tmp_path / "data"),
        embedded_settings(tmp_path / "restored"),
        tmp_path / "snapshot",
    )


async def test_the_same_on_postgresql_and_rabbitmq(
    tmp_path: Path, pg_database_url: str, rabbitmq_url: str, redis_url: str
) -> None:
    name = f"mercato_t_{services.RUN_ID}_restored_{uuid.uuid4().hex[:6]}"
    restored_url = await asyncio.to_thread(services.create_pg_database, name)
    source = distributed_settings(tmp_path / "data", pg_database_url, rabbitmq_url, redis_url)
    target = distributed_settings(tmp_path / "restored", restored_url, rabbitmq_url, redis_url)
    try:
        await _backup_under_load_then_restore(source, target, tmp_path / "snapshot")
        assert (tmp_path / "snapshot" / "postgresql-0.dump").is_file()
    finally:
        for settings in (source, target):
            await delete_broker_topology(settings)
        await asyncio.to_thread(services.drop_pg_database, name)


def test_partial_mismatched_and_non_empty_restores_are_refused(tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    target = embedded_settings(tmp_path / "target")
    with pytest.raises(SnapshotError, match=r"no manifest\.json"):
        restore(target, snapshot)
    (snapshot / MANIFEST).write_text(
        json.dumps(
            {
                "format": "mercato-backup/1",
                "started_at": "2026-01-01T00:00:00+00:00",
                "services": {"orders": {}},
                "files": {"orders.db": "0" * 64},
            }
        )
    )
    with pytest.raises(SnapshotError, match=r"orders\.db is missing"):
        restore(target, snapshot)
    (snapshot / "orders.db").write_bytes(b"not a database")
    with pytest.raises(SnapshotError, match="does not match its checksum"):
        restore(target, snapshot)
    manifest = json.loads((snapshot / MANIFEST).read_text())
    manifest["files"] = {}
    (snapshot / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(SnapshotError, match="does not match this installation"):
        restore(target, snapshot)
    with pytest.raises(SnapshotError, match="not empty"):
        backup(target, snapshot)
