"""`Idempotency-Key` for unsafe requests, shared by every service that honours it: the keys' table
and their repository (the header itself is read by `mercato.platform.http_inputs`).

The key is claimed in the same transaction as the request's effect and its answer is stored
there too, so either the effect and its stored answer commit together or neither does:

- same caller, same key, same request → the stored answer, no second effect;
- same caller, same key, another request → 409;
- two identical requests at once → PostgreSQL makes the second claim wait on the first's
  unique index entry and then see its answer; SQLite serializes writers anyway.

Failed requests (an exception rolls the transaction back) leave no key behind, so a client may
retry them with the same key.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Integer, String, Table, Text, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.platform.clock import utcnow
from mercato.platform.db import UTCDateTime, insert_ignore, naming_metadata
from mercato.platform.errors import Conflict, Invalid

metadata = naming_metadata()

# Created in every service's database by the platform's migration history (events_0002).
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(64), primary_key=True),
    Column("principal", String(128), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("response", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

MAX_KEY_LENGTH = 255
# Visible ASCII only: the key is an opaque token (UUIDs in practice), never free text.
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


@dataclass(frozen=True)
class StoredAnswer:
    """What the first request with a key answered."""

    status_code: int
    body: dict[str, Any]


def fingerprint(request: Any) -> str:
    """A stable digest of a request's meaning (canonical JSON of its parsed form)."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: str) -> str:
    """`key` if it is 1 to 255 visible ASCII characters; `Invalid` otherwise."""
    if not _KEY.match(key):
        raise Invalid(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
            errors=[
                {
                    "loc": ["header", "Idempotency-Key"],
                    "msg": "1 to 255 visible ASCII characters",
                    "type": "value_error",
                }
            ],
        )
    return key


class IdempotencyKeys:
    """Keys of one service's database, inside one transaction."""

    def __init__(self, conn: AsyncConnection, scope: str) -> None:
        self.conn = conn
        self.scope = scope

    async def claim(self, principal: str, key: str, digest: str) -> StoredAnswer | None:
        """None when the key is new (go ahead, then `store`); the stored answer on a repeat.

        Raises `Conflict` when the key was used for a different request.
        """
        fresh = await insert_ignore(
            self.conn,
            idempotency_keys,
            {
                "scope": self.scope,
                "principal": principal,
                "key": key,
                "fingerprint": digest,
                "status_code": None,
                "response": None,
                "created_at": utcnow(),
            },
            ["scope", "principal", "key"],
        )
        if fresh:
            return None
        row = (
            await self.conn.execute(
                select(
                    idempotency_keys.c.fingerprint,
                    idempotency_keys.c.status_code,
                    idempotency_keys.c.response,
                ).where(
                    idempotency_keys.c.scope == self.scope,
                    idempotency_keys.c.principal == principal,
                    idempotency_keys.c.key == key,
                )
            )
        ).one()
        if row.fingerprint != digest:
            raise Conflict(
                "this Idempotency-Key was already used for a different request",
                errors=[
                    {
                        "loc": ["header", "Idempotency-Key"],
                        "msg": "reused with another request body",
                        "type": "conflict",
                    }
                ],
            )
        if row.response is None or row.status_code is None:
            # Claim and answer commit together, so only a bug can leave a claim unanswered.
            raise Conflict("a request with this Idempotency-Key has not finished")
        return StoredAnswer(int(row.status_code), json.loads(row.response))

    async def store(self, principal: str, key: str, status_code: int, body: dict[str, Any]) -> None:
        """Record the answer of the request that claimed `key` (same transaction)."""
        await self.conn.execute(
            update(idempotency_keys)
            .where(
                idempotency_keys.c.scope == self.scope,
                idempotency_keys.c.principal == principal,
                idempotency_keys.c.key == key,
            )
            .values(status_code=status_code, response=json.dumps(body, default=str))
        )


async def prune_idempotency_keys(conn: AsyncConnection, older_than: datetime) -> int:
    """Forget keys claimed before `older_than` (clients retry within hours, not weeks)."""
    result = await conn.execute(
        delete(idempotency_keys).where(idempotency_keys.c.created_at < older_than)
    )
    return max(result.rowcount, 0)
