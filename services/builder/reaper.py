"""The reaper: resumes versions whose worker died, fails them ("worker lost") when resuming keeps
failing, and removes what finished versions left.

Runs at start and every settings.builder_reap_every seconds. Only objects of versions known to this
installation's read model are touched (the Docker engine may be shared with other installations).
- An active (pending/queued/running) version not worked on here whose heartbeat (or, without one,
  its creation) is older than builder_lost_after is claimed (atomically: one worker wins) and resumed
  through the coordinator at its next step from the read model: tag if pushed, push if built, else
  the build from the clone. This does not rely on Kafka redelivering the event (Faust may skip events fetched during
  a rebalance). After MAX_TAKEOVERS takeovers the version fails with "worker lost".
- Containers and networks labelled `fornax.version` of versions that are no longer active, and
  workspaces of finished versions, are removed.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from typing import Any

from shared.events import EventDecodeError, StageFinished, VersionFailed, decode
from shared.events.versions import StageFinishedPayload, VersionFailedPayload
from shared.status import VERSION_ACTIVE_STATUSES

from . import coordinator
from .core import Active, Builder
from .state import age_of

log = logging.getLogger(__name__)
LABEL = "fornax.version"
ORPHAN_WORKSPACE_AGE = 3600.0
MAX_TAKEOVERS = 2


async def reap_lost(b: Builder) -> list[str]:
    """Take over active versions nobody works on: resume them at their next step, or fail them
    ("worker lost") once they were taken over MAX_TAKEOVERS times already. Returns their ids."""
    limit = b.settings.builder_lost_after
    docs = await b.state.active_versions()
    taken = []
    for doc in docs:
        vid = doc["_id"]
        if vid in b.active or vid in b.resuming:
            continue
        if len(b.resuming) >= b.settings.builder_concurrency:
            break  # resume at most as many at once as the agents build; the rest next round
        hb = await b.state.heartbeat(vid)
        if hb and hb.get("state") == "done":
            # It ended; the read model has not shown it yet (the projector lags or restarts) — or its
            # worker died between marking it done and publishing its end: publish that end again (the
            # same event, by id: a repeat is one event to every consumer), at most every `limit` seconds.
            if hb.get("end") and time.time() - float(hb.get("at") or 0) > limit:
                await _publish_end(b, vid, hb["end"])
            continue
        age = time.time() - float(hb["at"]) if hb else age_of(doc.get("started_at") or doc.get("created_at"))
        if age is None or age < limit:
            continue
        # Marked as worked on here before the claim: an agent of this process that picks the version up
        # meanwhile skips it, instead of running under a claim this one would then take from it.
        reserved = b.begin(vid)
        if reserved is None:
            continue
        try:
            if not await b.state.claim(vid):
                b.end(vid)
                continue  # someone else resumed or reaped it just now
            taken.append(vid)
            if await b.state.count_takeover(vid) > MAX_TAKEOVERS:
                b.end(vid)
                await fail_lost(b, doc)
                continue
        except BaseException:
            b.end(vid)
            raise
        log.warning("version %s: no worker for %.0fs; resuming it here", vid, age)
        b.resuming.add(vid)
        task = asyncio.create_task(_resume(b, doc, reserved))
        task.add_done_callback(_done_resuming(b, vid))
    return taken


def _done_resuming(b: Builder, vid: str) -> Any:
    def done(_task: Any) -> None:
        b.resuming.discard(vid)

    return done


async def _resume(b: Builder, doc: dict[str, Any], reserved: Active) -> None:
    """Run the version from its next step, as if that step's event had just been delivered."""
    try:
        await coordinator.handle(b, coordinator.resume_event(doc, b.hosts.hosts[0]), reserved)
    except Exception:
        b.end(doc["_id"])  # (a no-op when the run got as far as ending it itself)
        log.exception("version %s: resume failed", doc["_id"])


async def _publish_end(b: Builder, vid: str, end: dict[str, Any]) -> None:
    try:
        event = decode(end)
    except EventDecodeError:
        log.warning("version %s: the end noted on its claim is unreadable", vid)
        return
    log.warning("version %s: ended, but its end is not in the read model yet; publishing it again", vid)
    await b.emit(event)
    await b.state.touch_done(vid)


async def fail_lost(b: Builder, doc: dict[str, Any]) -> None:
    vid = doc["_id"]
    log.warning("version %s: its worker was lost; failing it", vid)
    stage = None
    events: list[Any] = []
    for name, st in (doc.get("stages") or {}).items():
        if (st or {}).get("status") == "running":
            stage = name
            events.append(
                StageFinished.make(
                    vid,
                    StageFinishedPayload(
                        stage=name,
                        status="failed",  # type: ignore[arg-type]
                        error="worker lost",
                    ),
                    correlation_id=vid,
                )
            )
    await b.remove_leftovers(vid, None)
    if doc.get("user_id"):
        try:
            await b.quotas.release(doc["user_id"], vid)
        except Exception:  # noqa: BLE001 - reclaimed later by the quota itself
            pass
    fresh = await b.state.version(vid)
    if fresh is None or fresh.get("status") in VERSION_ACTIVE_STATUSES:
        events.append(
            VersionFailed.make(
                vid,
                VersionFailedPayload(reason="worker lost", stage=stage),
                correlation_id=vid,
                actor=doc.get("user_id"),
            )
        )
        await b.emit(*events)
    await b.state.finish_claim(vid)


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
            if doc is not None and doc.get("status") not in VERSION_ACTIVE_STATUSES:
                await asyncio.to_thread(b.cleanup, b.hosts.client(host), vid)
                removed.append(vid)
    root = b.settings.workspaces
    if root.is_dir():
        for entry in await asyncio.to_thread(lambda: list(root.iterdir())):
            vid = entry.name.removesuffix(".git")  # a workspace's git directory lies beside it
            if vid in b.active or not entry.is_dir():
                continue
            doc = await b.state.version(vid)
            old = time.time() - entry.stat().st_mtime > ORPHAN_WORKSPACE_AGE
            if (doc is not None and doc.get("status") not in VERSION_ACTIVE_STATUSES) or (doc is None and old):
                await asyncio.to_thread(shutil.rmtree, entry, True)
                removed.append(f"workspace:{vid}")
    # Claims of versions that ended, once the read model shows the end.
    for vid in await b.state.done_claims():
        doc = await b.state.version(vid)
        if doc is None or doc.get("status") not in VERSION_ACTIVE_STATUSES:
            await b.state.drop_claim(vid)
    # Log writers of versions that finished elsewhere.
    for vid in [v for v in list(b.logs) if v not in b.active]:
        doc = await b.state.version(vid)
        if doc is None or doc.get("status") not in VERSION_ACTIVE_STATUSES:
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
