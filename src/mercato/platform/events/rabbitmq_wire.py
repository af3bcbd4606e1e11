"""What goes over the wire to RabbitMQ, shared by the transport and its consumer runner:
persistent messages, confirmed publishes, the attempt header, and what a runner needs of its
transport."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue, AbstractRobustChannel
from aio_pika.exceptions import ChannelInvalidStateError

ATTEMPT_HEADER = "x-mercato-attempt"
# A confirm that takes this long means the broker is gone; the relay will try again.
PUBLISH_TIMEOUT = 30.0
# Pause before handing back a message whose processing crashed (not a handler failure: those
# are retried through the retry queues), so a broken database does not spin the CPU.
CRASH_BACKOFF = 1.0
# Errors meaning "the broker is not reachable right now" rather than "this cannot work".
TRANSIENT_ERRORS = (ConnectionError, OSError, ChannelInvalidStateError)


class QueueBroker(Protocol):
    """What a consumer runner needs of the RabbitMQ transport it was made from."""

    @property
    def prefetch(self) -> int:
        """Unacked deliveries a consumer may hold."""
        ...

    def queue_name(self, consumer: str) -> str:
        """The main queue of one consuming service."""
        ...

    def retry_queue_name(self, consumer: str, delay: float) -> str:
        """The TTL queue holding `consumer`'s events that wait `delay` seconds to be retried."""
        ...

    async def open_channel(self) -> AbstractRobustChannel:
        """A new confirming channel (restored after reconnects)."""
        ...

    async def declare_consumer(
        self,
        consumer: str,
        event_types: Iterable[str],
        retry_delays: Iterable[float],
        *,
        channel: AbstractChannel | None = None,
    ) -> AbstractQueue:
        """Declare one consumer's queues; answer the main queue."""
        ...

    async def declare_retry_queue(
        self, channel: AbstractChannel, consumer: str, delay: float
    ) -> str:
        """Declare one retry queue; answer its name."""
        ...


class PublishFailedError(ConnectionError):
    """Some messages of a publish were not confirmed (nacked, unroutable or connection lost)."""


def message(
    body: str | bytes, event_id: str, headers: dict[str, Any] | None = None
) -> aio_pika.Message:
    """A persistent JSON message carrying the event id as its message id."""
    return aio_pika.Message(
        body.encode() if isinstance(body, str) else body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=event_id,
        headers=headers,
    )


async def publish_all(
    channel: AbstractChannel,
    exchange: AbstractExchange,
    messages: Sequence[tuple[aio_pika.Message, str]],
    *,
    mandatory: bool = True,
) -> None:
    """Publish concurrently so the confirms overlap; raise once all settled if any failed."""
    if not messages:
        return
    # A robust channel being restored reports itself closed: fail fast, the caller retries.
    if channel.is_closed:
        raise PublishFailedError("RabbitMQ channel is closed (reconnecting?)")
    results = await asyncio.gather(
        *(
            exchange.publish(msg, routing_key=key, mandatory=mandatory, timeout=PUBLISH_TIMEOUT)
            for msg, key in messages
        ),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        # The others may have been accepted; publishing them again is harmless (inboxes dedupe).
        raise PublishFailedError(
            f"{len(failures)} of {len(messages)} messages not confirmed: {failures[0]!r}"
        ) from failures[0]


async def send_to_queue(
    channel: AbstractChannel, queue: str, body: str | bytes, event_id: str, attempt: int
) -> None:
    """Publish (confirmed) straight to one queue: the default exchange routes by queue name."""
    confirmed = message(body, event_id, {ATTEMPT_HEADER: attempt})
    await publish_all(channel, channel.default_exchange, [(confirmed, queue)])
