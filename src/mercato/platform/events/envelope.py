"""The event envelope of DESIGN §3 and the base class of every event payload."""

from __future__ import annotations

import builtins
import contextvars
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from mercato.platform.clock import utcnow
from mercato.platform.ids import new_id_str
from mercato.platform.tracing import envelope_context

# The correlation id of the request or event being handled, inherited by events it causes.
current_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mercato_correlation_id", default=None
)
# The id of the event being handled, the cause of the events its handler emits.
current_causation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mercato_causation_id", default=None
)

REDACTED = "***"
_UNTRACED = {"traceparent", "tracestate"}


class EventPayload(BaseModel):
    """Base of versioned event payloads; subclasses live in each producer's `contracts`."""

    model_config = ConfigDict(frozen=True)

    event_type: ClassVar[str]
    event_version: ClassVar[int] = 1
    # Fields never written to logs (they still travel in the event).
    secret_fields: ClassVar[frozenset[str]] = frozenset()


EventPayloadT = TypeVar("EventPayloadT", bound="EventPayload")


class Envelope(BaseModel):
    """What travels: identity, type, origin, ordering subject, tracing ids and the payload."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=new_id_str)
    type: str
    version: int = 1
    source: str
    occurred_at: datetime = Field(default_factory=utcnow)
    subject: str
    correlation_id: str
    causation_id: str | None = None
    data: dict[str, Any]
    # W3C trace context of the span that emitted the event (DESIGN §3; CloudEvents' names), so
    # its publishing and handling join the emitter's trace. Absent when tracing is off.
    traceparent: str | None = None
    tracestate: str | None = None

    def payload(self, model: builtins.type[EventPayloadT]) -> EventPayloadT:
        """The payload parsed as the given contract model."""
        return model.model_validate(self.data)

    def to_json(self) -> str:
        """The envelope serialized for storage or the wire."""
        # Without tracing the JSON stays what it was before the trace fields existed.
        return self.model_dump_json(exclude=None if self.traceparent else _UNTRACED)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Envelope:
        """Parse an envelope from its JSON form."""
        return cls.model_validate_json(raw)

    def for_log(self, secret_fields: frozenset[str] = frozenset()) -> dict[str, Any]:
        """The envelope's headers, for logs; payload fields named secret are masked."""
        return {
            "event_id": self.id,
            "event_type": self.type,
            "subject": self.subject,
            "source": self.source,
            "correlation_id": self.correlation_id,
            "data_keys": sorted(self.data),
            "secret_keys": sorted(secret_fields & set(self.data)),
        }


def make_envelope(
    payload: EventPayload,
    *,
    source: str,
    subject: str,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> Envelope:
    """Wrap a payload, inheriting correlation and causation from the current context."""
    event_id = new_id_str()
    return Envelope(
        id=event_id,
        type=payload.event_type,
        version=payload.event_version,
        source=source,
        subject=subject,
        correlation_id=correlation_id or current_correlation_id.get() or event_id,
        causation_id=causation_id or current_causation_id.get(),
        data=payload.model_dump(mode="json"),
        **envelope_context(),
    )
