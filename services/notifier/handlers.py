"""From version events to wanted commit states, and reconciling with the read model after a restart."""

from __future__ import annotations

from typing import Any

from shared.events import Event
from shared.status import VERSION_TERMINAL_STATUSES
from shared.store import ReadModelStore

from . import outbox

_FINAL = {"VersionSucceeded": "success", "VersionFailed": "failed", "VersionCancelled": "cancelled"}


def on_version_event(store: ReadModelStore, event: Event) -> None:
    """Record the commit state this event asks for (idempotent: a repeated event changes nothing)."""
    p: Any = event.payload
    vid = event.aggregate_id
    if event.type == "VersionRequested":
        outbox.want(store, vid, "pending", service_id=p.service_id, commit=p.commit)
    elif event.type == "VersionQueued":
        outbox.want(store, vid, "pending", detail=p.reason)
    elif event.type == "SourceFetched":
        outbox.want(store, vid, "running", commit=p.commit)
    elif event.type == "StageStarted":
        outbox.want(store, vid, "running", detail=p.stage)
    elif event.type in _FINAL:
        detail = getattr(p, "reason", "") if event.type == "VersionFailed" else ""
        outbox.want(store, vid, _FINAL[event.type], detail=detail)


def reconcile(store: ReadModelStore) -> int:
    """Versions that ended while their final state was not recorded get it now; returns how many."""
    fixed = 0
    for doc in outbox.unfinished(store):
        version = store.versions.find_one({"_id": doc["_id"]}, {"status": 1, "error": 1, "commit": 1})
        if version and version.get("status") in VERSION_TERMINAL_STATUSES:
            outbox.want(store, doc["_id"], version["status"], commit=version.get("commit"),
                        detail=version.get("error") or "")
            fixed += 1
    return fixed
