"""Reading the log archive (Mongo `logs`, written by the logstream's archiver), for the logstream and the
gateway's REST log routes.

- Lines and versions (blocking pymongo calls: run them with `asyncio.to_thread`): `read_lines`,
  `count_lines`, `version_info`, `statuses`.
- The archiver's progress: the committed offsets of its group on fornax.logs (`ArchiveProgress`), and
  `settle_archive`, which waits until every line written so far is stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared import fetch_holes
from shared.settings import Settings
from shared.store import ReadModelStore

log = logging.getLogger(__name__)

GROUP = "logarchiver"


def group_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}-{GROUP}"


LINE_FIELDS = ("seq", "stage", "stream", "text", "ts")
_PROJECTION = {"_id": 0, **{f: 1 for f in LINE_FIELDS}}


def line_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The wire form of one line: {seq, stage, stream, text, ts}."""
    return {f: doc.get(f) for f in LINE_FIELDS}


def read_lines(
    store: ReadModelStore, version_id: str, since: int = 0, limit: int = 0, until: int | None = None
) -> list[dict[str, Any]]:
    """Archived lines with since < seq (<= until), in sequence order; `limit` 0 means all."""
    seq: dict[str, int] = {"$gt": since}
    if until is not None:
        seq["$lte"] = until
    cursor = store.logs.find({"version_id": version_id, "seq": seq}, _PROJECTION).sort("seq", 1)
    if limit:
        cursor = cursor.limit(limit)
    return [line_of(d) for d in cursor]


def count_lines(store: ReadModelStore, version_id: str) -> int:
    return store.logs.count_documents({"version_id": version_id})


def version_info(store: ReadModelStore, version_id: str) -> dict[str, Any] | None:
    """{user_id, service_id, status} of a version, or None when it is unknown."""
    return store.versions.find_one({"_id": version_id}, {"user_id": 1, "service_id": 1, "status": 1})


def statuses(store: ReadModelStore, version_ids: list[str]) -> dict[str, str]:
    """Current status of each known version (one query, for the fallback poll)."""
    if not version_ids:
        return {}
    return {
        d["_id"]: d.get("status", "")
        for d in store.versions.find({"_id": {"$in": version_ids}}, {"status": 1})
    }


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
        fetch_holes.install(self.settings.fetch_hole_wait)
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

    async def wait(self, ends: dict[TopicPartition, int], timeout: float = 10.0, warn: bool = True) -> bool:
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
                if timeout and warn:
                    log.warning("log archiver did not catch up within %.1fs", timeout)
                return False
            await asyncio.sleep(0.05)


    async def level(self, tps: list[TopicPartition]) -> int | None:
        """How far the archiver got (its committed offsets summed); None while they cannot be read."""
        try:
            committed = await self.committed(tps)
        except Exception:  # noqa: BLE001 - broker restarting: no progress to see
            return None
        return sum(max(0, committed.get(tp, -1)) for tp in tps)

    async def wait_advancing(self, ends: dict[TopicPartition, int], stall: float, bound: float) -> bool:
        """`wait`, for as long as the archiver keeps advancing: False once it stood still for `stall`
        seconds (a broker or store restart is a pause, not an end) or after `bound` seconds in all."""
        began = time.monotonic()
        progress = Stall(stall)
        while True:
            if await self.wait(ends, timeout=min(1.0, stall), warn=False):
                return True
            now = time.monotonic()
            if progress.stalled(await self.level(list(ends)), now) or now - began > bound:
                log.warning("log archiver did not catch up (stood still %.0fs, %.0fs in all)",
                            now - progress.since, now - began)
                return False


class Stall:
    """Tells progress from standing still: `stalled(level, now)` is True once `level` has not risen for
    `seconds` (None counts as not risen)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.best: int | None = None
        self.since = time.monotonic()

    def stalled(self, level: int | None, now: float) -> bool:
        if level is not None and (self.best is None or level > self.best):
            self.best, self.since = level, now
        return now - self.since > self.seconds


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
