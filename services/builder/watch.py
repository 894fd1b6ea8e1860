"""One loop per process: flags cancelled versions being worked on here and refreshes their heartbeats;
a run whose claim another worker took over (this process stalled past builder_lost_after) is stopped
at the next heartbeat (`fence_once`).

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
    flagged = []
    for vid in await b.state.cancelled(ids):
        act = b.active.get(vid)
        if act is not None and not act.cancelled.is_set():
            log.info("version %s cancelled: stopping it", vid)
            act.cancelled.set()
            flagged.append(vid)
    return flagged


async def fence_once(b: Builder) -> list[str]:
    """Stop the runs here whose claim was taken over (flagged lost and cancelled); returns their ids."""
    epochs = {vid: act.epoch for vid, act in list(b.active.items()) if act.epoch is not None and not act.lost}
    lost = await b.state.lost_claims(epochs)
    for vid in lost:
        act = b.active.get(vid)
        if act is not None and act.epoch == epochs[vid]:
            log.warning("version %s: claim epoch %s was taken over by another worker; stopping it here",
                        vid, act.epoch)
            act.lost = True
            act.cancelled.set()
    return sorted(lost)


async def watch_forever(b: Builder, every: float = 0.5, beat_every: float = 3.0) -> None:
    last_beat = 0.0
    while True:
        try:
            await watch_once(b)
            if time.monotonic() - last_beat >= beat_every:
                last_beat = time.monotonic()
                await b.state.beat(list(b.active))
                await fence_once(b)
        except Exception as exc:  # noqa: BLE001 - Mongo hiccup: try again next round
            log.warning("watch loop: %s", exc)
        await asyncio.sleep(every)
