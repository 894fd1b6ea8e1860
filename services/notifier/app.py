"""The notifier worker: a Faust agent records wanted commit states from fornax.versions; a task posts them.

    python -m services.notifier
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from pymongo.errors import PyMongoError

from shared.faust_app import decoded, make_app, run_worker, topic
from shared.settings import Settings, get_settings
from shared.store import Store

from . import outbox
from .deliver import Delivery
from .handlers import ROUTES, on_version_event, reconcile

log = logging.getLogger(__name__)


def build_app(settings: Settings) -> faust.App:
    app = make_app("notifier", settings)
    store = Store(settings)

    @app.agent(topic(app, settings, "versions"))
    async def versions(stream: Any) -> None:
        async for raw in stream:
            event = decoded(raw)
            if event is not None and event.type in ROUTES:
                await _retrying(on_version_event, store, event)

    @app.task
    async def deliver() -> None:
        await _retrying(outbox.ensure_indexes, store)
        fixed = await _retrying(reconcile, store)
        if fixed:
            log.info("reconciled %d version(s) that ended while their final status was unrecorded", fixed)
        await Delivery(store, settings.public_url, timeout=settings.commit_status_timeout,
                       max_backoff=settings.commit_status_max_backoff).run()

    return app


async def _retrying(fn: Any, *args: Any) -> Any:
    """Mongo away: wait and try again (an event must not be dropped); any other error is logged."""
    delay = 0.5
    while True:
        try:
            return await asyncio.to_thread(fn, *args)
        except PyMongoError as exc:
            log.warning("%s: %s; retrying in %.1fs", getattr(fn, "__name__", fn), exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)
        except Exception:  # one bad event must not stop the notifier
            log.exception("%s failed", getattr(fn, "__name__", fn))
            return None


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    run_worker(build_app(get_settings()))
