"""Wallet over HTTP: top-ups with limits and `Idempotency-Key`, admins, the ledger, closing."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path

from mercato.platform.settings import Settings
from tests.commerce import balance, top_up
from tests.harness import admin, embedded_settings, eventually, register_user, stack

SERVICES = ["accounts", "wallet"]


async def test_top_up_is_capped_for_people_and_honours_idempotency_keys(
    backend: Settings,
) -> None:
    async with stack(backend, SERVICES) as s:
        jane = await register_user(s, "jane")
        assert await balance(s, jane) == Decimal("0")
        key = {**jane.headers, "Idempotency-Key": str(uuid.uuid4())}
        first = await s.client.post("/api/v1/wallet/topup", headers=key, json={"amount": 1500})
        assert first.json() == {"user_id": jane.id, "balance": "1500.00"}
        await top_up(s, jane, "0.50")
        # The same key and body again: the first answer, and no second credit.
        repeat = await s.client.post("/api/v1/wallet/topup", headers=key, json={"amount": "1500"})
        assert repeat.status_code == 200 and repeat.json() == first.json()
        other = await s.client.post("/api/v1/wallet/topup", headers=key, json={"amount": 1})
        assert other.status_code == 409
        assert await balance(s, jane) == Decimal("1500.50")
        over = await s.client.post(
            "/api/v1/wallet/topup", headers=jane.headers, json={"amount": "10000.01"}
        )
        assert over.status_code == 422 and over.json()["errors"][0]["loc"] == ["body", "amount"]
        # Concurrent repeats of one key credit once.
        same = {**jane.headers, "Idempotency-Key": "retry-storm"}
        answers = await asyncio.gather(
            *(
                s.client.post("/api/v1/wallet/topup", headers=same, json={"amount": 10})
                for _ in range(5)
            )
        )
        assert {a.status_code for a in answers} == {200}
        assert len({a.text for a in answers}) == 1
        assert await balance(s, jane) == Decimal("1510.50")
        entries = (await s.client.get("/api/v1/wallet/ledger", headers=jane.headers)).json()
        assert [e["amount"] for e in entries["items"]] == ["10.00", "0.50", "1500.00"]
        assert entries["items"][0]["balance_after"] == "1510.50"


async def test_admins_top_up_anyone_people_only_themselves(data_dir: Path) -> None:
    async with stack(embedded_settings(data_dir, wallet_topup_limit="100"), SERVICES) as s:
        boss = await admin(s)
        jane = await register_user(s, "jane")
        john = await register_user(s, "john")

        async def has_wallet() -> bool:
            answer = await s.client.post(
                "/api/v1/wallet/topup",
                headers=boss.headers,
                json={"amount": "5000", "user_id": john.id},
            )
            return answer.status_code == 200  # once `user.created` reached wallet

        await eventually(has_wallet, what="john's wallet")
        assert await balance(s, john) == Decimal("5000.00")
        assert (await top_up(s, jane, "100"))["balance"] == "100.00"
        refused = await s.client.post(
            "/api/v1/wallet/topup", headers=jane.headers, json={"amount": 1, "user_id": john.id}
        )
        assert refused.status_code == 403
        nobody = await s.client.post(
            "/api/v1/wallet/topup",
            headers=boss.headers,
            json={"amount": 1, "user_id": str(uuid.uuid4())},
        )
        assert nobody.status_code == 404
        theirs = await s.client.get(
            f"/api/v1/wallet/ledger?user_id={john.id}", headers=jane.headers
        )
        assert theirs.status_code == 403
        seen = await s.client.get(f"/api/v1/wallet/ledger?user_id={john.id}", headers=boss.headers)
        assert seen.json()["total"] == 1


async def test_deleted_users_wallet_is_closed(data_dir: Path) -> None:
    async with stack(embedded_settings(data_dir), SERVICES) as s:
        boss = await admin(s)
        jane = await register_user(s, "jane")
        await top_up(s, jane, "20")
        assert (
            await s.client.delete("/api/v1/accounts/me", headers=jane.headers)
        ).status_code == 204

        async def closed() -> bool:
            answer = await s.client.post(
                "/api/v1/wallet/topup",
                headers=boss.headers,
                json={"amount": 1, "user_id": jane.id},
            )
            return answer.status_code == 404

        await eventually(closed, what="wallet closed")
        # Her token ended with the account (issue 11 item 3): it is refused outright.
        again = await s.client.post(
            "/api/v1/wallet/topup", headers=jane.headers, json={"amount": 1}
        )
        assert again.status_code == 401
