"""The distributed transport: events over RabbitMQ (DESIGN §3).

One durable topic exchange routes each event by its type to one durable quorum queue per
consuming service. The relay's publish returns only after the broker confirmed every message.
A consumer acks after its inbox row committed, so a redelivery (after a crash, a lost ack or a
broker restart) is harmless. A failing event is acked and a copy is parked in a TTL queue that
dead-letters it back to the main queue: retries never block the events behind it, and nothing
is requeued in a tight loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.exceptions import ChannelInvalidStateError

from mercato.platform.events.consumer import EventConsumer
from mercato.platform.events.envelope import Envelope

if TYPE_CHECKING:
    from mercato.platform.events.rabbitmq_consumer import RabbitMQConsumerRunner

log = structlog.get_logger("mercato.events")

ATTEMPT_HEADER = "x-mercato-attempt"
# A confirm that takes this long means the broker is gone; the relay will try again.
PUBLISH_TIMEOUT = 30.0
# Pause before handing back a message whose processing crashed (not a handler failure: those
# are retried through the retry queues), so a broken database does not spin the CPU.
CRASH_BACKOFF = 1.0
# Errors meaning "the broker is not reachable right now" rather than "this cannot work".
TRANSIENT_ERRORS = (ConnectionError, OSError, ChannelInvalidStateError)


class RabbitMQTransport:
    """Publishes events to a topic exchange with publisher confirms; see `runner` to consume."""

    def __init__(
        self,
        url: str,
        *,
        exchange: str = "mercato.events",
        queue_prefix: str = "mercato",
        delivery_limit: int = 20,
        prefetch: int = 256,
    ) -> None:
        self.url = url
        self.exchange_name = exchange
        self.dlx_name = f"{exchange}.dlx"
        self.queue_prefix = queue_prefix
        self.delivery_limit = delivery_limit
        self.prefetch = prefetch
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None

    def _queue_name(self, consumer: str) -> str:
        """The main queue of one consuming service."""
        return f"{self.queue_prefix}.{consumer}"

    async def start(self) -> None:
        """Connect (reconnecting by itself from then on) and declare the exchanges."""
        self._connection = await aio_pika.connect_robust(self.url)
        self._channel = await self._open_channel()
        self._exchange = await self._channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await self._channel.declare_exchange(
            self.dlx_name, aio_pika.ExchangeType.DIRECT, durable=True
        )

    async def _open_channel(self) -> AbstractRobustChannel:
        """A new confirming channel on the transport's connection (restored after reconnects)."""
        if self._connection is None:
            raise RuntimeError("RabbitMQTransport.start() was not called")
        # on_return_raises: an unroutable mandatory message fails its publish instead of being
        # "confirmed" by the broker after it was dropped.
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        assert isinstance(channel, AbstractRobustChannel)
        return channel

    def retry_queue_name(self, consumer: str, delay: float) -> str:
        """Retry queues are named by their delay: a changed schedule never meets old arguments."""
        return f"{self._queue_name(consumer)}.retry.{round(delay * 1000)}ms"

    async def declare_consumer(
        self,
        consumer: str,
        event_types: Iterable[str],
        retry_delays: Iterable[float],
        *,
        channel: AbstractChannel | None = None,
    ) -> AbstractQueue:
        """Declare (idempotently) one consumer's main, parking and retry queues and bindings.

        The platform declares every consumer of the installation at start, before any relay
        publishes, so an event is never published while its consumer's queue is missing.
        """
        channel = channel or self._channel
        if channel is None:
            raise RuntimeError("RabbitMQTransport.start() was not called")
        name = self._queue_name(consumer)
        exchange = await channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        dlx = await channel.declare_exchange(
            self.dlx_name, aio_pika.ExchangeType.DIRECT, durable=True
        )
        queue = await channel.declare_queue(
            name,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                # A message that keeps coming back unacked (a consumer crash loop) is parked.
                "x-delivery-limit": self.delivery_limit,
                "x-dead-letter-exchange": self.dlx_name,
                "x-dead-letter-routing-key": name,
            },
        )
        for event_type in sorted(event_types):
            await queue.bind(exchange, routing_key=event_type)
        parking = await channel.declare_queue(
            f"{name}.dead", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await parking.bind(dlx, routing_key=name)
        for delay in sorted(set(retry_delays)):
            await self.declare_retry_queue(channel, consumer, delay)
        return queue

    async def declare_retry_queue(
        self, channel: AbstractChannel, consumer: str, delay: float
    ) -> str:
        """Declare the TTL queue that hands a failed event back to `consumer` after `delay` s."""
        name = self.retry_queue_name(consumer, delay)
        await channel.declare_queue(
            name,
            durable=True,
            arguments={
                # Quorum with at-least-once dead lettering: the hop back to the main queue is
                # confirmed inside the broker, so a broker crash mid-retry cannot lose the event
                # (classic queues dead-letter at most once).
                "x-queue-type": "quorum",
                "x-message-ttl": round(delay * 1000),
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": self._queue_name(consumer),
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
        return name

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Publish persistently; return once every message is confirmed, raise otherwise."""
        if self._channel is None or self._exchange is None:
            raise RuntimeError("RabbitMQTransport.start() was not called")
        # Returns are matched to their publish by message id: keep one id in flight once only.
        unique = {env.id: env for env in envelopes}.values()
        # Not mandatory: an event type nobody consumes (user.logged_in, say) is dropped by the
        # exchange, as pub/sub means; consumers' queues are declared before relays start.
        await _publish_all(
            self._channel,
            self._exchange,
            [(_message(env.to_json(), env.id), env.type) for env in unique],
            mandatory=False,
        )

    async def redeliver(self, consumer: str, envelope: Envelope) -> None:
        """Publish one event straight to one consumer's main queue, as a first attempt."""
        if self._channel is None:
            raise RuntimeError("RabbitMQTransport.start() was not called")
        await _send_to_queue(
            self._channel, self._queue_name(consumer), envelope.to_json(), envelope.id, 0
        )
        log.info("event redelivered", consumer=consumer, **envelope.for_log())

    def runner(self, consumer: EventConsumer) -> RabbitMQConsumerRunner:
        """The consuming side for one service."""
        from mercato.platform.events.rabbitmq_consumer import RabbitMQConsumerRunner

        return RabbitMQConsumerRunner(self, consumer)

    async def close(self) -> None:
        """Disconnect (and stop reconnecting)."""
        connection, self._connection = self._connection, None
        self._channel = None
        self._exchange = None
        if connection is not None:
            await connection.close()


class PublishFailedError(ConnectionError):
    """Some messages of a publish were not confirmed (nacked, unroutable or connection lost)."""


def _message(
    body: str | bytes, event_id: str, headers: dict[str, Any] | None = None
) -> aio_pika.Message:
    return aio_pika.Message(
        body.encode() if isinstance(body, str) else body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=event_id,
        headers=headers,
    )


async def _publish_all(
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
            exchange.publish(message, routing_key=key, mandatory=mandatory, timeout=PUBLISH_TIMEOUT)
            for message, key in messages
        ),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        # The others may have been accepted; publishing them again is harmless (inboxes dedupe).
        raise PublishFailedError(
            f"{len(failures)} of {len(messages)} messages not confirmed: {failures[0]!r}"
        ) from failures[0]


async def _send_to_queue(
    channel: AbstractChannel, queue: str, body: str | bytes, event_id: str, attempt: int
) -> None:
    """Publish (confirmed) straight to one queue: the default exchange routes by queue name."""
    message = _message(body, event_id, {ATTEMPT_HEADER: attempt})
    await _publish_all(channel, channel.default_exchange, [(message, queue)])
