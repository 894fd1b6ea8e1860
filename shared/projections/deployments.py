"""Folds of deploy events into `deployments` and `targets`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from ..events import Event
from ..store import ReadModelStore
from .registry import _ts, folds

DEPLOY_TERMINAL = ["success", "failed", "skipped"]


# -- deployments -------------------------------------------------------------------------------
def _deployment(store: ReadModelStore, deployment_id: str, changes: dict[str, Any], *, unless_done: bool = False,
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
def deploy_requested(store: ReadModelStore, e: Event) -> None:
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
def rollback_requested(store: ReadModelStore, e: Event) -> None:
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
def deploy_started(store: ReadModelStore, e: Event) -> None:
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


def _finish(store: ReadModelStore, e: Event, status: str, extra: dict[str, Any]) -> None:
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
def deploy_succeeded(store: ReadModelStore, e: Event) -> None:
    _finish(store, e, "success", {"reason": None, "detail": e.payload.detail})


@folds("DeployFailed")
def deploy_failed(store: ReadModelStore, e: Event) -> None:
    _finish(store, e, "failed", {"reason": e.payload.reason})


@folds("DeploySkipped")
def deploy_skipped(store: ReadModelStore, e: Event) -> None:
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
def target_pin_changed(store: ReadModelStore, e: Event) -> None:
    p = e.payload
    store.targets.update_one(
        {"_id": f"{p.service_id}/{p.target}"},
        {"$set": {"service_id": p.service_id, "target": p.target, "pinned": p.pinned, "pin_reason": p.reason,
                  "pin_changed_at": _ts(e)}},
        upsert=True,
    )
