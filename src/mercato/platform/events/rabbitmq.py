"""The distributed transport: events over RabbitMQ (DESIGN §3).

One durable topic exchange routes each event by its type to one durable quorum queue per
consuming service. The relay's publish returns only after the broker confirmed every message.
A consumer acks after its inbox row committed, so a redelivery (after a crash, a lost ack or a
broker restart) is harmless. A failing event is acked and a copy is parked in a TTL queue that
dead-letters it back to the main queue: retries never block the events behind it, and nothing
is requeued in a tight loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from mercato.platform.events.consumer import EventConsumer
from mercato.platform.events.envelope import Envelope
from mercato.platform.events.rabbitmq_consumer import RabbitMQConsumerRunner
from mercato.platform.events.rabbitmq_wire import PublishFailedError as PublishFailedError
from mercato.platform.events.rabbitmq_wire import message, publish_all, send_to_queue
from mercato.platform.events.transport import ConsumerSpec

log = structlog.get_logger("mercato.events")


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

    def queue_name(self, consumer: str) -> str:
        """The main queue of one consuming service."""
        return f"{self.queue_prefix}.{consumer}"

    @property
    def crosses_processes(self) -> bool:
        """Yes: every process publishing to the broker reaches every consumer's queue."""
        return True

    async def start(self) -> None:
        """Connect (reconnecting by itself from then on) and declare the exchanges."""
        self._connection = await aio_pika.connect_robust(self.url)
        self._channel = await self.open_channel()
        self._exchange = await self._channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await self._channel.declare_exchange(
            self.dlx_name, aio_pika.ExchangeType.DIRECT, durable=True
        )

    async def open_channel(self) -> AbstractRobustChannel:
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
        return f"{self.queue_name(consumer)}.retry.{round(delay * 1000)}ms"

    async def declare(self, consumers: Sequence[ConsumerSpec]) -> None:
        """Declare every consumer's queues and bindings (see `declare_consumer`)."""
        for spec in consumers:
            await self.declare_consumer(spec.name, spec.event_types, spec.retry_delays)

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
        name = self.queue_name(consumer)
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
                "x-dead-letter-routing-key": self.queue_name(consumer),
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
        await publish_all(
            self._channel,
            self._exchange,
            [(message(env.to_json(), env.id), env.type) for env in unique],
            mandatory=False,
        )

    async def redeliver(self, consumer: str, envelope: Envelope) -> None:
        """Publish one event straight to one consumer's main queue, as a first attempt."""
        if self._channel is None:
            raise RuntimeError("RabbitMQTransport.start() was not called")
        await send_to_queue(
            self._channel, self.queue_name(consumer), envelope.to_json(), envelope.id, 0
        )
        log.info("event redelivered", consumer=consumer, **envelope.for_log())

    def runner(self, consumer: EventConsumer) -> RabbitMQConsumerRunner:
        """The consuming side for one service."""
        return RabbitMQConsumerRunner(self, consumer)

    async def is_ready(self) -> bool:
        """Whether the connection is open (not lost and being restored)."""
        return self._connection is not None and not self._connection.is_closed

    async def close(self) -> None:
        """Disconnect (and stop reconnecting)."""
        connection, self._connection = self._connection, None
        self._channel = None
        self._exchange = None
        if connection is not None:
            await connection.close()
