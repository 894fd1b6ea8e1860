"""The log archiver: consumer group `fornax-logarchiver` (one share of the partitions per logstream
instance) writes every LogLine into Mongo `logs`, batched with insert_many(ordered=False). Offsets are
committed only after the insert, and duplicate keys are ignored, so a replay after a crash is harmless."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pymongo.errors import BulkWriteError, PyMongoError

from shared.settings import Settings
from shared.store import Store

log = logging.getLogger(__name__)

GROUP = "logarchiver"


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
        return {"_id": f"{p['version_id']}:{seq:012d}", "version_id": p["version_id"], "seq": seq,
                "stage": p["stage"], "stream": p.get("stream", "stdout"), "text": p["text"], "ts": p["ts"]}
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

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            self.settings.topic("logs"),
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=group_id(self.settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10000,
            heartbeat_interval_ms=2000,
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await self.consumer.start()
        self._task = asyncio.create_task(self._run(), name="logstream-archiver")

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
                batches = await self.consumer.getmany(timeout_ms=200, max_records=2000)
            except Exception:  # noqa: BLE001 - rebalance or broker blip
                log.exception("archiver fetch failed")
                await asyncio.sleep(0.5)
                continue
            docs = [d for records in batches.values() for d in map(lambda r: log_doc(r.value), records) if d]
            delay = 0.5
            while True:
                try:
                    await asyncio.to_thread(insert_lines, self.store, docs)
                    break
                except PyMongoError as exc:  # keep the batch; never commit past unarchived lines
                    log.warning("archiver: Mongo write failed (%s); retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10)
            if batches:
                try:
                    await self.consumer.commit({tp: recs[-1].offset + 1 for tp, recs in batches.items()})
                except Exception:  # noqa: BLE001 - a rebalance: the next owner replays (harmless)
                    log.warning("archiver: commit failed", exc_info=True)


async def wait_archived(settings: Settings, ends: dict[TopicPartition, int], timeout: float = 10.0,
                        admin: AIOKafkaAdminClient | None = None) -> bool:
    """Wait until the archiver group has committed (so stored) every fornax.logs offset below `ends`."""
    own = admin is None
    if admin is None:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=5000)
        await admin.start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                committed = await admin.list_consumer_group_offsets(group_id(settings))
                if all(end == 0 or (tp in committed and committed[tp].offset >= end) for tp, end in ends.items()):
                    return True
            except Exception:  # noqa: BLE001 - group not there yet, broker blip
                log.debug("archiver offsets not readable yet", exc_info=True)
            if time.monotonic() > deadline:
                log.warning("log archiver did not catch up within %.1fs", timeout)
                return False
            await asyncio.sleep(0.05)
    finally:
        if own:
            await admin.close()
