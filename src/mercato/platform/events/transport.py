"""What a transport is: the relay hands it events; it confirms once they are safe."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mercato.platform.events.envelope import Envelope
from mercato.platform.uow import UnitOfWork

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


class Transport(Protocol):
    """Moves events from relays to consumers, at least once."""

    async def start(self) -> None:
        """Connect and declare what is needed."""

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Return only once every envelope is durably accepted; raise otherwise."""

    async def redeliver(self, consumer: str, envelope: Envelope) -> None:
        """Hand one event back to one consumer (dead-letter replay)."""

    async def close(self) -> None:
        """Disconnect."""
