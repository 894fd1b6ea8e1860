"""The deployer worker: thin Faust agents over `Deployer` (fornax.deploys and fornax.versions)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from pymongo.errors import PyMongoError

from shared.bus import BusUnavailable, EventBus
from shared.events import Event
from shared.faust_app import decoded, make_app, topic
from shared.settings import Settings
from shared.store import Store

from .handlers import Deployer
from .state import MongoState
from .targets.registry import build_targets

log = logging.getLogger(__name__)
def bootstrap(settings: Settings) -> tuple[Deployer, EventBus, Store]:
    """Adapters from settings; nothing connects until first use."""
    store = Store(settings)
    bus = EventBus(settings)
    deployer = Deployer(
        MongoState(store), build_targets(settings), bus.publish, timeout=settings.deploy_timeout
    )
    return deployer, bus, store


async def _handle(fn: Callable[[Event], Awaitable[None]], event: Event) -> None:
    """Retry while Mongo or the broker is away (the event must not be dropped); log anything else."""
    delay = 0.5
    while True:
        try:
            await fn(event)
            return
        except (PyMongoError, BusUnavailable) as exc:
            log.warning("%s %s: %s; retrying in %.1fs", event.type, event.event_id, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)
        except Exception:  # one bad event must not stop the deployer
            log.exception("could not handle %s %s", event.type, event.event_id)
            return


def build_app(settings: Settings) -> faust.App:
    app = make_app("deployer", settings)
    deployer, bus, _store = bootstrap(settings)

    @app.agent(topic(app, settings, "deploys"))
    async def deploys(stream: Any) -> None:
        async for raw in stream:
            event = decoded(raw)
            if event is not None and event.type in deployer.routes:
                await _handle(deployer.handle, event)

    @app.agent(topic(app, settings, "versions"))
    async def versions(stream: Any) -> None:
        async for raw in stream:
            event = decoded(raw)
            if event is not None and event.type in deployer.routes:
                await _handle(deployer.handle, event)

    @app.timer(interval=30.0)
    async def sweep() -> None:
        try:
            lost = await deployer.sweep_lost()
        except Exception:  # Mongo or the broker blinked: next round
            log.exception("sweeping lost deployments failed")
            return
        if lost:
            log.warning("marked %d lost deployment(s) failed: %s", len(lost), ", ".join(lost))

    return app
