"""From version events to wanted commit states, and reconciling with the read model after a restart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.events import Event
from shared.routing import Router
from shared.status import VERSION_TERMINAL_STATUSES
from shared.store import ReadModelStore

from . import outbox

ROUTES: Router[Callable[[ReadModelStore, Event], None]] = Router("notifier")


def on_version_event(store: ReadModelStore, event: Event) -> None:
    """Record the commit state this event asks for (idempotent: a repeated event changes nothing);
    events of other types are ignored."""
    ROUTES.dispatch(event, store)


@ROUTES.on("VersionRequested")
def requested(store: ReadModelStore, event: Event) -> None:
    p: Any = event.payload
    outbox.want(store, event.aggregate_id, "pending", service_id=p.service_id, commit=p.commit)


@ROUTES.on("VersionQueued")
def queued(store: ReadModelStore, event: Event) -> None:
    outbox.want(store, event.aggregate_id, "pending", detail=event.payload.reason)


@ROUTES.on("SourceFetched")
def fetched(store: ReadModelStore, event: Event) -> None:
    outbox.want(store, event.aggregate_id, "running", commit=event.payload.commit)


@ROUTES.on("StageStarted")
def stage_started(store: ReadModelStore, event: Event) -> None:
    outbox.want(store, event.aggregate_id, "running", detail=event.payload.stage)


@ROUTES.on("VersionSucceeded")
def succeeded(store: ReadModelStore, event: Event) -> None:
    outbox.want(store, event.aggregate_id, "success", detail="")


@ROUTES.on("VersionFailed")
def failed(store: ReadModelStore, event: Event) -> None:
    outbox.want(store, event.aggregate_id, "failed", detail=event.payload.reason)


@ROUTES.on("VersionCancelled")
def cancelled(store: ReadModelStore, event: Event) -> None:
    outbox.want(store, event.aggregate_id, "cancelled", detail="")


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
