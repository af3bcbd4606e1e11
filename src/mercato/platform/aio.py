"""Small asyncio helpers shared by the background loops."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


# `timeout` here is a wake-up horizon, not a deadline that cancels work, so ASYNC109's advice
# (wrap the caller in asyncio.timeout) does not apply.
async def wait_any(*events: asyncio.Event, timeout: float) -> None:  # noqa: ASYNC109
    """Return when any of `events` is set or `timeout` seconds pass."""
    waiters = {asyncio.ensure_future(event.wait()) for event in events}
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class SingleFlight(Generic[K, V]):
    """Concurrent calls for one key share one run of the work (a cache's load): N callers
    missing the same entry at once cost one load, not N.

    The check for a flight in progress and the start of a new one happen with no await between
    them, so on the event loop that check is the freshness re-check a lock would need: a caller
    either joins the load in progress or starts one, and never loads again what a load that
    finished meanwhile just stored (its caller looks at the cache first). A caller that is
    cancelled leaves the load running for the others (`shield`).
    """

    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The result of the load in flight for `key`, or of `load()` started now."""
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(load())
            self._flights[key] = flight
            flight.add_done_callback(functools.partial(self._landed, key))
        return await asyncio.shield(flight)

    def forget(self, key: K) -> None:
        """Callers from now on start a load of their own (what is in flight may be stale)."""
        self._flights.pop(key, None)

    def _landed(self, key: K, flight: asyncio.Future[V]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved: an error every caller has seen is not logged again
