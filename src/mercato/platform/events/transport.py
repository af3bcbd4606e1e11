"""What a transport is: the relay hands it events; it confirms once they are safe; it runs the
consuming side of each service (at least once, acknowledged only after the inbox committed).

`Transport` is the whole surface the runtime and the CLI use, in the manner of httpx's
`BaseTransport`: three implementations (in-process, RabbitMQ, Kafka) sit behind it, and nothing
outside this package needs to know which one it holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from mercato.platform.events.envelope import Envelope
from mercato.platform.uow import UnitOfWork

if TYPE_CHECKING:
    from mercato.platform.events.consumer import EventConsumer

Handler = Callable[[Envelope, UnitOfWork], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """One consuming service: its name and a handler per event type."""

    consumer: str
    handlers: Mapping[str, Handler] = field(default_factory=dict)

    @property
    def event_types(self) -> frozenset[str]:
        """The event types this consumer receives."""
        return frozenset(self.handlers)


@dataclass(frozen=True)
class ConsumerSpec:
    """A consumer of the installation, whether or not it runs in this process: what a transport
    must prepare so that events published now reach it later."""

    name: str
    event_types: frozenset[str]
    retry_delays: tuple[float, ...]
    # Where its database is: the in-process transport keeps an absent consumer's queue there.
    database_url: str

    @classmethod
    def of(
        cls, name: str, event_types: Iterable[str], retry_delays: Iterable[float], database_url: str
    ) -> ConsumerSpec:
        """A spec from any iterables."""
        return cls(name, frozenset(event_types), tuple(retry_delays), database_url)


class ConsumerRunner(Protocol):
    """The consuming side of one service on one transport.

    It applies each delivery through its `EventConsumer` (effect and inbox row in one commit),
    acknowledges only after that commit, schedules a failed event's retry after the consumer's
    delay schedule without holding up the events behind it, and parks an event whose retries are
    spent in the service's dead letters (`EventConsumer.bury`).
    """

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; unacknowledged deliveries come back on the next run."""
        ...


class Transport(Protocol):
    """Moves events from relays to consumers, at least once."""

    @property
    def crosses_processes(self) -> bool:
        """Whether an event published here reaches consumers running in other processes (a
        broker), or only those of this process (in-process): then only a process running the
        consumers may relay, or events would be marked sent that reach no one."""
        ...

    async def start(self) -> None:
        """Connect; from then on reconnect by itself after an outage."""
        ...

    async def declare(self, consumers: Sequence[ConsumerSpec]) -> None:
        """Prepare (idempotently) every consumer of the installation, running here or not, so
        that an event published from now on waits for it: called before any relay publishes."""
        ...

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Return only once every envelope is durably accepted; raise otherwise."""
        ...

    def runner(self, consumer: EventConsumer) -> ConsumerRunner:
        """The consuming side of one service of this process (create it before `declare`)."""
        ...

    async def redeliver(self, consumer: str, envelope: Envelope) -> None:
        """Hand one event back to one consumer as a first attempt (dead-letter replay)."""
        ...

    async def is_ready(self) -> bool:
        """Whether events can move now (readiness probes)."""
        ...

    async def close(self) -> None:
        """Disconnect and release what `start` and `declare` opened."""
        ...
