"""Folds events into the Mongo read models. Every fold is idempotent: it sets values taken from the
event (never from the clock), and status changes are guarded so a replayed or late event cannot move
a version or deployment backwards. Replaying one event or the whole log changes nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from .events import Event
from .store import PROJECTIONS, Store

log = logging.getLogger(__name__)

TERMINAL = ["success", "failed", "cancelled"]
DEPLOY_TERMINAL = ["success", "failed", "skipped"]
STAGE_DONE = ["success", "failed", "skipped", "cancelled"]

def _ts(e: Event) -> str:
    # Read-model times are ISO-8601 UTC strings: they sort correctly, and nx-27017 turns a datetime
    # written by `$set` on an existing document into a naive string, so one type everywhere is safer.
    at = e.occurred_at.astimezone(UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000).isoformat(timespec="milliseconds")


Fold = Callable[[Store, Event], None]
FOLDS: dict[str, Fold] = {}


def folds(*types: str) -> Callable[[Fold], Fold]:
    def register(fn: Fold) -> Fold:
        for t in types:
            FOLDS[t] = fn
        return fn

    return register


def apply(store: Store, event: Event, position: dict[str, Any] | None = None) -> None:
    """Fold one event into the read models, then archive it (log lines are archived elsewhere)."""
    fold = FOLDS.get(event.type)
    if fold is not None:
        fold(store, event)
    if event.type != "LogLine":
        archive(store, event, position)


def archive(store: Store, event: Event, position: dict[str, Any] | None = None) -> None:
    doc = event.to_doc()
    if position:
        doc["_pos"] = position
    # When it was folded: a rebuild replays in this order, which is the order the read models saw (an
    # event's own occurred_at may be older than one folded before it: another producer, a clock skew).
    doc["_applied"] = time.time()
    try:
        store.events.insert_one(doc)
    except DuplicateKeyError:
        pass  # already archived: at-least-once delivery


# -- services ----------------------------------------------------------------------------------
@folds("ServiceCreated")
def service_created(store: Store, e: Event) -> None:
    p = e.payload
    store.services.update_one(
        {"_id": e.aggregate_id},
        {
            "$setOnInsert": {"status": "accepted", "status_message": "", "deleted": False},
            "$set": {
                "user_id": p.user_id,
                "name": p.name,
                "description": p.description,
                "repository": p.repository.model_dump(),
                "config_file": p.config_file,
                "deploy_targets": p.deploy_targets,
                "secret_names": p.secret_names,
                "public": p.public,
                "commit_status": p.commit_status.model_dump() if p.commit_status else None,
                "created_at": _ts(e),
                "updated_at": _ts(e),
            },
        },
        upsert=True,
    )


@folds("RepositoryChecked")
def repository_checked(store: Store, e: Event) -> None:
    store.services.update_one(
        {"_id": e.aggregate_id},
        {"$set": {"status": e.payload.status, "status_message": e.payload.message, "checked_at": _ts(e)}},
    )


@folds("ServiceUpdated")
def service_updated(store: Store, e: Event) -> None:
    p = e.payload
    changes: dict[str, Any] = {"updated_at": _ts(e)}
    if p.description is not None:
        changes["description"] = p.description
    if p.repository is not None:
        changes["repository"] = p.repository.model_dump()
        changes["status"] = "accepted"  # re-checked by the builder
        changes["status_message"] = ""
    if p.config_file is not None:
        changes["config_file"] = p.config_file
    if p.deploy_targets is not None:
        changes["deploy_targets"] = p.deploy_targets
    if p.public is not None:
        changes["public"] = p.public
    if p.commit_status is not None:
        changes["commit_status"] = p.commit_status.model_dump()
    elif p.clear_commit_status:
        changes["commit_status"] = None
    store.services.update_one({"_id": e.aggregate_id}, {"$set": changes})


@folds("ServiceDeleted")
def service_deleted(store: Store, e: Event) -> None:
    store.services.update_one({"_id": e.aggregate_id}, {"$set": {"deleted": True, "deleted_at": _ts(e)}})


# -- versions ----------------------------------------------------------------------------------
def _version(store: Store, e: Event, changes: dict[str, Any], *, only_from: list[str] | None = None) -> None:
    """Set fields on a version; with `only_from`, only while its status is one of those."""
    query: dict[str, Any] = {"_id": e.aggregate_id}
    if only_from is not None:
        query["status"] = {"$in": only_from}
    store.versions.update_one(query, {"$set": changes})


@folds("VersionRequested")
def version_requested(store: Store, e: Event) -> None:
    p = e.payload
    store.versions.update_one(
        {"_id": e.aggregate_id},
        {
            "$setOnInsert": {"status": "pending", "stages": {}},
            "$set": {
                "service_id": p.service_id,
                "user_id": p.user_id,
                "name": p.name,
                "description": p.description,
                "commit": p.commit,
                "branch": p.branch,
                "trigger": p.trigger,
                "operations": p.operations,
                "delivery_id": p.delivery_id,
                "created_at": _ts(e),
            },
        },
        upsert=True,
    )


@folds("VersionQueued")
def version_queued(store: Store, e: Event) -> None:
    # From running too: the builder knows a version's demand only after the clone (its config file), so
    # it may wait for quota after StageStarted(clone); the next StageStarted sets it running again.
    _version(store, e, {"status": "queued", "queued_reason": e.payload.reason},
             only_from=["pending", "queued", "running"])


@folds("SourceFetched")
def source_fetched(store: Store, e: Event) -> None:
    p = e.payload
    _version(store, e, {"commit": p.commit, "host": p.host, **({"branch": p.branch} if p.branch else {})})
    _version(store, e, {"status": "running", "started_at": _ts(e)}, only_from=["pending", "queued"])


@folds("StageStarted")
def stage_started(store: Store, e: Event) -> None:
    stage = e.payload.stage
    store.versions.update_one(
        {"_id": e.aggregate_id, f"stages.{stage}.status": {"$nin": STAGE_DONE}},
        {"$set": {f"stages.{stage}.status": "running", f"stages.{stage}.start": _ts(e)}},
    )
    _version(store, e, {"status": "running", "started_at": _ts(e)}, only_from=["pending", "queued"])


@folds("StageFinished")
def stage_finished(store: Store, e: Event) -> None:
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
def image_built(store: Store, e: Event) -> None:
    p = e.payload
    _version(store, e, {"image": p.image, "image_id": p.image_id, "host": p.host})


@folds("ImagePushed")
def image_pushed(store: Store, e: Event) -> None:
    _version(store, e, {"image": e.payload.image, "digest": e.payload.digest})


@folds("VersionTagged")
def version_tagged(store: Store, e: Event) -> None:
    _version(store, e, {"tag": e.payload.tag, "commit": e.payload.commit})


@folds("VersionSucceeded")
def version_succeeded(store: Store, e: Event) -> None:
    p = e.payload
    extra = {k: v for k, v in (("image", p.image), ("digest", p.digest)) if v}
    _version(store, e, {"status": "success", "finished_at": _ts(e), "error": None, **extra},
             only_from=["pending", "queued", "running"])


@folds("VersionFailed")
def version_failed(store: Store, e: Event) -> None:
    _version(
        store,
        e,
        {"status": "failed", "finished_at": _ts(e), "error": e.payload.reason, "failed_stage": e.payload.stage},
        only_from=["pending", "queued", "running"],
    )


@folds("VersionCancelled")
def version_cancelled(store: Store, e: Event) -> None:
    _version(
        store,
        e,
        {"status": "cancelled", "finished_at": _ts(e), "error": e.payload.reason},
        only_from=["pending", "queued", "running"],
    )


# -- deployments -------------------------------------------------------------------------------
def _deployment(store: Store, deployment_id: str, changes: dict[str, Any], *, unless_done: bool = False,
                on_insert: dict[str, Any] | None = None) -> None:
    query: dict[str, Any] = {"_id": deployment_id}
    if unless_done:
        query["status"] = {"$nin": DEPLOY_TERMINAL}
    update: dict[str, Any] = {"$set": changes}
    if on_insert:
        update["$setOnInsert"] = on_insert
    try:
        store.deployments.update_one(query, update, upsert=on_insert is not None)
    except DuplicateKeyError:
        pass  # exists and is finished: the guarded upsert found nothing to change


@folds("DeployRequested")
def deploy_requested(store: Store, e: Event) -> None:
    p = e.payload
    _deployment(
        store,
        p.deployment_id,
        {
            "service_id": p.service_id,
            "user_id": p.user_id,
            "version_id": p.version_id,
            "target": p.target,
            "namespace": p.namespace,
            "application": p.application,
            "kind": p.kind,
        },
        # A second request for the same deployment keeps the first one's time and author.
        on_insert={"status": "requested", "actor": e.actor, "requested_at": _ts(e)},
    )


@folds("RollbackRequested")
def rollback_requested(store: Store, e: Event) -> None:
    p = e.payload
    _deployment(
        store,
        p.deployment_id,
        {
            "service_id": p.service_id,
            "user_id": p.user_id,
            "to_version_id": p.to_version_id,
            "target": p.target,
            "kind": "rollback",
        },
        on_insert={"status": "requested", "actor": e.actor, "requested_at": _ts(e)},
    )


@folds("DeployStarted")
def deploy_started(store: Store, e: Event) -> None:
    p = e.payload
    fields = {
        "service_id": p.service_id,
        "version_id": p.version_id,
        "target": p.target,
        "namespace": p.namespace,
        "application": p.application,
        "image": p.image,
        "digest": p.digest,
        "kind": p.kind,
        "started_at": _ts(e),
    }
    _deployment(store, p.deployment_id, fields, on_insert={"requested_at": _ts(e), "actor": e.actor})
    _deployment(store, p.deployment_id, {"status": "running"}, unless_done=True)


def _finish(store: Store, e: Event, status: str, extra: dict[str, Any]) -> None:
    p = e.payload
    doc = store.deployments.find_one({"_id": p.deployment_id}) or {}
    started = doc.get("started_at") or doc.get("requested_at")
    duration = (e.occurred_at - datetime.fromisoformat(started)).total_seconds() if started else None
    _deployment(
        store, p.deployment_id,
        {"status": status, "finished_at": _ts(e), "duration": duration, **extra},
        unless_done=True,
    )
    if status == "success" and doc.get("target"):
        store.targets.update_one(
            {"_id": f"{p.service_id}/{doc['target']}"},
            {
                "$set": {
                    "service_id": p.service_id,
                    "target": doc["target"],
                    "current_deployment_id": p.deployment_id,
                    "current_version_id": doc.get("version_id"),
                    "current_digest": doc.get("digest"),
                    "updated_at": _ts(e),
                },
                "$setOnInsert": {"pinned": False},
            },
            upsert=True,
        )


@folds("DeploySucceeded")
def deploy_succeeded(store: Store, e: Event) -> None:
    _finish(store, e, "success", {"reason": None, "detail": e.payload.detail})


@folds("DeployFailed")
def deploy_failed(store: Store, e: Event) -> None:
    _finish(store, e, "failed", {"reason": e.payload.reason})


@folds("DeploySkipped")
def deploy_skipped(store: Store, e: Event) -> None:
    p = e.payload
    _deployment(
        store,
        p.deployment_id,
        {
            "service_id": p.service_id,
            "version_id": p.version_id,
            "target": p.target,
            "status": "skipped",
            "reason": p.reason,
            "finished_at": _ts(e),
        },
        on_insert={"requested_at": _ts(e), "kind": "auto", "actor": e.actor},
    )


@folds("TargetPinChanged")
def target_pin_changed(store: Store, e: Event) -> None:
    p = e.payload
    store.targets.update_one(
        {"_id": f"{p.service_id}/{p.target}"},
        {"$set": {"service_id": p.service_id, "target": p.target, "pinned": p.pinned, "pin_reason": p.reason,
                  "pin_changed_at": _ts(e)}},
        upsert=True,
    )


# -- rebuild -----------------------------------------------------------------------------------
def rebuild(store: Store, decode: Callable[[dict[str, Any]], Event]) -> int:
    """Drop every projection and fold the whole `events` archive again, in order. Returns the count."""
    for name in PROJECTIONS:
        store.db.drop_collection(name)
    store.ensure_indexes()
    count = 0
    # Archives written before `_applied` existed have none: those sort first, by occurred_at.
    order = [("_applied", 1), ("occurred_at", 1), ("_pos.offset", 1)]
    for doc in store.events.find({}).sort(order):
        event = decode(doc)
        fold = FOLDS.get(event.type)
        if fold is not None:
            fold(store, event)
        count += 1
    return count
