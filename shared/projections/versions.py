"""Folds of version events into `versions`."""

from __future__ import annotations

from typing import Any

from ..events import Event
from ..store import ReadModelStore
from .registry import _ts, folds

TERMINAL = ["success", "failed", "cancelled"]
STAGE_DONE = ["success", "failed", "skipped", "cancelled"]


# -- versions ----------------------------------------------------------------------------------
def _version(store: ReadModelStore, e: Event, changes: dict[str, Any], *, only_from: list[str] | None = None) -> None:
    """Set fields on a version; with `only_from`, only while its status is one of those."""
    query: dict[str, Any] = {"_id": e.aggregate_id}
    if only_from is not None:
        query["status"] = {"$in": only_from}
    store.versions.update_one(query, {"$set": changes})


def requested_fields(e: Event) -> dict[str, Any]:
    """What a VersionRequested says of its version (the fold's fields, and the builder's stand-in for a
    version the read model does not show yet)."""
    p: Any = e.payload
    return {
        "service_id": p.service_id,
        "user_id": p.user_id,
        "name": p.name,
        "description": p.description,
        "commit": p.commit,
        "branch": p.branch,
        "trigger": p.trigger,
        "operations": p.operations,
    }


@folds("VersionRequested")
def version_requested(store: ReadModelStore, e: Event) -> None:
    store.versions.update_one(
        {"_id": e.aggregate_id},
        {
            "$setOnInsert": {"status": "pending", "stages": {}},
            "$set": {**requested_fields(e), "delivery_id": e.payload.delivery_id, "created_at": _ts(e)},
        },
        upsert=True,
    )


@folds("VersionQueued")
def version_queued(store: ReadModelStore, e: Event) -> None:
    # From running too: the builder knows a version's demand only after the clone (its config file), so
    # it may wait for quota after StageStarted(clone); the next StageStarted sets it running again.
    _version(store, e, {"status": "queued", "queued_reason": e.payload.reason},
             only_from=["pending", "queued", "running"])


@folds("SourceFetched")
def source_fetched(store: ReadModelStore, e: Event) -> None:
    p = e.payload
    _version(store, e, {"commit": p.commit, "host": p.host, **({"branch": p.branch} if p.branch else {})})
    _version(store, e, {"status": "running", "started_at": _ts(e)}, only_from=["pending", "queued"])


@folds("StageStarted")
def stage_started(store: ReadModelStore, e: Event) -> None:
    stage = e.payload.stage
    store.versions.update_one(
        {"_id": e.aggregate_id, f"stages.{stage}.status": {"$nin": STAGE_DONE}},
        {"$set": {f"stages.{stage}.status": "running", f"stages.{stage}.start": _ts(e)}},
    )
    _version(store, e, {"status": "running", "started_at": _ts(e)}, only_from=["pending", "queued"])


@folds("StageFinished")
def stage_finished(store: ReadModelStore, e: Event) -> None:
    p = e.payload
    _version(
        store,
        e,
        {
            f"stages.{p.stage}.status": p.status,
            f"stages.{p.stage}.end": _ts(e),
            f"stages.{p.stage}.error": p.error,
        },
    )


@folds("ImageBuilt")
def image_built(store: ReadModelStore, e: Event) -> None:
    p = e.payload
    _version(store, e, {"image": p.image, "image_id": p.image_id, "host": p.host})


@folds("ImagePushed")
def image_pushed(store: ReadModelStore, e: Event) -> None:
    _version(store, e, {"image": e.payload.image, "digest": e.payload.digest})


@folds("VersionTagged")
def version_tagged(store: ReadModelStore, e: Event) -> None:
    _version(store, e, {"tag": e.payload.tag, "commit": e.payload.commit})


@folds("VersionSucceeded")
def version_succeeded(store: ReadModelStore, e: Event) -> None:
    p = e.payload
    extra = {k: v for k, v in (("image", p.image), ("digest", p.digest)) if v}
    _version(store, e, {"status": "success", "finished_at": _ts(e), "error": None, **extra},
             only_from=["pending", "queued", "running"])


@folds("VersionFailed")
def version_failed(store: ReadModelStore, e: Event) -> None:
    _version(
        store,
        e,
        {"status": "failed", "finished_at": _ts(e), "error": e.payload.reason, "failed_stage": e.payload.stage},
        only_from=["pending", "queued", "running"],
    )


@folds("VersionCancelled")
def version_cancelled(store: ReadModelStore, e: Event) -> None:
    _version(
        store,
        e,
        {"status": "cancelled", "finished_at": _ts(e), "error": e.payload.reason},
        only_from=["pending", "queued", "running"],
    )
