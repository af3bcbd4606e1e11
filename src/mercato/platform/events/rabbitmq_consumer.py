"""Consuming one service's RabbitMQ queue: each event applied once, failures retried through
TTL queues, acks only after the effect committed (DESIGN §3)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable

import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel
from aio_pika.exceptions import ChannelInvalidStateError
from pydantic import ValidationError

from mercato.platform.aio import wait_any
from mercato.platform.events.consumer import Delivery, EventConsumer, Outcome
from mercato.platform.events.envelope import Envelope
from mercato.platform.events.rabbitmq_wire import (
    ATTEMPT_HEADER,
    CRASH_BACKOFF,
    TRANSIENT_ERRORS,
    QueueBroker,
    send_to_queue,
)

log = structlog.get_logger("mercato.events")

# At most this many buffered deliveries are applied together.
BATCH_SIZE = 100


class RabbitMQConsumerRunner:
    """Consumes one service's queue: each event applied once, failures retried via TTL queues.

    Stop it (set the event given to `run`) before closing the transport it was made from.
    """

    def __init__(self, transport: QueueBroker, consumer: EventConsumer) -> None:
        self.transport = transport
        self.consumer = consumer
        self.queue_name = transport.queue_name(consumer.name)
        self.parking_queue_name = f"{self.queue_name}.dead"
        self._retry_queues: set[str] = set()

    def _retry_queue_name(self, delay: float) -> str:
        return self.transport.retry_queue_name(self.consumer.name, delay)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then cancel the consumer; unacked messages go back."""
        while not stop.is_set():
            try:
                channel = await self.transport.open_channel()
                try:
                    await self._consume(channel, stop)
                finally:
                    with contextlib.suppress(Exception):
                        await channel.close()
                return
            except TRANSIENT_ERRORS as exc:
                # The broker was unreachable while setting up; once consuming, outages are
                # healed by the robust connection, which restores channel, queues and consumer.
                # Anything else (say, a queue declared with other arguments) is a bug: raise.
                log.warning(
                    "consumer cannot start; retrying",
                    consumer=self.consumer.name,
                    error=f"{type(exc).__name__}: {exc}",
                )
                await wait_any(stop, timeout=CRASH_BACKOFF)

    async def _consume(self, channel: AbstractRobustChannel, stop: asyncio.Event) -> None:
        await channel.set_qos(prefetch_count=self.transport.prefetch)
        queue = await self._declare(channel)
        # aio-pika runs each delivery's callback as its own task; funnelling them through one
        # buffer makes processing sequential and in queue order. Robust queues re-consume with
        # this same callback after a reconnect, so the buffer keeps being fed.
        buffer: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

        async def deliver(message: AbstractIncomingMessage) -> None:
            buffer.put_nowait(message)

        tag = await queue.consume(deliver)
        log.info("consumer started", consumer=self.consumer.name, queue=self.queue_name)
        try:
            while (message := await _next(buffer, stop)) is not None:
                batch = [message]
                while len(batch) < BATCH_SIZE and not buffer.empty():
                    batch.append(buffer.get_nowait())
                await self._process_batch(channel, batch)
        finally:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
            log.info("consumer stopped", consumer=self.consumer.name, queue=self.queue_name)

    async def _declare(self, channel: AbstractRobustChannel) -> AbstractQueue:
        """Declare (idempotently) this consumer's queues; answer the main queue."""
        queue = await self.transport.declare_consumer(
            self.consumer.name,
            self.consumer.subscription.event_types,
            self.consumer.retry_delays,
            channel=channel,
        )
        self._retry_queues.update(
            self.transport.retry_queue_name(self.consumer.name, d)
            for d in self.consumer.retry_delays
        )
        return queue

    async def _process_batch(
        self, channel: AbstractRobustChannel, messages: list[AbstractIncomingMessage]
    ) -> None:
        """Apply the first deliveries among `messages` together (see `handle_batch`), then
        settle each; a retried delivery, or one the batch left, goes through `_process`."""
        firsts: list[tuple[AbstractIncomingMessage, Envelope]] = []
        for message in messages:
            if _attempt(message) != 0 or _stale(message):
                continue
            try:
                firsts.append((message, Envelope.from_json(message.body)))
            except (ValidationError, ValueError):
                continue  # `_process` parks it
        settled: set[int] = set()
        if len(firsts) > 1:
            results = await self.consumer.handle_batch([e for _, e in firsts])
            for (message, envelope), result in zip(firsts, results, strict=True):
                if result is not None:
                    settled.add(id(message))
                    await self._conclude(channel, message, envelope, 0, result)
        for message in messages:
            if id(message) not in settled:
                await self._process(channel, message)

    async def _process(
        self, channel: AbstractRobustChannel, message: AbstractIncomingMessage
    ) -> None:
        """Apply one delivery, then settle it; never raises."""
        if _stale(message):
            # Delivered on a channel that has since died: the broker hands it out again.
            return
        try:
            envelope = Envelope.from_json(message.body)
        except (ValidationError, ValueError):
            log.error(
                "undecodable event rejected to the parking queue",
                consumer=self.consumer.name,
                message_id=message.message_id,
                routing_key=message.routing_key,
            )
            await self._settle(message.reject(requeue=False), "reject")
            return
        attempt = _attempt(message)
        try:
            result = await self.consumer.handle(envelope, attempt)
        except Exception:
            await self._hand_back(message, envelope)
            return
        await self._conclude(channel, message, envelope, attempt, result)

    async def _conclude(
        self,
        channel: AbstractRobustChannel,
        message: AbstractIncomingMessage,
        envelope: Envelope,
        attempt: int,
        result: Delivery,
    ) -> None:
        """Schedule the retry or bury the event as `result` says, then ack; never raises."""
        try:
            if result.outcome is Outcome.RETRY:
                queue = self._retry_queue_name(result.delay)
                if queue not in self._retry_queues:
                    await self.transport.declare_retry_queue(
                        channel, self.consumer.name, result.delay
                    )
                    self._retry_queues.add(queue)
                # The copy is confirmed before the original is acked: a crash in between
                # yields two deliveries, which the inbox reduces to one effect.
                await send_to_queue(channel, queue, message.body, envelope.id, attempt + 1)
            elif result.outcome is Outcome.DEAD:
                await self.consumer.bury(envelope, attempt + 1, result.error or "")
        except Exception:
            await self._hand_back(message, envelope)
            return
        await self._settle(message.ack(), "ack")

    async def _hand_back(self, message: AbstractIncomingMessage, envelope: Envelope) -> None:
        # Not a handler failure (those come back as RETRY/DEAD) but the bookkeeping failed:
        # hand the message back after a pause; the delivery limit parks it if it persists.
        log.exception("event processing failed", consumer=self.consumer.name, **envelope.for_log())
        await asyncio.sleep(CRASH_BACKOFF)
        await self._settle(message.nack(requeue=True), "nack")

    async def _settle(self, settle: Awaitable[None], what: str) -> None:
        try:
            await settle
        except Exception as exc:
            # The channel died after the event was applied: the broker redelivers it and the
            # inbox recognizes it, so this costs a duplicate delivery, not a duplicate effect.
            log.info(
                "settling a delivery failed; the broker will redeliver it",
                action=what,
                consumer=self.consumer.name,
                error=f"{type(exc).__name__}: {exc}",
            )


def _stale(message: AbstractIncomingMessage) -> bool:
    try:
        message.channel  # noqa: B018 - raises once the delivering channel is closed
    except ChannelInvalidStateError:
        return True
    return False


def _attempt(message: AbstractIncomingMessage) -> int:
    """The attempt number carried in the headers (0 for a first delivery)."""
    raw = (message.headers or {}).get(ATTEMPT_HEADER, 0)
    try:
        return max(0, int(raw))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0


async def _next(
    buffer: asyncio.Queue[AbstractIncomingMessage], stop: asyncio.Event
) -> AbstractIncomingMessage | None:
    """The next buffered delivery, or None once `stop` is set."""
    if stop.is_set():
        return None
    if not buffer.empty():
        return buffer.get_nowait()
    getter = asyncio.ensure_future(buffer.get())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not getter.done():
            getter.cancel()
    return None if stop.is_set() or getter.cancelled() else getter.result()
