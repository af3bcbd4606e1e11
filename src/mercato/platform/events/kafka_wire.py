"""What goes over the wire to Kafka, shared by the transport and its consumer runner: topic and
group names, the headers a record carries, and what a runner needs of its transport."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

ATTEMPT_HEADER = "x-mercato-attempt"
# When a retried record falls due (Unix time, seconds): its retry topic holds it until then.
DUE_HEADER = "x-mercato-due"
TYPE_HEADER = "x-mercato-type"
# A confirm that takes this long means the broker is gone; the relay will try again.
PUBLISH_TIMEOUT = 30.0
# aiokafka retries a commit for as long as the error is retriable (a topic the broker lost is,
# forever): past this the runner rejoins the group instead.
COMMIT_TIMEOUT = 15.0
# Pause before handing back a record whose processing crashed (not a handler failure: those go
# through the retry topics), so a broken database does not spin the CPU.
CRASH_BACKOFF = 1.0

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class KafkaNames:
    """Where everything lives: the one event stream, and per consuming service its consumer
    group and its own topics for retries, replays and parked records."""

    stream: str
    prefix: str

    def group(self, consumer: str) -> str:
        """The consumer group of one consuming service (every replica joins it)."""
        return f"{self.prefix}.{consumer}"

    def retry_topic(self, consumer: str, delay: float) -> str:
        """Retry topics are named by their delay: each holds records in the order they fall due,
        and a changed schedule never mixes with old records."""
        return f"{self.prefix}.{consumer}.retry.{round(delay * 1000)}ms"

    def replay_topic(self, consumer: str) -> str:
        """Events handed back to one consumer (dead-letter replay), as first attempts."""
        return f"{self.prefix}.{consumer}.replay"

    def dead_topic(self, consumer: str) -> str:
        """Records one consumer cannot even decode (RabbitMQ's parking queue); events whose
        retries are spent are kept in the service's database, where admins list and replay them."""
        return f"{self.prefix}.{consumer}.dead"

    def consumer_topics(self, consumer: str, retry_delays: Sequence[float]) -> list[str]:
        """The topics one consumer reads: the stream, its replays and its retries."""
        retries = [self.retry_topic(consumer, d) for d in sorted(set(retry_delays))]
        return [self.stream, self.replay_topic(consumer), *retries]


def headers(event_type: str, attempt: int, due: float | None = None) -> Headers:
    """A record's headers: its event type (to skip unsubscribed ones undecoded), its attempt
    and, for a retry, when it falls due."""
    values = [(TYPE_HEADER, event_type.encode()), (ATTEMPT_HEADER, str(attempt).encode())]
    if due is not None:
        values.append((DUE_HEADER, f"{due:.3f}".encode()))
    return values


def header(record_headers: Sequence[tuple[str, bytes]] | None, name: str) -> str | None:
    """One header's value as text, or None."""
    for key, value in record_headers or ():
        if key == name:
            return value.decode(errors="replace")
    return None


def attempt_of(record_headers: Sequence[tuple[str, bytes]] | None) -> int:
    """The attempt number a record carries (0 for a first delivery)."""
    try:
        return max(0, int(header(record_headers, ATTEMPT_HEADER) or 0))
    except ValueError:
        return 0


def due_in(record_headers: Sequence[tuple[str, bytes]] | None) -> float:
    """Seconds until a retried record falls due (0 when it is due, or carries no due time)."""
    try:
        due = float(header(record_headers, DUE_HEADER) or 0)
    except ValueError:
        return 0.0
    return max(0.0, due - time.time())


class RecordSender(Protocol):
    """What a consumer runner needs of the Kafka transport it was made from."""

    @property
    def names(self) -> KafkaNames:
        """Topic and group names."""
        ...

    @property
    def bootstrap_servers(self) -> str:
        """host:port[,host:port…] of the cluster."""
        ...

    @property
    def consumer_options(self) -> Mapping[str, int]:
        """Settings of the consumer groups (session timeout, fetch wait)."""
        ...

    async def send(
        self, topic: str, key: str | None, value: bytes, record_headers: Headers
    ) -> None:
        """Produce one record and return once the broker acknowledged it (acks=all)."""
        ...

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create the topics that do not exist yet."""
        ...

    def forget_topics(self) -> None:
        """Check with the broker again next time which topics exist."""
        ...
