"""One loop per process: flags cancelled versions being worked on here and refreshes their heartbeats.

Cancel comes from the read model (the projector marks a version `cancelled` as soon as the gateway's
VersionCancelled arrives): one query for every active version every `every` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .core import Builder

log = logging.getLogger(__name__)


async def watch_once(b: Builder) -> list[str]:
    """Set the cancel flag of active versions that are cancelled; returns their ids."""
    ids = list(b.active)
    if not ids:
        return []
    docs = await asyncio.to_thread(
        lambda: list(b.store.versions.find({"_id": {"$in": ids}, "status": "cancelled"}, {"_id": 1}))
    )
    flagged = []
    for doc in docs:
        act = b.active.get(doc["_id"])
        if act is not None and not act.cancelled.is_set():
            log.info("version %s cancelled: stopping it", doc["_id"])
            act.cancelled.set()
            flagged.append(doc["_id"])
    return flagged


async def watch_forever(b: Builder, every: float = 0.5, beat_every: float = 3.0) -> None:
    last_beat = 0.0
    while True:
        try:
            await watch_once(b)
            if time.monotonic() - last_beat >= beat_every:
                last_beat = time.monotonic()
                await b.state.beat(list(b.active))
        except Exception as exc:  # noqa: BLE001 - Mongo hiccup: try again next round
            log.warning("watch loop: %s", exc)
        await asyncio.sleep(every)
