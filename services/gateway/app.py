"""The gateway application: REST API, webhooks, health and docs, assembled from `routes/*`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from shared.bus import BusUnavailable, EventBus
from shared.secretbox import SecretBox, seal_stored
from shared.settings import Settings, get_settings
from shared.store import ReadModelStore, Store

from .batching import BatchingEventBus
from .errors import EXCEPTION_HANDLERS
from .repo_index import RepoIndex
from .routes import account, badges, compat, dashboard, deploys, health, logs, oauth, services, versions, webhooks

log = logging.getLogger("fornax.gateway")

# Webhooks first: the hot path should match its route after the fewest regex tries.
# The compatibility paths (no /api/v1 prefix) last: every fixed path is tried before them.
ROUTE_MODULES = (webhooks, health, services, versions, deploys, logs, badges, account, oauth, compat)


def all_routes() -> list[BaseRoute]:
    return [route for module in ROUTE_MODULES for route in module.routes]


class Gateway(Starlette):
    """Starlette, with the webhook endpoints called before its middleware and router.

    Every push of every repository comes through `POST /webhooks/*`; matching it here saves the
    exception middlewares and the route table (~5% of the CPU of a webhook). Errors are answered by
    the same handlers, so the error shape is the same; other methods on these paths (405) and every
    other request take the ordinary way."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = webhooks.ENDPOINTS.get(scope["path"])
            if endpoint is not None:
                scope["app"] = self
                try:
                    await endpoint(scope, receive, send)
                except Exception as exc:  # noqa: BLE001 - answered as the exception handlers would
                    handler = next(h for kind, h in EXCEPTION_HANDLERS.items() if isinstance(exc, kind))
                    response = await handler(Request(scope, receive), exc)
                    await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def _seal_older_secrets(store: ReadModelStore, box: SecretBox) -> None:
    """Encrypt the secrets stored in plaintext before encryption at rest (in the background)."""
    try:
        sealed = await run_in_threadpool(seal_stored, store, box)
    except Exception as exc:  # noqa: BLE001 - the next start tries again; they stay readable meanwhile
        log.warning("could not encrypt the older plaintext secrets: %s", exc)
        return
    if sealed:
        log.info("encrypted the secrets of %d older services", sealed)


def create_app(
    settings: Settings | None = None, *, store: ReadModelStore | None = None, bus: EventBus | None = None
) -> Starlette:
    """Build the gateway; connections are made in the lifespan, never at import. `store` and `bus`
    replace the Mongo store and the Kafka bus (unit tests pass an in-memory store and a fake bus)."""
    cfg = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.settings = cfg
        app.state.store = store if store is not None else Store(cfg)
        app.state.bus = bus if bus is not None else BatchingEventBus(cfg, timeout=5.0)
        app.state.repo_index = RepoIndex(app.state.store)
        if not SecretBox.of(cfg).enabled:
            log.warning("secrets_key is not set: repository credentials and webhook secrets are stored in plaintext")
        try:
            await run_in_threadpool(app.state.store.ensure_indexes)
        except Exception as exc:  # noqa: BLE001 - start anyway; /readyz reports the store
            log.warning("could not ensure Mongo indexes at start-up: %s", exc)
        try:
            await app.state.bus.start()
        except BusUnavailable as exc:  # publish() retries; /readyz reports the broker
            log.warning("event broker not reachable at start-up: %s", exc)
        sealing = asyncio.ensure_future(_seal_older_secrets(app.state.store, SecretBox.of(cfg)))
        try:
            yield
        finally:
            sealing.cancel()
            await app.state.bus.stop()
            app.state.store.close()

    app = Gateway(routes=[*all_routes(), *dashboard.routes], lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)
    app.state.settings = cfg
    return app
