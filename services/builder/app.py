"""The builder worker: thin Faust agents over `check.on_service_event` and the coordinator's one entry
point, `coordinator.handle` (VersionRequested, ImageBuilt, ImagePushed).

Each agent acknowledges an event only after its handler returned, so an event whose handler was
running when the worker died is redelivered to the worker that gets the partition. Builds of
different versions run side by side: the build agent has settings.builder_concurrency instances.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from shared.events import Event, ImageBuilt, ImagePushed, ServiceCreated, ServiceUpdated, VersionRequested
from shared.faust_app import decoded, make_app, topic
from shared.routing import Router
from shared.settings import Settings

from .check import on_service_event
from .coordinator import handle
from .core import Builder, bootstrap
from .reaper import reap_forever
from .watch import watch_forever

log = logging.getLogger(__name__)
Handler = Callable[[Builder, Event], Awaitable[Any]]


def routes(name: str, handler: Handler, *types: type[Event]) -> Router[Handler]:
    router: Router[Handler] = Router(name)
    router.add(handler, *types)
    return router


# One table per agent: the service check, and the coordinator's entry for each step's input event
# (three agents, so a long build never holds up another version's push or tag).
CHECK = routes("builder-check", on_service_event, ServiceCreated, ServiceUpdated)
BUILD = routes("builder-build", handle, VersionRequested)
PUSH = routes("builder-push", handle, ImageBuilt)
TAG = routes("builder-tag", handle, ImagePushed)


async def dispatch(b: Builder, raw: bytes, router: Router[Handler]) -> None:
    """Decode, route by type, run the handler; a handler error is logged, never kills the agent."""
    event = decoded(raw)
    if event is None or event.type not in router:
        return
    try:
        await router.adispatch(event, b)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s %s: handler failed", event.type, event.aggregate_id)


def build_app(settings: Settings, builder: Builder | None = None) -> faust.App:
    app = make_app("builder", settings)
    b = builder or bootstrap(settings)
    services = topic(app, settings, "services")
    versions = topic(app, settings, "versions")
    parallel = settings.builder_concurrency

    @app.agent(services, concurrency=2)
    async def check(stream: Any) -> None:
        async for raw in stream:
            await dispatch(b, raw, CHECK)

    @app.agent(versions, concurrency=parallel)
    async def build(stream: Any) -> None:
        async for raw in stream:
            await dispatch(b, raw, BUILD)

    @app.agent(versions, concurrency=parallel)
    async def push(stream: Any) -> None:
        async for raw in stream:
            await dispatch(b, raw, PUSH)

    @app.agent(versions, concurrency=parallel)
    async def tag(stream: Any) -> None:
        async for raw in stream:
            await dispatch(b, raw, TAG)

    @app.task
    async def background() -> None:
        await asyncio.gather(watch_forever(b), reap_forever(b))

    app.builder = b  # type: ignore[attr-defined]
    return app
