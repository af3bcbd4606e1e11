"""The platform calls each use case with the payload parsed from the envelope, and with the
envelope or the service's dependencies only when it names them."""

from __future__ import annotations

from typing import Any, ClassVar, cast

from mercato.platform.events.envelope import EventPayload, make_envelope
from mercato.platform.service import ServiceContext, ServiceModule, bind_handlers
from mercato.platform.uow import UnitOfWork


class Pinged(EventPayload):
    event_type: ClassVar[str] = "test.pinged"

    n: int


class Ponged(EventPayload):
    event_type: ClassVar[str] = "test.ponged"

    n: int


def context(deps: object) -> ServiceContext[Any]:
    return cast(ServiceContext[Any], ServiceContextStub(deps))


class ServiceContextStub:
    """What `bind_handlers` reads of a service context."""

    def __init__(self, deps: object) -> None:
        self.deps = deps


async def test_each_payload_type_is_routed_by_its_event_type_with_what_the_use_case_names() -> None:
    calls: list[tuple[str, Any, dict[str, Any]]] = []

    async def plain(uow: UnitOfWork, event: Pinged) -> None:
        calls.append(("plain", event, {}))

    async def curious(uow: UnitOfWork, event: Ponged, *, envelope: Any, deps: Any) -> None:
        calls.append(("curious", event, {"envelope": envelope, "deps": deps}))

    module = ServiceModule(name="svc", handlers={Pinged: plain, Ponged: curious})
    assert module.event_types == ["test.pinged", "test.ponged"]
    bound = bind_handlers(module.handlers, context("the deps"))
    uow = cast(UnitOfWork, object())
    ping = make_envelope(Pinged(n=1), source="t", subject="s")
    pong = make_envelope(Ponged(n=2), source="t", subject="s")
    await bound[ping.type](ping, uow)
    await bound[pong.type](pong, uow)
    assert calls == [
        ("plain", Pinged(n=1), {}),
        ("curious", Ponged(n=2), {"envelope": pong, "deps": "the deps"}),
    ]
