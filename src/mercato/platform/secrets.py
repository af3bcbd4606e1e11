"""Secrets at rest: values sealed with a key-encryption key (Fernet, rotation with MultiFernet).

What is sealed: identity's private signing keys, integration's kept client secret and cached
access tokens. The key-encryption key (KEK) is `MERCATO_SECRETS_KEY` (comma-separated Fernet
keys: the first encrypts, every one decrypts, so `"new,old"` plus `mercato secrets rotate` is a
rotation); without it, an embedded installation generates one into `<data dir>/secrets.key`
(0600) on first use. Distributed processes refuse to start without it: replicas on different
machines must share one key, and a key file written by one of them would be known to it alone.

A sealed value is `fernet:` followed by the Fernet token. The prefix tells sealed from clear,
so rows written before sealing existed (PEM text, a JWT, a URL-safe secret, none of which may
contain `:` at that place) stay readable and are sealed by the next rotation.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from mercato.platform.settings import Settings

SEALED_PREFIX = "fernet:"
KEY_FILE = "secrets.key"
KEY_ENV = "MERCATO_SECRETS_KEY"


class SecretsKeyError(RuntimeError):
    """The key-encryption key is missing, malformed, or does not open a stored value.

    The message never contains a key or a secret.
    """


class SecretBox:
    """Seals and opens secrets with the installation's key-encryption key."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise SecretsKeyError(f"{KEY_ENV} holds no key")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except (ValueError, TypeError):
            # Fernet's own message is fine, but say which setting is wrong and how to fix it.
            raise SecretsKeyError(
                f"{KEY_ENV} must be comma-separated Fernet keys (32 url-safe base64 bytes each; "
                "make one with `mercato secrets generate-key`)"
            ) from None

    @staticmethod
    def is_sealed(stored: str) -> bool:
        """Whether `stored` is a sealed value (rather than one written in clear before)."""
        return stored.startswith(SEALED_PREFIX)

    def seal(self, plain: str) -> str:
        """`plain` encrypted with the first key, ready to store."""
        return SEALED_PREFIX + self._fernet.encrypt(plain.encode("utf-8")).decode("ascii")

    def open(self, stored: str) -> str:
        """The clear value of `stored` (a value stored in clear is answered as it is)."""
        if not self.is_sealed(stored):
            return stored
        try:
            return self._fernet.decrypt(stored[len(SEALED_PREFIX) :].encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise SecretsKeyError(
                f"a stored secret does not open with {KEY_ENV} (or {KEY_FILE}): was the key "
                "changed without keeping the old one after it?"
            ) from None

    def reseal(self, stored: str) -> str:
        """`stored` sealed with the first key (clear values get sealed, sealed re-encrypted)."""
        if not self.is_sealed(stored):
            return self.seal(stored)
        try:
            token = self._fernet.rotate(stored[len(SEALED_PREFIX) :].encode("ascii"))
        except InvalidToken:
            raise SecretsKeyError(
                f"a stored secret does not open with any key of {KEY_ENV}"
            ) from None
        return SEALED_PREFIX + token.decode("ascii")


def generate_key() -> str:
    """A new Fernet key (for `MERCATO_SECRETS_KEY`)."""
    return Fernet.generate_key().decode("ascii")


def parse_keys(value: str) -> list[bytes]:
    """The keys of a `MERCATO_SECRETS_KEY` value, first (encrypting) one first."""
    return [part.strip().encode("ascii") for part in value.split(",") if part.strip()]


def key_file(settings: Settings) -> Path:
    """Where an embedded installation keeps its generated key."""
    return settings.data_dir / KEY_FILE


def secret_box(settings: Settings) -> SecretBox:
    """The installation's box: `MERCATO_SECRETS_KEY`, else the data dir's key file (generated
    on first use), except in distributed mode, where the setting is required."""
    if settings.secrets_key is not None:
        return _box_of(settings.secrets_key.get_secret_value())
    if settings.distributed:
        raise SecretsKeyError(missing_key_message())
    return _box_of_file(key_file(settings).resolve())


def missing_key_message() -> str:
    """The one line a distributed process without a key-encryption key stops with."""
    return (
        f"distributed mode needs {KEY_ENV} (a Fernet key shared by every process; make one "
        "with `mercato secrets generate-key`): it encrypts signing keys and secrets at rest"
    )


@lru_cache(maxsize=16)
def _box_of(value: str) -> SecretBox:
    return SecretBox(parse_keys(value))


@lru_cache(maxsize=16)
def _box_of_file(path: Path) -> SecretBox:
    return SecretBox(parse_keys(_read_or_create(path)))


def _read_or_create(path: Path) -> str:
    """The key in `path`, written first (0600, atomically) when there is none yet."""
    try:
        return path.read_text(encoding="ascii")
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Written to a private temporary file, then linked into place: link fails when another
    # process (a `mercato jobs run` next to `mercato run`) won the race, and then its key is
    # read; a reader never sees a half-written file.
    fd, temp = tempfile.mkstemp(prefix=".secrets-", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(generate_key() + "\n")
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
    finally:
        os.unlink(temp)
    path.chmod(0o600)
    return path.read_text(encoding="ascii")
