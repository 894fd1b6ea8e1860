"""The projector worker (its own process): folds every event into the Mongo read models, and runs the
trigger agent that turns pushes into version requests.

    python -m services.projector                  # the worker
    fornax projections rebuild                    # drop the read models, fold the archive again
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from typing import Any

from pymongo.errors import AutoReconnect, ConnectionFailure

from shared.bus import EventBus, publish_retrying
from shared.events import Event, PushReceived, decode
from shared.faust_app import decoded, make_app, run_worker
from shared.projections import apply, rebuild
from shared.routing import Router
from shared.settings import Settings, get_settings
from shared.store import ReadModelStore, Store

from .trigger import mark_emitted, mark_reservation_emitted, plan_version, unemitted

log = logging.getLogger(__name__)


def _with_retry(fn: Any, *args: Any) -> Any:
    """Retry while Mongo is unreachable (events must not be skipped because Mongo blinked)."""
    delay = 0.5
    while True:
        try:
            return fn(*args)
        except (AutoReconnect, ConnectionFailure) as exc:
            log.warning("Mongo unavailable (%s); retrying in %.1fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10)


def project_batch(store: ReadModelStore, records: list[tuple[Event, dict[str, Any]]]) -> None:
    for event, position in records:
        try:
            _with_retry(apply, store, event, position)
        except (AutoReconnect, ConnectionFailure):
            raise
        except Exception:  # one bad event must not stop the projector
            log.exception("could not project %s %s", event.type, event.event_id)


async def trigger(store: ReadModelStore, bus: Any, push: Event) -> None:
    """Plan, publish (retrying while the broker is down), then mark: a crash in between re-publishes
    the same event (harmless: the version id is the delivery's)."""
    version = await asyncio.to_thread(_with_retry, plan_version, store, push)
    if version is None:
        return
    # Retried for as long as the broker is away: the push is acknowledged only after this (a push
    # answered 202 must not vanish).
    await publish_retrying(bus, version)
    await asyncio.to_thread(_with_retry, mark_emitted, store, push)


TRIGGERS: Router[Any] = Router("projector-trigger")  # the trigger agent's table (fornax.webhooks)
TRIGGERS.add(trigger, PushReceived)


async def resend_unemitted(store: ReadModelStore, bus: Any, older_than: float) -> list[str]:
    """Publish the planned version requests still unpublished after `older_than` seconds (a crash or
    an outage between planning and publishing); returns their version ids."""
    sent = []
    for key, version in await asyncio.to_thread(unemitted, store, older_than):
        await bus.publish(version)
        await asyncio.to_thread(mark_reservation_emitted, store, key)
        log.warning("version %s: request re-published for %s", version.aggregate_id, key)
        sent.append(version.aggregate_id)
    return sent


def build_app(settings: Settings) -> Any:
    app = make_app("projector", settings)
    store = Store(settings)
    bus = EventBus(settings)
    topics = app.topic(
        *(settings.topic(t) for t in ("services", "versions", "deploys", "webhooks")),
        value_type=bytes,
        key_type=bytes,
    )
    webhooks = app.topic(settings.topic("webhooks"), value_type=bytes, key_type=bytes)

    @app.task
    async def _indexes() -> None:
        await asyncio.to_thread(_with_retry, store.ensure_indexes)

    @app.agent(topics)
    async def project(stream: Any) -> None:
        async for batch in stream.take_events(200, within=0.01):
            records = []
            for ev in batch:
                event = decoded(ev.value)
                if event is not None:
                    msg = ev.message
                    records.append((event, {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}))
            if records:
                await asyncio.to_thread(project_batch, store, records)

    @app.task
    async def _resend() -> None:
        while True:  # at start, then every trigger_resend_every seconds
            try:
                await resend_unemitted(store, bus, settings.trigger_resend_after)
            except Exception as exc:  # noqa: BLE001 - broker or Mongo still down: next round
                log.warning("re-publishing unemitted version requests: %s", exc)
            await asyncio.sleep(settings.trigger_resend_every)

    @app.agent(webhooks)
    async def trigger_versions(stream: Any) -> None:
        async for raw in stream:
            event = decoded(raw)
            if event is not None and event.type in TRIGGERS:
                try:
                    await TRIGGERS.adispatch(event, store, bus)
                except Exception:
                    log.exception("trigger failed for delivery %s", event.payload.delivery_id)

    return app


def projections_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fornax projections")
    parser.add_argument("command", choices=["rebuild"])
    parser.parse_args(argv)
    store = Store(get_settings())
    count = rebuild(store, decode)
    print(f"rebuilt services, versions, deployments, targets from {count} archived events")
    return 0


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    run_worker(build_app(get_settings()))


if __name__ == "__main__":
    main()
