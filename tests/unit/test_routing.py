"""shared/routing.Router: one table from event type to handler, used by every consumer."""

from __future__ import annotations

from typing import Any

import pytest

from shared.events import Event, VersionFailed, VersionRequested, VersionSucceeded
from shared.events.versions import VersionFailedPayload, VersionRequestedPayload, VersionSucceededPayload
from shared.routing import Router

REQUESTED = VersionRequested.make("v1", VersionRequestedPayload(service_id="s", user_id="a", name="v1"))
SUCCEEDED = VersionSucceeded.make("v1", VersionSucceededPayload())
FAILED = VersionFailed.make("v1", VersionFailedPayload(reason="x"))


def test_dispatch_calls_the_types_handler_with_the_context_first() -> None:
    router: Router[Any] = Router("test")
    seen: list[tuple[Any, ...]] = []

    @router.on("VersionRequested")
    def requested(ctx: str, event: Event) -> str:
        seen.append((ctx, event.type))
        return "r"

    @router.on(VersionSucceeded, VersionFailed)
    def ended(ctx: str, event: Event) -> str:
        seen.append((ctx, event.type))
        return "e"

    assert [router.dispatch(e, "c") for e in (REQUESTED, SUCCEEDED, FAILED)] == ["r", "e", "e"]
    assert seen == [("c", "VersionRequested"), ("c", "VersionSucceeded"), ("c", "VersionFailed")]
    assert router.types == {"VersionRequested", "VersionSucceeded", "VersionFailed"}
    assert "VersionFailed" in router and "StageStarted" not in router
    assert router.handler("VersionFailed") is ended and router.handler("StageStarted") is None


def test_an_unrouted_type_is_ignored() -> None:
    router: Router[Any] = Router("test")
    assert router.dispatch(REQUESTED) is None


async def test_adispatch_awaits_async_handlers_and_returns_plain_results() -> None:
    router: Router[Any] = Router("test")

    async def later(event: Event) -> str:
        return "async " + event.type

    router.add(later, VersionRequested)
    router.add(lambda event: "plain", VersionFailed)
    assert await router.adispatch(REQUESTED) == "async VersionRequested"
    assert await router.adispatch(FAILED) == "plain"
    assert await router.adispatch(SUCCEEDED) is None


def test_unknown_types_and_second_handlers_fail_at_registration() -> None:
    router: Router[Any] = Router("test")
    with pytest.raises(ValueError, match="not an event type"):
        router.add(print, "VersionRequsted")
    router.add(print, VersionRequested)
    with pytest.raises(ValueError, match="already routed"):
        router.add(repr, "VersionRequested")
