"""The Kafka tail of one logstream instance: every partition of fornax.logs (and fornax.versions, for the
end of a version), assigned by hand without a consumer group and read from the end, so each instance
sees every line of every version. Lines go to the hub, which never blocks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared import fetch_holes
from shared.events import Event, EventDecodeError, LogLine, decode
from shared.routing import Router
from shared.settings import Settings

from .hub import Hub

log = logging.getLogger(__name__)

OUTCOMES = {"VersionSucceeded": "success", "VersionFailed": "failed", "VersionCancelled": "cancelled"}
_LINE_FIELDS = ("seq", "stage", "stream", "text", "ts")


class Tail:
    def __init__(self, settings: Settings, hub: Hub) -> None:
        self.settings = settings
        self.hub = hub
        self.logs_topic = settings.topic("logs")
        self.versions_topic = settings.topic("versions")
        self.consumer: AIOKafkaConsumer | None = None
        self.log_partitions: list[TopicPartition] = []
        # Next offset this instance will hand to the hub, per fornax.logs partition.
        self.positions: dict[TopicPartition, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._snapshot_lock = asyncio.Lock()
        self._snapshot: tuple[float, dict[TopicPartition, int]] = (0.0, {})
        # Lines go to their viewers; a version's end closes its live streams.
        self.routes: Router[Callable[[Any], None]] = Router("logstream-tail")
        self.routes.add(self._line, LogLine)
        self.routes.add(self._finished, *OUTCOMES)

    async def start(self) -> None:
        fetch_holes.install(self.settings.fetch_hole_wait)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=self.settings.log_fetch_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        tps: list[TopicPartition] = []
        for topic in (self.logs_topic, self.versions_topic):
            parts = consumer.partitions_for_topic(topic)
            for _ in range(50):
                if parts:
                    break
                await consumer.force_metadata_update()
                parts = consumer.partitions_for_topic(topic)
                await asyncio.sleep(0.2)
            if not parts:
                raise RuntimeError(f"topic {topic} does not exist (bootstrap the topics first)")
            tps += [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        self.log_partitions = [tp for tp in tps if tp.topic == self.logs_topic]
        for tp in self.log_partitions:
            self.positions[tp] = await consumer.position(tp)
        for tp in tps:
            if tp.topic != self.logs_topic:
                await consumer.position(tp)
        self.consumer = consumer
        self._task = asyncio.create_task(self._run(), name="logstream-tail")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.consumer is not None:
            await self.consumer.stop()

    async def _run(self) -> None:
        assert self.consumer is not None
        while True:
            try:
                batches = await self.consumer.getmany(timeout_ms=200, max_records=5000)
            except Exception:  # broker blip: keep tailing
                log.exception("tail fetch failed")
                await asyncio.sleep(0.5)
                continue
            for tp, records in batches.items():
                if tp.topic == self.logs_topic:
                    for rec in records:
                        self._dispatch_line(rec.value)
                    self.positions[tp] = records[-1].offset + 1
                else:
                    for rec in records:
                        self._dispatch_version(rec.value)

    def _dispatch_line(self, raw: bytes | None) -> None:
        self._dispatch(raw, "skipping malformed log record")

    def _dispatch_version(self, raw: bytes | None) -> None:
        self._dispatch(raw, None)

    def _dispatch(self, raw: bytes | None, malformed: str | None) -> None:
        try:
            event = decode(raw or b"")
        except EventDecodeError:
            if malformed:
                log.warning(malformed)
            return
        self.routes.dispatch(event)

    def _line(self, event: LogLine) -> None:
        p = event.payload
        self.hub.publish(p.version_id, {name: getattr(p, name) for name in _LINE_FIELDS})

    def _finished(self, event: Event) -> None:
        self.hub.finish(event.aggregate_id, OUTCOMES[event.type], getattr(event.payload, "log_seq", None))

    async def end_offsets(self) -> dict[TopicPartition, int]:
        """End offsets of fornax.logs taken after this call began (one broker request serves many callers)."""
        asked = time.monotonic()
        async with self._snapshot_lock:
            taken, ends = self._snapshot
            if taken >= asked:
                return ends
            assert self.consumer is not None
            started = time.monotonic()
            ends = await self.consumer.end_offsets(self.log_partitions)
            self._snapshot = (started, ends)
            return ends

    async def caught_up(self, timeout: float = 5.0) -> dict[TopicPartition, int]:
        """Wait until every line written before this call has been handed to the hub; returns the ends."""
        ends = await self.end_offsets()
        deadline = time.monotonic() + timeout
        while any(self.positions.get(tp, 0) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                log.warning("tail did not catch up within %.1fs", timeout)
                break
            await asyncio.sleep(0.01)
        return ends
