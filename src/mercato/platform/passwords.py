"""Password hashing with argon2id (argon2-cffi), always off the event loop.

A hash takes tens of milliseconds of CPU on purpose; running it on the loop would stall every
other request of the process for that long.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# argon2-cffi's defaults follow RFC 9106's second recommendation (argon2id, 64 MiB, t=3).
_hasher = PasswordHasher()
# Hashes run on their own small pool, one fewer than the CPUs: a burst of logins queues here
# instead of taking every core from the event loop (argon2 is CPU-bound and releases the GIL),
# and never fills the default executor other blocking calls rely on.
_POOL = ThreadPoolExecutor(
    max_workers=max(1, (os.cpu_count() or 2) - 1), thread_name_prefix="argon2"
)
# Verified when the user is unknown, so "no such user" costs as long as "wrong password".
_DUMMY_HASH = _hasher.hash("mercato-timing-equalizer")


async def hash_password(password: str) -> str:
    """The argon2id hash of `password` (PHC string format)."""
    return await asyncio.get_running_loop().run_in_executor(_POOL, _hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; with no hash, spends the same time and answers False."""

    def check() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await asyncio.get_running_loop().run_in_executor(_POOL, check)


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with weaker parameters than today's."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True
