"""The log archiver: writes every LogLine into Mongo `logs`, batched with insert_many(ordered=False).

Every logstream instance archives every partition of fornax.logs (assigned by hand) and keeps its position
as the committed offsets of group `fornax-logarchiver`, committed only after the insert; duplicate keys
are ignored, so a replay, or two instances writing the same line, is harmless. Why not a joined consumer
group: on Tansu a (re)join after a restart took 18 s to over a minute, during which nothing was archived;
with manual assignment there is no rebalance at all, at the price of each instance repeating the inserts
(cheap: they are ignored duplicates)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pymongo.errors import BulkWriteError, PyMongoError

from shared.settings import Settings
from shared.store import Store

log = logging.getLogger(__name__)

GROUP = "logarchiver"
SMALL_BATCH = 500


def group_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}-{GROUP}"


def log_doc(raw: bytes | None) -> dict[str, Any] | None:
    """The `logs` document of one LogLine record, or None for anything else."""
    try:
        event = json.loads(raw or b"")
        if event.get("type") != "LogLine":
            return None
        p = event["payload"]
        seq = int(p["seq"])
        return {
            "_id": f"{p['version_id']}:{seq:012d}",
            "version_id": p["version_id"],
            "seq": seq,
            "stage": p["stage"],
            "stream": p.get("stream", "stdout"),
            "text": p["text"],
            "ts": p["ts"],
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("archiver: skipping malformed log record")
        return None


def insert_lines(store: Store, docs: list[dict[str, Any]]) -> int:
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
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        # Its own thread: a thousand viewers reading history through the shared pool at once must not
        # hold up the archive they are waiting for.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="log-archiver")

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=group_id(self.settings),
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
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


class ArchiveProgress:
    """The archiver group's committed offsets, read at most every 50 ms however many callers ask.

    A consumer that names the group but never subscribes only fetches offsets (it does not join the group;
    Tansu does not answer the admin client's OffsetFetch, the consumer's works)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._at = 0.0
        self._committed: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=group_id(self.settings),
            enable_auto_commit=False,
        )
        await self.consumer.start()

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def committed(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        asked = time.monotonic()
        async with self._lock:
            if self._at >= asked - 0.05 and all(tp in self._committed for tp in tps):
                return self._committed
            assert self.consumer is not None
            at = time.monotonic()
            found = await asyncio.gather(*(self.consumer.committed(tp) for tp in tps))
            self._committed = {tp: -1 if off is None else off for tp, off in zip(tps, found, strict=True)}
            self._at = at
            return self._committed

    async def wait(self, ends: dict[TopicPartition, int], timeout: float = 10.0) -> bool:
        """Wait until the group has committed (so stored) every fornax.logs offset below `ends`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                committed = await self.committed(list(ends))
                if all(end == 0 or committed.get(tp, -1) >= end for tp, end in ends.items()):
                    return True
            except Exception:  # group not there yet, broker blip
                log.debug("archiver offsets not readable yet", exc_info=True)
            if time.monotonic() >= deadline:
                if timeout:
                    log.warning("log archiver did not catch up within %.1fs", timeout)
                return False
            await asyncio.sleep(0.05)


async def log_end_offsets(settings: Settings) -> dict[TopicPartition, int]:
    """The current end offset of every fornax.logs partition (a short-lived client, for the gateway)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(settings.topic("logs")) or set()
        tps = [TopicPartition(settings.topic("logs"), p) for p in sorted(parts)]
        return await consumer.end_offsets(tps) if tps else {}
    finally:
        await consumer.stop()


async def settle_archive(settings: Settings, timeout: float = 10.0) -> bool:
    """Wait until every line written so far is in Mongo `logs` (best effort: False after `timeout`)."""
    try:
        ends = await asyncio.wait_for(log_end_offsets(settings), timeout)
    except Exception:  # no broker: what is archived is all we can give
        log.warning("could not read fornax.logs end offsets", exc_info=True)
        return False
    progress = ArchiveProgress(settings)
    await progress.start()
    try:
        return await progress.wait(ends, timeout)
    finally:
        await progress.close()
