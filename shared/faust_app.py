"""Faust plumbing shared by every worker: one app factory, topics by short name, a ready marker."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import faust

from . import fetch_holes
from .events import Event, EventDecodeError, decode
from .settings import Settings

log = logging.getLogger(__name__)


FETCH_MAX_WAIT_MS = 100  # the default of settings.faust_fetch_wait_ms


def _short_fetch_wait(wait_ms: int) -> None:
    """Faust hard-codes fetch_max_wait_ms=1500, and a broker that does not answer a long-poll early
    (Tansu) then adds ~0.75 s per hop on average; a build crosses several hops. The wait comes from
    settings.faust_fetch_wait_ms (the cost is a few more empty fetches per second on an idle consumer;
    figures with and without in bench/RESULTS.md)."""
    from faust.transport.drivers import aiokafka as driver

    cls = driver.AIOKafkaConsumerThread
    cls._fornax_fetch_wait_ms = wait_ms  # type: ignore[attr-defined]
    if getattr(cls, "_fornax_short_wait", False):
        return
    original = cls._create_worker_consumer

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        # Buys ~0.7 s less latency per consumer hop on Tansu; Faust has no setting for it.
        consumer._fetch_max_wait_ms = cls._fornax_fetch_wait_ms  # type: ignore[attr-defined]
        return consumer

    setattr(cls, "_create_worker_consumer", create)  # noqa: B010 - a deliberate, contained patch
    setattr(cls, "_fornax_short_wait", True)  # noqa: B010


def make_app(name: str, settings: Settings, **options: Any) -> faust.App:
    """A Faust app whose consumer group is `fornax-<name>`; topics must already exist (bootstrap)."""
    _short_fetch_wait(settings.faust_fetch_wait_ms)
    fetch_holes.install(settings.fetch_hole_wait)
    app = faust.App(
        f"{settings.topic_prefix}-{name}",
        broker=f"kafka://{settings.kafka_bootstrap}",
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=False,
        topic_disable_leader=True,
        broker_session_timeout=10,
        broker_heartbeat_interval=2,
        broker_commit_every=settings.faust_commit_every,
        broker_commit_interval=settings.faust_commit_interval,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        store="memory://",
        **options,
    )
    ready = Path(settings.data_dir) / "ready" / (os.environ.get("FORNAX_INSTANCE") or name)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mode's handler type matches no function
    async def _mark_ready(sender: Any, assigned: Any, **kwargs: Any) -> None:
        # Tests and `make up` wait for this file: the worker has joined its group.
        ready.parent.mkdir(parents=True, exist_ok=True)
        ready.touch()

    return app


def topic(app: faust.App, settings: Settings, short: str) -> Any:
    return app.topic(
        settings.topic(short), value_type=bytes, key_type=bytes, partitions=settings.topic_partitions
    )


def decoded(raw: bytes) -> Event | None:
    """Decode one record; a malformed one is logged and skipped (never crashes the worker)."""
    try:
        return decode(raw)
    except EventDecodeError as exc:
        log.warning("skipping malformed event: %s", exc)
        return None


def run_worker(app: faust.App, loglevel: str = "info") -> None:
    """Run a Faust worker in the foreground until SIGTERM. SIGUSR1 makes mode (Faust's service library)
    write every asyncio task's stack to the worker's log: where a worker that makes no progress waits."""
    worker = faust.Worker(app, loglevel=loglevel)
    worker.execute_from_commandline()
