"""Folds of service events into `services`."""

from __future__ import annotations

from typing import Any

from ..events import Event
from ..store import ReadModelStore
from .registry import _ts, folds


# -- services ----------------------------------------------------------------------------------
@folds("ServiceCreated")
def service_created(store: ReadModelStore, e: Event) -> None:
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
def repository_checked(store: ReadModelStore, e: Event) -> None:
    store.services.update_one(
        {"_id": e.aggregate_id},
        {"$set": {"status": e.payload.status, "status_message": e.payload.message, "checked_at": _ts(e)}},
    )


@folds("ServiceUpdated")
def service_updated(store: ReadModelStore, e: Event) -> None:
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
def service_deleted(store: ReadModelStore, e: Event) -> None:
    store.services.update_one({"_id": e.aggregate_id}, {"$set": {"deleted": True, "deleted_at": _ts(e)}})
