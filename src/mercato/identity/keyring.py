"""Identity's signing keys in memory: loaded from its database, published as JWKS, rotated.

The key table in identity's database is the one truth every replica shares. A replica reads it
on start and signs with what it read for at most `refresh_every` seconds, so a rotation made by
another replica (or by `mercato identity rotate-key`) signs everywhere within that bound. The
JWKS endpoint reads the table afresh for every request (concurrent requests share one read), and
a token naming a kid this replica does not know triggers a fresh read too (at most one such
read a second, so made-up kids cannot flood the database). Together: a key any replica signs
with was committed before its first token, so every replica publishes it by the time a verifier
asks, and no verifier refuses a token signed by a published key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.identity.sessions_store import KeyRepository, StoredKey
from mercato.identity.store import BootstrapRepository
from mercato.identity.tables import signing_keys
from mercato.platform.auth import SigningKey, generate_signing_key, jwks
from mercato.platform.clock import utcnow
from mercato.platform.secrets import SecretBox, SecretsKeyError
from mercato.platform.uow import UnitOfWorkFactory

ReadFactory = Callable[[], AbstractAsyncContextManager[AsyncConnection]]

log = structlog.get_logger("mercato.identity")

# A kid miss re-reads the table at most this often: unknown kids must not become a DB flood.
MISS_RELOAD_INTERVAL = 1.0


class KeysUnavailable(RuntimeError):
    """No usable signing key (not provisioned yet, or encrypted without the passphrase)."""


@dataclass(frozen=True)
class _Loaded:
    key: SigningKey
    retired_at: datetime | None


class Keyring:
    """The current signing key and the public keys still to publish.

    Private keys are stored sealed with the installation's key-encryption key (`secrets`),
    around a PKCS#8 PEM that the passphrase, when set, encrypts too. A PEM stored in clear by an
    older version is still read, and sealed by `reseal` (`mercato secrets rotate`).
    """

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        read: ReadFactory,
        *,
        alg: str,
        passphrase: str | None,
        secrets: SecretBox,
        retention: timedelta,
        refresh_every: float,
    ) -> None:
        self._uow = uow_factory
        self._read = read
        self.alg = alg
        self._passphrase = passphrase.encode() if passphrase else None
        self._secrets = secrets
        # How long a retired key stays published: tokens it signed may live that long.
        self.retention = retention
        self._refresh_every = refresh_every
        self._loaded: list[_Loaded] = []
        self._decrypted: dict[str, SigningKey] = {}
        self._document: dict[str, Any] = {"keys": []}
        # When the newest completed read of the table started (monotonic seconds).
        self._loaded_at = -1e9
        self._last_miss_read = -1e9
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Read the key table now (or share a read that started after this call)."""
        await self._load_started_after(time.monotonic())

    async def _load_started_after(self, moment: float) -> None:
        # Single flight with a freshness re-check: callers queue on the lock, and whoever gets
        # it finds out whether a read that started after `moment` already finished meanwhile.
        async with self._lock:
            if self._loaded_at >= moment:
                return
            started = time.monotonic()
            async with self._read() as conn:
                stored = await KeyRepository(conn).all()
            loaded = [
                _Loaded(self._decrypt(row), row.retired_at)
                for row in stored
                if row.private_pem is not None
            ]
            self._loaded = loaded
            self._document = jwks(self._published(utcnow()))
            self._loaded_at = started

    def _decrypt(self, row: StoredKey) -> SigningKey:
        known = self._decrypted.get(row.kid)
        if known is not None:
            return known
        assert row.private_pem is not None
        if row.encrypted and self._passphrase is None:
            raise KeysUnavailable(
                "identity's signing keys are encrypted: set MERCATO_IDENTITY_KEY_PASSPHRASE"
            )
        try:
            pem = self._secrets.open(row.private_pem)
        except SecretsKeyError as exc:
            raise KeysUnavailable(f"signing key {row.kid}: {exc}") from None
        private = serialization.load_pem_private_key(
            pem.encode("ascii"), password=self._passphrase if row.encrypted else None
        )
        if not isinstance(private, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise KeysUnavailable(f"signing key {row.kid} has an unsupported type")
        key = SigningKey(kid=row.kid, private_key=private, alg=row.alg)
        self._decrypted[row.kid] = key
        return key

    def _published(self, now: datetime) -> list[SigningKey]:
        return [
            item.key
            for item in self._loaded
            if item.retired_at is None or item.retired_at > now - self.retention
        ]

    def jwks(self) -> dict[str, Any]:
        """The JWKS document: the current key and the previous ones still in use."""
        return self._document

    async def jwks_on_miss(self) -> dict[str, Any]:
        """The JWKS for a token naming an unknown kid: re-read from the database first, unless
        another miss did that less than `MISS_RELOAD_INTERVAL` ago (a flood of made-up kids)."""
        arrived = time.monotonic()
        if arrived - self._last_miss_read >= MISS_RELOAD_INTERVAL:
            self._last_miss_read = arrived
            await self._load_started_after(arrived)
        return self._document

    async def fresh_jwks(self) -> dict[str, Any]:
        """The JWKS as the database holds it now (the JWKS endpoint): a verifier asking after
        a rotation committed always finds the new key, whichever replica answers."""
        await self._load_started_after(time.monotonic())
        return self._document

    async def signing_key(self) -> SigningKey:
        """The key that signs new tokens (the newest unretired one)."""
        now = time.monotonic()
        if now - self._loaded_at >= self._refresh_every:
            await self._load_started_after(now - self._refresh_every)
        for item in self._loaded:
            if item.retired_at is None:
                return item.key
        raise KeysUnavailable("no signing key provisioned")

    def seal(self, key: SigningKey) -> StoredKey:
        """The row storing `key`: its PEM (encrypted when a passphrase is set), sealed."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(self._passphrase)
            if self._passphrase
            else serialization.NoEncryption()
        )
        pem = key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        ).decode("ascii")
        return StoredKey(
            kid=key.kid,
            alg=key.alg,
            private_pem=self._secrets.seal(pem),
            encrypted=self._passphrase is not None,
            created_at=utcnow(),
            retired_at=None,
        )

    async def rotate(self) -> str:
        """Make a new current key; the old one stays published for `retention`. Answers its kid."""
        key = generate_signing_key(self.alg)
        now = utcnow()
        async with self._uow() as uow:
            repo = uow.repository(KeyRepository)
            await repo.add(self.seal(key))
            await repo.retire_all_but(key.kid, now)
            await repo.wipe_retired_before(now - self.retention)
        await self.load()
        log.info("signing key rotated", kid=key.kid, alg=key.alg)
        return key.kid

    async def provision(self) -> bool:
        """Create the first signing key unless one was provisioned; answers whether it did."""
        async with self._read() as conn:
            if await BootstrapRepository(conn).value("signing_key") is not None:
                return False
        key = generate_signing_key(self.alg)
        async with self._uow() as uow:
            # The mark and the key commit together; a replica starting at the same moment
            # finds the mark taken and keeps the other's key.
            if not await uow.repository(BootstrapRepository).claim("signing_key", key.kid):
                return False
            await uow.repository(KeyRepository).add(self.seal(key))
        log.info("signing key provisioned", kid=key.kid, alg=key.alg)
        return True

    async def reseal(self) -> int:
        """Re-encrypt every stored private key with the first key-encryption key (keys stored in
        clear get sealed); answers how many rows were rewritten."""
        count = 0
        async with self._uow() as uow:
            for row in await uow.repository(KeyRepository).all():
                if row.private_pem is None:
                    continue
                await uow.connection.execute(
                    update(signing_keys)
                    .where(signing_keys.c.kid == row.kid)
                    .values(private_pem=self._secrets.reseal(row.private_pem))
                )
                count += 1
        return count
