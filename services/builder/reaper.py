"""The reaper: fails versions whose worker died ("worker lost") and removes what finished versions left.

Runs at start and every settings.builder_reap_every seconds. Only objects of versions known to this
installation's read model are touched (the Docker engine may be shared with other installations).
- A `running`/`queued` version not worked on here whose heartbeat (or, without one, its start) is
  older than 1.5 × builder_lost_after is claimed (atomically, so one reaper wins) and failed.
  The extra half gives a redelivered event the chance to resume it first.
- Containers and networks labelled `fornax.version` of versions that are no longer active, and
  workspaces of finished versions, are removed.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from typing import Any

from shared.events import StageFinished, VersionFailed
from shared.events.versions import StageFinishedPayload, VersionFailedPayload

from . import pipeline
from .core import Builder
from .state import ACTIVE, age_of

log = logging.getLogger(__name__)
LABEL = "fornax.version"
ORPHAN_WORKSPACE_AGE = 3600.0


async def reap_lost(b: Builder) -> list[str]:
    limit = 1.5 * b.settings.builder_lost_after
    docs = await asyncio.to_thread(
        lambda: list(b.store.versions.find({"status": {"$in": ["running", "queued"]}},
                                           {"stages": 1, "user_id": 1, "host": 1, "started_at": 1,
                                            "created_at": 1})))
    lost = []
    for doc in docs:
        vid = doc["_id"]
        if vid in b.active:
            continue
        hb = await b.state.heartbeat(vid)
        age = time.time() - float(hb["at"]) if hb else age_of(doc.get("started_at") or doc.get("created_at"))
        if age is None or age < limit:
            continue
        if hb is not None and not await b.state.claim(vid):
            continue  # someone else reaped or resumed it just now
        await fail_lost(b, doc)
        lost.append(vid)
    return lost


async def fail_lost(b: Builder, doc: dict[str, Any]) -> None:
    vid = doc["_id"]
    log.warning("version %s: its worker was lost; failing it", vid)
    stage = None
    events: list[Any] = []
    for name, st in (doc.get("stages") or {}).items():
        if (st or {}).get("status") == "running":
            stage = name
            events.append(StageFinished.make(vid, StageFinishedPayload(stage=name, status="failed",  # type: ignore[arg-type]
                                                                       error="worker lost"), correlation_id=vid))
    await b.remove_leftovers(vid, None)
    if doc.get("user_id"):
        try:
            await pipeline.release(b.store, doc["user_id"], vid)
        except Exception:  # noqa: BLE001,S110 - reclaimed later by the quota itself
            pass
    fresh = await b.state.version(vid)
    if fresh is None or fresh.get("status") in ACTIVE:
        events.append(VersionFailed.make(vid, VersionFailedPayload(reason="worker lost", stage=stage),
                                         correlation_id=vid, actor=doc.get("user_id")))
        await b.emit(*events)
    await b.state.forget(vid)


def _labelled_versions(client: Any) -> set[str]:
    found = set()
    for c in client.containers.list(all=True, filters={"label": LABEL}):
        found.add(c.labels.get(LABEL))
    for n in client.networks.list(filters={"label": LABEL}):
        found.add((n.attrs.get("Labels") or {}).get(LABEL))
    return {v for v in found if v}


async def reap_leftovers(b: Builder) -> list[str]:
    """Remove containers/networks/workspaces of versions this installation knows to be finished."""
    removed: list[str] = []
    for host in b.hosts.hosts:
        try:
            candidates = await asyncio.to_thread(_labelled_versions, b.hosts.client(host))
        except Exception as exc:  # noqa: BLE001 - host down: next round
            log.warning("reaper: docker host %s: %s", host, exc)
            continue
        for vid in candidates - set(b.active):
            doc = await b.state.version(vid)
            if doc is not None and doc.get("status") not in ACTIVE:
                await asyncio.to_thread(b.cleanup, b.hosts.client(host), vid)
                removed.append(vid)
    root = b.settings.workspaces
    if root.is_dir():
        for entry in await asyncio.to_thread(lambda: list(root.iterdir())):
            vid = entry.name
            if vid in b.active or not entry.is_dir():
                continue
            doc = await b.state.version(vid)
            old = time.time() - entry.stat().st_mtime > ORPHAN_WORKSPACE_AGE
            if (doc is not None and doc.get("status") not in ACTIVE) or (doc is None and old):
                await asyncio.to_thread(shutil.rmtree, entry, True)
                removed.append(f"workspace:{vid}")
    # Log writers of versions that finished elsewhere.
    for vid in [v for v in list(b.logs) if v not in b.active]:
        doc = await b.state.version(vid)
        if doc is None or doc.get("status") not in ACTIVE:
            await b.close_log(vid)
    return removed


async def reap_once(b: Builder) -> None:
    try:
        await reap_lost(b)
        await reap_leftovers(b)
    except Exception as exc:  # noqa: BLE001 - next round
        log.warning("reaper: %s", exc)


async def reap_forever(b: Builder) -> None:
    while True:
        await reap_once(b)
        await asyncio.sleep(b.settings.builder_reap_every)
