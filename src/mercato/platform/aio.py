"""Small asyncio helpers shared by the background loops."""

from __future__ import annotations

import asyncio


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
