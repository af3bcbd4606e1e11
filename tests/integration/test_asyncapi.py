"""`/asyncapi.json`: every event type of the contracts, with DESIGN §3's RabbitMQ bindings, from
the embedded app and from the gateway's companion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from mercato.app import load_modules
from mercato.gateway import GATEWAY, owner_of
from mercato.gateway_app import create_gateway_app
from mercato.platform.events.log import event_types
from tests.harness import embedded_settings, stack


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def check_document(document: dict[str, Any], exchange: str = "mercato.events") -> None:
    """The document's shape, references and bindings."""
    assert document["asyncapi"] == "3.0.0"
    for ref in _refs(document):
        assert ref.startswith("#/"), ref
        _resolve(document, ref)  # every reference points at something
    channels = document["channels"]
    addresses = {c["address"]: c for c in channels.values()}
    load_modules()  # every service's contracts
    for kind, model in event_types().items():
        channel = addresses[kind]
        binding = channel["bindings"]["amqp"]
        assert binding["is"] == "routingKey"
        assert binding["exchange"] == {
            "name": exchange,
            "type": "topic",
            "durable": True,
            "autoDelete": False,
        }
        (message,) = channel["messages"].values()
        message = _resolve(document, message["$ref"])
        assert message["name"] == kind
        data = message["payload"]["allOf"][1]["properties"]["data"]
        schema = _resolve(document, data["$ref"])
        assert set(model.model_fields) <= set(schema["properties"]), kind
    sends = [o for o in document["operations"].values() if o["action"] == "send"]
    assert len(sends) == len(event_types())
    # One queue per consuming service, bound to what its handlers take.
    for module in load_modules():
        if not module.handlers:
            continue
        queue = addresses[f"mercato.{module.name}"]
        assert queue["bindings"]["amqp"]["is"] == "queue"
        assert queue["bindings"]["amqp"]["queue"]["durable"] is True
        names = {_resolve(document, m["$ref"])["name"] for m in queue["messages"].values()}
        assert names == set(module.event_types) & set(event_types()), module.name
    user_created = next(
        m for m in document["components"]["messages"].values() if m["name"] == "user.created"
    )
    assert user_created["x-secret-fields"] == ["password_hash"]


async def test_the_embedded_app_serves_the_asyncapi_document(data_dir: Path) -> None:
    async with stack(embedded_settings(data_dir), ["accounts"]) as s:
        answer = await s.client.get("/asyncapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    check_document(answer.json())


async def test_the_gateway_serves_it_too() -> None:
    assert owner_of("/asyncapi.json") == GATEWAY
    gateway = create_gateway_app({}, document=lambda: {"openapi": "3.1.0", "paths": {}})
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        answer = await client.get("/asyncapi.json")
    assert answer.status_code == 200
    check_document(answer.json())
