"""The event backbone: envelope, transactional outbox, idempotent inbox, relay and transports."""

from mercato.platform.events.envelope import Envelope, EventPayload, make_envelope

__all__ = ["Envelope", "EventPayload", "make_envelope"]
