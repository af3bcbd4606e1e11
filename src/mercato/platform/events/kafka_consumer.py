"""Consuming one service's Kafka topics as one consumer group: each event applied once,
failures retried through delay topics, offsets committed only after the effect committed
(DESIGN §3).

Retries go to retry topics (one per delay, each record carrying when it falls due) rather than
a delayed re-publish or a held offset: a re-publish waiting in memory is lost with the process,
and holding the offset of a failing record would stall every event of its partition behind it.
A retry topic's records fall due in the order they were written, so the runner pauses that
partition until its head is due and the stream keeps flowing meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from mercato.platform.aio import wait_any
from mercato.platform.events.consumer import Delivery, EventConsumer, Outcome
from mercato.platform.events.envelope import Envelope
from mercato.platform.events.kafka_wire import (
    COMMIT_TIMEOUT,
    CRASH_BACKOFF,
    TYPE_HEADER,
    RecordSender,
    attempt_of,
    due_in,
    header,
    headers,
)

log = structlog.get_logger("mercato.events")

# At most this many records are fetched, and their first deliveries applied, together.
BATCH_SIZE = 200
# How long one fetch waits for records: also how soon a stop is noticed.
POLL_SECONDS = 0.2


class _HandBack(Exception):
    """Bookkeeping (not a handler) failed: the partition is read again from that record."""


class KafkaConsumerRunner:
    """Consumes one service's consumer group: stream, replays and retries.

    Stop it (set the event given to `run`) before closing the transport it was made from.
    """

    def __init__(self, transport: RecordSender, consumer: EventConsumer) -> None:
        self.transport = transport
        self.consumer = consumer
        names = transport.names
        self.group_id = names.group(consumer.name)
        self.topics = names.consumer_topics(consumer.name, consumer.retry_delays)
        self.retry_topics = set(self.topics[2:])
        self.dead_topic = names.dead_topic(consumer.name)
        self._paused: dict[TopicPartition, float] = {}  # retry partitions -> when their head is due

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; records not yet committed are read again next time."""
        while not stop.is_set():
            client = AIOKafkaConsumer(
                *self.topics,
                bootstrap_servers=self.transport.bootstrap_servers,
                group_id=self.group_id,
                enable_auto_commit=False,
                # A new group reads the stream from its start: events published after the
                # topics were declared but before the group first joined are not skipped.
                auto_offset_reset="earliest",
                max_poll_records=BATCH_SIZE,
                **self.transport.consumer_options,
            )
            try:
                await self.transport.ensure_topics([*self.topics, self.dead_topic])
                await client.start()
                log.info("consumer started", consumer=self.consumer.name, group=self.group_id)
                await self._consume(client, stop)
            except (KafkaError, OSError) as exc:
                # The broker went away under the consumer (or was not there yet); the group
                # rejoins from the committed offsets, and the inbox absorbs what is read again.
                # The topics are declared again first: a broker may come back without them.
                self.transport.forget_topics()
                log.warning(
                    "consumer lost the broker; reconnecting",
                    consumer=self.consumer.name,
                    error=f"{type(exc).__name__}: {exc}",
                )
                await wait_any(stop, timeout=CRASH_BACKOFF)
            finally:
                self._paused.clear()
                with contextlib.suppress(Exception):
                    await client.stop()
        log.info("consumer stopped", consumer=self.consumer.name, group=self.group_id)

    async def _consume(self, client: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._resume_due(client)
            batches = await client.getmany(timeout_ms=round(self._poll_seconds() * 1000))
            for partition, records in batches.items():
                if stop.is_set():
                    return  # uncommitted: read again by whoever runs next
                await self._process_partition(client, partition, records)

    def _poll_seconds(self) -> float:
        if not self._paused:
            return POLL_SECONDS
        return max(0.005, min(POLL_SECONDS, min(self._paused.values()) - time.time()))

    def _resume_due(self, client: AIOKafkaConsumer) -> None:
        now = time.time()
        for partition, due in list(self._paused.items()):
            if due <= now:
                del self._paused[partition]
                if partition in client.assignment():
                    client.resume(partition)

    async def _process_partition(
        self, client: AIOKafkaConsumer, partition: TopicPartition, records: list[Any]
    ) -> None:
        """Settle `records` (one partition's, in order) and commit past those settled."""
        done: set[int] = set()  # offsets settled (applied, retried, buried or skipped)
        try:
            if partition.topic in self.retry_topics:
                for record in records:
                    wait = due_in(record.headers)
                    if wait > 0:
                        # Not due yet, nor anything behind it: read it again once it is.
                        client.pause(partition)
                        self._paused[partition] = time.time() + wait
                        break
                    await self._process_one(record)
                    done.add(record.offset)
            else:
                await self._process_firsts(records, done)
        except _HandBack:
            await asyncio.sleep(CRASH_BACKOFF)
        # Everything before the first record not settled is committed; reading resumes there
        # (what was settled after it is read again and recognized by the inbox).
        resume = min((r.offset for r in records if r.offset not in done), default=None)
        if resume is not None:
            client.seek(partition, resume)
        upto = records[-1].offset + 1 if resume is None else resume
        await self._commit(client, partition, upto, records[0].offset)

    async def _commit(
        self, client: AIOKafkaConsumer, partition: TopicPartition, offset: int, first: int
    ) -> None:
        if offset <= first:
            return
        try:
            await asyncio.wait_for(client.commit({partition: offset}), COMMIT_TIMEOUT)
        except TimeoutError as exc:
            raise KafkaError(f"offset commit on {partition} timed out") from exc
        except KafkaError as exc:
            # The group moved on (a rebalance) or the broker is gone: these records are read
            # again, by this process or another, and the inbox recognizes them.
            log.info(
                "offset commit failed; records will be read again",
                consumer=self.consumer.name,
                error=f"{type(exc).__name__}: {exc}",
            )

    async def _process_firsts(self, records: list[Any], done: set[int]) -> None:
        """First deliveries (stream and replays): applied together where their handlers allow
        (see `handle_batch`), the rest one by one; unsubscribed types are skipped."""
        wanted = self.consumer.subscription.event_types
        batch: list[tuple[Any, Envelope]] = []
        for record in records:
            kind = header(record.headers, TYPE_HEADER)
            unwanted = kind is not None and kind not in wanted
            envelope = None if unwanted else await self._decode(record)
            if envelope is not None and envelope.type in wanted:
                batch.append((record, envelope))
            else:
                done.add(record.offset)
        settled: set[int] = set()
        if len(batch) > 1:
            results = await self.consumer.handle_batch([e for _, e in batch])
            for (record, envelope), result in zip(batch, results, strict=True):
                if result is not None:
                    settled.add(record.offset)
                    await self._conclude(record, envelope, 0, result)
                    done.add(record.offset)
        for record, envelope in batch:
            if record.offset not in settled:
                await self._apply(record, envelope, attempt_of(record.headers))
                done.add(record.offset)

    async def _process_one(self, record: Any) -> None:
        envelope = await self._decode(record)
        if envelope is not None:
            await self._apply(record, envelope, attempt_of(record.headers))

    async def _decode(self, record: Any) -> Envelope | None:
        try:
            return Envelope.from_json(record.value)
        except (ValidationError, ValueError, TypeError):
            log.error(
                "undecodable record parked in the dead-letter topic",
                consumer=self.consumer.name,
                topic=record.topic,
                offset=record.offset,
            )
            try:
                await self.transport.send(
                    self.dead_topic, None, record.value or b"", list(record.headers or [])
                )
            except Exception as exc:
                raise _HandBack from exc
            return None

    async def _apply(self, record: Any, envelope: Envelope, attempt: int) -> None:
        try:
            result = await self.consumer.handle(envelope, attempt)
        except Exception as exc:
            log.exception(
                "event processing failed", consumer=self.consumer.name, **envelope.for_log()
            )
            raise _HandBack from exc
        await self._conclude(record, envelope, attempt, result)

    async def _conclude(
        self, record: Any, envelope: Envelope, attempt: int, result: Delivery
    ) -> None:
        """Produce the retry or bury the event as `result` says, before the offset moves on."""
        try:
            if result.outcome is Outcome.RETRY:
                # The copy is acknowledged before the offset is committed: a crash in between
                # yields two deliveries, which the inbox reduces to one effect.
                await self.transport.send(
                    self.transport.names.retry_topic(self.consumer.name, result.delay),
                    envelope.subject,
                    record.value,
                    headers(envelope.type, attempt + 1, time.time() + result.delay),
                )
            elif result.outcome is Outcome.DEAD:
                await self.consumer.bury(envelope, attempt + 1, result.error or "")
        except Exception as exc:
            log.exception(
                "settling an event failed", consumer=self.consumer.name, **envelope.for_log()
            )
            raise _HandBack from exc
