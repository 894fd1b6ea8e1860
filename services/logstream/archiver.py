"""The log archiver: writes every LogLine into Mongo `logs`, batched with insert_many(ordered=False).

Every logstream instance archives every partition of fornax.logs (assigned by hand) and keeps its position
as the committed offsets of group `fornax-logarchiver`, committed only after the insert; duplicate keys
are ignored, so a replay, or two instances writing the same line, is harmless. Why not a joined consumer
group: on Tansu a (re)join after a restart took 18 s to over a minute, during which nothing was archived;
with manual assignment there is no rebalance at all, at the price of each instance repeating the inserts
(cheap: they are ignored duplicates).

Reading the archive and the group's progress (ArchiveProgress, settle_archive) is in shared/logs_read.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pymongo.errors import BulkWriteError, PyMongoError

from shared import fetch_holes
from shared.events import EventDecodeError, LogLine, decode
from shared.logs_read import group_id
from shared.routing import Router
from shared.settings import Settings
from shared.store import ReadModelStore

log = logging.getLogger(__name__)

SMALL_BATCH = 500


ARCHIVE: Router[Callable[[Any], dict[str, Any]]] = Router("log-archiver")


@ARCHIVE.on(LogLine)
def line_doc(event: LogLine) -> dict[str, Any]:
    """The `logs` document of one LogLine."""
    p = event.payload
    return {
        "_id": f"{p.version_id}:{p.seq:012d}",
        "version_id": p.version_id,
        "seq": p.seq,
        "stage": p.stage,
        "stream": p.stream,
        "text": p.text,
        "ts": p.ts,
    }


def log_doc(raw: bytes | None) -> dict[str, Any] | None:
    """The `logs` document of one fornax.logs record (decoded by shared/events), or None for
    anything else."""
    try:
        event = decode(raw or b"")
    except EventDecodeError:
        log.warning("archiver: skipping malformed log record")
        return None
    doc: dict[str, Any] | None = ARCHIVE.dispatch(event)
    return doc


def insert_lines(store: ReadModelStore, docs: list[dict[str, Any]]) -> int:
    """Insert, ignoring lines already archived; returns how many were new."""
    if not docs:
        return 0
    try:
        return len(store.logs.insert_many(docs, ordered=False).inserted_ids)
    except BulkWriteError as exc:
        other = [e for e in exc.details.get("writeErrors", []) if e.get("code") != 11000]
        if other:
            raise
        return int(exc.details.get("nInserted", 0))


class Archiver:
    def __init__(self, settings: Settings, store: ReadModelStore) -> None:
        self.settings = settings
        self.store = store
        self.consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        # Its own thread: a thousand viewers reading history through the shared pool at once must not
        # hold up the archive they are waiting for.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="log-archiver")

    async def start(self) -> None:
        fetch_holes.install(self.settings.fetch_hole_wait)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=group_id(self.settings),
            enable_auto_commit=False,
            fetch_max_wait_ms=self.settings.log_archive_fetch_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self._task = asyncio.create_task(self._run(), name="logstream-archiver")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.consumer is not None:
            await self.consumer.stop()
        self._writer.shutdown(wait=False)

    async def _assign(self) -> None:
        """Every partition, from the group's committed offset (the earliest line when there is none)."""
        assert self.consumer is not None
        await self.consumer.start()
        topic = self.settings.topic("logs")
        parts = self.consumer.partitions_for_topic(topic)
        while not parts:
            await self.consumer.force_metadata_update()
            parts = self.consumer.partitions_for_topic(topic)
            await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        for tp in tps:
            offset = await self.consumer.committed(tp)
            if offset is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)

    async def _run(self) -> None:
        assert self.consumer is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._assign()
                break
            except Exception:  # broker not there yet
                log.warning("archiver could not start; retrying", exc_info=True)
                await asyncio.sleep(1)
        while True:
            try:
                batches = await self.consumer.getmany(timeout_ms=200, max_records=2000)
            except Exception:  # rebalance or broker blip
                log.exception("archiver fetch failed")
                await asyncio.sleep(0.5)
                continue
            docs = [d for records in batches.values() for d in map(lambda r: log_doc(r.value), records) if d]
            delay = 0.5
            while True:
                try:
                    await loop.run_in_executor(self._writer, insert_lines, self.store, docs)
                    break
                except PyMongoError as exc:  # keep the batch; never commit past unarchived lines
                    log.warning("archiver: Mongo write failed (%s); retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10)
            if 0 < len(docs) < SMALL_BATCH:
                # Live lines go out through the tail; the archive can wait 100 ms to save insert calls.
                await asyncio.sleep(0.1)
            if batches:
                try:
                    await self.consumer.commit({tp: recs[-1].offset + 1 for tp, recs in batches.items()})
                except Exception:  # the lines are stored; a replay would only repeat them
                    log.warning("archiver: commit failed", exc_info=True)
