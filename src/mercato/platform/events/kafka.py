"""The Kafka transport: events over one topic, keyed by subject (DESIGN §3).

Every event goes to one stream topic keyed by its `subject`, so one aggregate's events land in
one partition and are consumed in order. Each consuming service is a consumer group reading the
stream (skipping the types it does not subscribe to), its replay topic and its retry topics; it
commits offsets only after the inbox transaction committed, so a redelivery (after a crash, a
rebalance or a broker restart) meets the inbox and has no second effect. The producer waits for
`acks=all` (idempotent unless the URL says `?idempotence=false`, for brokers without
InitProducerId), and `publish` returns only once every record was acknowledged: the relay marks
an event sent only then.

`MERCATO_BROKER_URL=kafka://host:9092[,host2:9092][?option=value&…]`, options `idempotence`
(true), `partitions` of the stream when Mercato creates it (6), `session_timeout_ms` of the
consumer groups (10000) and `fetch_max_wait_ms` (100).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from mercato.platform.events.consumer import EventConsumer
from mercato.platform.events.envelope import Envelope
from mercato.platform.events.kafka_consumer import KafkaConsumerRunner
from mercato.platform.events.kafka_wire import PUBLISH_TIMEOUT, Headers, KafkaNames, headers
from mercato.platform.events.transport import ConsumerSpec

log = structlog.get_logger("mercato.events")

# A readiness probe waits this long for the cluster's metadata.
READY_TIMEOUT = 2.0


class PublishFailedError(ConnectionError):
    """Some records of a publish were not acknowledged (broker gone, topic missing, …)."""


class KafkaTransport:
    """Produces events to the stream topic with acks=all; see `runner` to consume."""

    def __init__(self, url: str, *, topic: str = "mercato.events", prefix: str = "mercato") -> None:
        parts = urlsplit(url)
        if parts.scheme != "kafka" or not parts.netloc:
            raise ValueError(f"not a kafka://host:port URL: {url!r}")
        options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        self.bootstrap_servers = parts.netloc
        self.idempotence = options.get("idempotence", "true").lower() not in {"0", "false", "no"}
        self.partitions = int(options.get("partitions", "6"))
        # A group's join waits about half the session timeout for other members; Kafka's
        # default floor is 6 s (group.min.session.timeout.ms), a test broker may allow less.
        session = int(options.get("session_timeout_ms", "10000"))
        self.consumer_options = {
            "session_timeout_ms": session,
            "heartbeat_interval_ms": max(100, session // 4),
            # How long the broker may hold a fetch with nothing to answer: an idle consumer
            # sees a new event this soon.
            "fetch_max_wait_ms": int(options.get("fetch_max_wait_ms", "100")),
        }
        self.names = KafkaNames(stream=topic, prefix=prefix)
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._known_topics: set[str] = set()
        self._declared: set[str] = set()  # consumers `declare` prepared (replays name one)

    @property
    def crosses_processes(self) -> bool:
        """Yes: every process producing to the cluster reaches every consumer group."""
        return True

    async def start(self) -> None:
        """Connect the producer and the admin client (both reconnect by themselves)."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            acks="all",
            enable_idempotence=self.idempotence,
            request_timeout_ms=round(PUBLISH_TIMEOUT * 1000),
            linger_ms=2,
        )
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        try:
            await producer.start()
            await admin.start()
        except BaseException:
            await producer.stop()
            await admin.close()
            raise
        self._producer, self._admin = producer, admin

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create the topics that do not exist yet (the stream with `partitions` partitions,
        a consumer's own topics with one: they hold its retries in the order they fall due)."""
        if self._admin is None:
            raise RuntimeError("KafkaTransport.start() was not called")
        missing = [t for t in dict.fromkeys(topics) if t not in self._known_topics]
        if not missing:
            return
        response = await self._admin.create_topics(
            [NewTopic(t, self.partitions if t == self.names.stream else 1, 1) for t in missing]
        )
        for topic, code, message in _topic_errors(response):
            if code not in (0, TopicAlreadyExistsError.errno):
                raise KafkaError(f"cannot create topic {topic}: [{code}] {message}")
        self._known_topics.update(missing)

    async def declare(self, consumers: Sequence[ConsumerSpec]) -> None:
        """Create the stream and every consumer's replay, retry and dead-letter topics."""
        topics = [self.names.stream]
        for spec in consumers:
            topics += self.names.consumer_topics(spec.name, spec.retry_delays)
            topics.append(self.names.dead_topic(spec.name))
        await self.ensure_topics(topics)
        self._declared.update(spec.name for spec in consumers)

    def forget_topics(self) -> None:
        """Let the next `ensure_topics` ask the broker again (it may have lost them: a broker
        without durable storage that restarted, an operator who deleted them)."""
        self._known_topics.clear()

    async def send(
        self, topic: str, key: str | None, value: bytes, record_headers: Headers
    ) -> None:
        """Produce one record; return once the broker acknowledged it."""
        await self.ensure_topics([topic])
        await self._send_all([(topic, key, value, record_headers)])

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Produce every event to the stream keyed by subject; return once all are
        acknowledged, raise otherwise (the relay tries again; inboxes dedupe)."""
        unique = {env.id: env for env in envelopes}.values()
        await self.ensure_topics([self.names.stream])
        await self._send_all(
            [
                (self.names.stream, env.subject, env.to_json().encode(), headers(env.type, 0))
                for env in unique
            ]
        )

    async def _send_all(self, records: Sequence[tuple[str, str | None, bytes, Headers]]) -> None:
        if self._producer is None:
            raise RuntimeError("KafkaTransport.start() was not called")
        if not records:
            return
        producer = self._producer
        try:
            # Enqueue all, then wait for every acknowledgement: they travel in batches.
            pending = [
                await producer.send(
                    topic, value, key=key.encode() if key is not None else None, headers=hdrs
                )
                for topic, key, value, hdrs in records
            ]
        except KafkaError as exc:
            self.forget_topics()
            raise PublishFailedError(f"records not sent: {exc!r}") from exc
        results = await asyncio.gather(*pending, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            self.forget_topics()  # the next attempt checks they still exist
            raise PublishFailedError(
                f"{len(failures)} of {len(records)} records not acknowledged: {failures[0]!r}"
            ) from failures[0]

    async def redeliver(self, consumer: str, envelope: Envelope) -> None:
        """Produce one event to one consumer's replay topic, as a first attempt."""
        if consumer not in self._declared:
            # A replay names one consumer: an undeclared one is an error, never a topic that
            # nobody reads.
            raise PublishFailedError(f"no consumer {consumer!r} declared on this transport")
        value = envelope.to_json().encode()
        topic = self.names.replay_topic(consumer)
        await self.send(topic, envelope.subject, value, headers(envelope.type, 0))
        log.info("event redelivered", consumer=consumer, **envelope.for_log())

    def runner(self, consumer: EventConsumer) -> KafkaConsumerRunner:
        """The consuming side for one service: its consumer group."""
        return KafkaConsumerRunner(self, consumer)

    async def is_ready(self) -> bool:
        """Whether the cluster answers a metadata request now."""
        if self._producer is None:
            return False
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), READY_TIMEOUT)
        except (KafkaError, OSError, TimeoutError):
            return False
        return True

    async def close(self) -> None:
        """Flush and disconnect."""
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        if producer is not None:
            await producer.stop()
        if admin is not None:
            await admin.close()


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    """(topic, error code, message) of a CreateTopics response, whatever its version."""
    rows = getattr(response, "topic_errors", None) or getattr(response, "topics", [])
    return [(row[0], int(row[1]), row[2] if len(row) > 2 else None) for row in rows]
