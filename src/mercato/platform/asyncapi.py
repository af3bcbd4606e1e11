"""The AsyncAPI 3 document of every event type, generated from the services' contract models.

What travels is DESIGN §3's envelope with a contract's payload in `data`. On RabbitMQ each event
type is a routing key on the durable topic exchange (a channel per type, where producers send)
and each consuming service has a durable quorum queue bound to the types it handles (a channel
per queue, where that service receives), with retry queues and dead letters beside it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic.json_schema import models_json_schema

from mercato import __version__
from mercato.platform.events.envelope import Envelope, EventPayload
from mercato.platform.events.log import event_types
from mercato.platform.service import ServiceModule
from mercato.platform.settings import Settings

PATH = "/asyncapi.json"
AMQP_BINDING = "0.3.0"
_REF = "#/components/schemas/{model}"


def _producer(model: type[EventPayload]) -> str:
    # Contracts live in `mercato.<service>.contracts`: the producer is the package's service.
    parts = model.__module__.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "mercato" else model.__module__


def _message_name(model: type[EventPayload]) -> str:
    return model.__name__


def asyncapi_document(
    consumers: Mapping[str, Sequence[str]],
    *,
    exchange: str = "mercato.events",
    queue_prefix: str = "mercato",
    broker: str = "localhost:5672",
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document: `consumers` maps each consuming service to the event types
    it handles; the event types and their payloads come from the loaded contract models."""
    models = dict(sorted(event_types().items()))
    _, defs = models_json_schema(
        [(Envelope, "validation"), *((model, "validation") for model in models.values())],
        ref_template=_REF,
    )
    schemas: dict[str, Any] = defs.get("$defs", {})
    exchange_binding = {
        "is": "routingKey",
        "exchange": {"name": exchange, "type": "topic", "durable": True, "autoDelete": False},
        "bindingVersion": AMQP_BINDING,
    }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for kind, model in models.items():
        name = _message_name(model)
        secret = sorted(model.secret_fields)
        messages[name] = {
            "name": kind,
            "title": kind,
            "summary": (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else kind,
            "contentType": "application/json",
            "payload": {
                "allOf": [
                    {"$ref": _REF.format(model="Envelope")},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": kind},
                            "version": {"const": model.event_version},
                            "data": {"$ref": _REF.format(model=model.__name__)},
                        },
                    },
                ]
            },
            "bindings": {
                "amqp": {"messageType": kind, "bindingVersion": AMQP_BINDING},
            },
            **({"x-secret-fields": secret} if secret else {}),
        }
        channel_id = _key(kind)
        channels[channel_id] = {
            "address": kind,
            "title": f"{kind} on {exchange}",
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {"amqp": exchange_binding},
        }
        producer = _producer(model)
        operations[_key(f"{producer}.send.{kind}")] = {
            "action": "send",
            "title": f"{producer} publishes {kind}",
            "description": "Written to the producer's outbox with the change, relayed with "
            "publisher confirms as a persistent message.",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{name}"}],
            "bindings": {"amqp": {"deliveryMode": 2, "bindingVersion": AMQP_BINDING}},
        }
    for consumer, kinds in sorted(consumers.items()):
        handled = [kind for kind in sorted(kinds) if kind in models]
        if not handled:
            continue
        queue = f"{queue_prefix}.{consumer}"
        channel = _key(f"queue.{consumer}")
        names = [_message_name(models[kind]) for kind in handled]
        channels[channel] = {
            "address": queue,
            "title": f"{consumer}'s queue",
            "description": f"Bound to {exchange} by the routing keys {', '.join(handled)}; "
            f"failed deliveries wait in {queue}.retry.<delay> queues, then go to {queue}.dead.",
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
            "bindings": {
                "amqp": {
                    "is": "queue",
                    "queue": {
                        "name": queue,
                        "durable": True,
                        "exclusive": False,
                        "autoDelete": False,
                    },
                    "bindingVersion": AMQP_BINDING,
                }
            },
        }
        operations[_key(f"{consumer}.receive")] = {
            "action": "receive",
            "title": f"{consumer} consumes",
            "description": "Manual ack after the inbox transaction commits (x-queue-type: quorum).",
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{n}"} for n in names],
            "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING}},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Mercato events",
            "version": __version__,
            "description": "Every event Mercato's services publish, in the envelope of its "
            "design (§3): at-least-once delivery, de-duplicated by each consumer's inbox.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": broker,
                "protocol": "amqp",
                "description": "MERCATO_BROKER_URL (distributed mode)",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def consumed_types(modules: Iterable[ServiceModule[Any]]) -> dict[str, list[str]]:
    """Each consuming service among `modules` and the event types it handles."""
    return {module.name: module.event_types for module in modules if module.handlers}


def add_asyncapi(
    app: FastAPI,
    consumers: Callable[[], Mapping[str, Sequence[str]]],
    settings: Settings,
    path: str = PATH,
) -> None:
    """Serve the document at `path`, built on first request from `consumers()` (each consuming
    service and the event types it handles) and the contract models loaded by then."""
    built: list[dict[str, Any]] = []

    async def asyncapi() -> JSONResponse:
        if not built:
            built.append(
                asyncapi_document(
                    consumers(),
                    exchange=settings.broker_exchange,
                    queue_prefix=settings.broker_queue_prefix,
                    broker=broker_host(settings.broker_url),
                )
            )
        return JSONResponse(built[0])

    asyncapi.__doc__ = "The AsyncAPI 3 document of every event type."
    app.add_api_route(path, asyncapi, methods=["GET"], include_in_schema=False)


def broker_host(url: str | None) -> str:
    """`host:port` of the broker URL (never its credentials), or RabbitMQ's default."""
    if not url:
        return "localhost:5672"
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5672}"


def _key(name: str) -> str:
    """An id for a channel or an operation: letters, digits, `_` and `-` only (the address
    keeps the event type's dots)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)
