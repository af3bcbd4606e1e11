"""How many registrations one client address may attempt per minute.

Each registration costs an argon2id hash (tens of milliseconds of CPU on purpose), so anonymous
registrations are the cheapest way to load the hashing pool; a per-address limit keeps one
client from doing it, and the pool's priority for logins covers the many-address case.

The count is a rolling minute. With Redis (the distributed mode) every replica shares it
through the platform's atomic sliding-window budget; the embedded process keeps it in memory.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from typing import Any, Protocol

from mercato.platform.errors import TooManyRequests
from mercato.platform.service import ServiceContext
from mercato.platform.token_stores import RedisTokenStore

WINDOW_SECONDS = 60.0


class WindowCounter(Protocol):
    """A sliding-window counter (`mercato.platform.token_stores.TokenStore` is one)."""

    async def try_acquire_budget(
        self, name: str, *, now: float, limit: int, window: float
    ) -> tuple[bool, float]:
        """Atomically record one request when fewer than `limit` fall in the window; else
        answer (False, seconds until the oldest leaves it)."""
        ...


class MemoryWindows:
    """`WindowCounter` in one process's memory; keys whose window emptied are dropped, so
    many one-off addresses do not pile up."""

    def __init__(self) -> None:
        self._stamps: dict[str, deque[float]] = {}
        self._next_sweep = 0.0

    async def try_acquire_budget(
        self, name: str, *, now: float, limit: int, window: float
    ) -> tuple[bool, float]:
        """See `WindowCounter`. No await inside, hence atomic on the event loop."""
        if now >= self._next_sweep:
            self._sweep(now - window)
            self._next_sweep = now + window
        stamps = self._stamps.setdefault(name, deque())
        while stamps and stamps[0] <= now - window:
            stamps.popleft()
        if len(stamps) < limit:
            stamps.append(now)
            return True, 0.0
        return False, max(0.0, stamps[0] + window - now)

    def _sweep(self, before: float) -> None:
        stale = [
            name for name, stamps in self._stamps.items() if not stamps or stamps[-1] <= before
        ]
        for name in stale:
            del self._stamps[name]


class RegistrationLimit:
    """At most `per_minute` registration attempts per client address in any rolling minute."""

    def __init__(self, counter: WindowCounter, per_minute: int) -> None:
        self.counter = counter
        self.per_minute = per_minute

    async def admit(self, address: str, now: float) -> None:
        """Count one attempt from `address`; `TooManyRequests` (429, `Retry-After`) past the
        limit, before any work is done for it."""
        # A digest, so the shared store never holds client addresses in clear.
        name = "register:" + hashlib.sha256(address.encode()).hexdigest()
        ok, wait = await self.counter.try_acquire_budget(
            name, now=now, limit=self.per_minute, window=WINDOW_SECONDS
        )
        if not ok:
            raise TooManyRequests(
                "too many registrations from this address; try again later", math.ceil(wait)
            )


def build_registration_limit(ctx: ServiceContext[Any], per_minute: int) -> RegistrationLimit:
    """The limit for this process: shared through Redis when the platform has it."""
    redis = ctx.shared.redis
    counter: WindowCounter = (
        RedisTokenStore(redis, f"{ctx.settings.redis_prefix}:accounts")
        if redis is not None
        else MemoryWindows()
    )
    return RegistrationLimit(counter, per_minute)
