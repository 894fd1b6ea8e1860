"""The commit-status outbox in Mongo (`commit_statuses`): one document per version.

    {_id: version_id, service_id, commit, state (wanted), rank, detail, delivered (provider state last
     posted), due (bool), next_at (epoch s), attempts, lease_until, error}

Events set the wanted state (never backwards: `rank`); the delivery loop posts what is due and records
what the provider accepted, so a state is posted once, a failed post is retried, and a restart carries on
where it stopped. Several notifier processes share the outbox through a lease on each document.
"""

from __future__ import annotations

import time
from typing import Any

from pymongo import ReturnDocument

from shared.store import ReadModelStore

from .providers import RANK

LEASE = 30.0


def ensure_indexes(store: ReadModelStore) -> None:
    store.commit_statuses.create_index([("due", 1), ("next_at", 1)])


def want(store: ReadModelStore, version_id: str, state: str, *, service_id: str | None = None,
         commit: str | None = None, detail: str = "") -> None:
    """Record that `version_id`'s commit should show `state` (ignored if a later state is already wanted)."""
    base: dict[str, Any] = {"rank": -1, "delivered": None, "attempts": 0, "lease_until": 0.0, "due": False,
                            "next_at": 0.0}
    fields: dict[str, Any] = {}
    if service_id is not None:
        fields["service_id"] = service_id
    if commit is not None:
        fields["commit"] = commit
    store.commit_statuses.update_one({"_id": version_id}, {"$setOnInsert": base, **({"$set": fields} if fields
                                                                                     else {})}, upsert=True)
    store.commit_statuses.update_one(
        {"_id": version_id, "rank": {"$lt": RANK[state]}},
        {"$set": {"state": state, "rank": RANK[state], "detail": detail, "due": True, "next_at": time.time(),
                  "attempts": 0, "error": None}},
    )


def claim_due(store: ReadModelStore, now: float, limit: int) -> list[dict[str, Any]]:
    """Documents due for a post, each leased to this process for LEASE seconds."""
    claimed = []
    for doc in store.commit_statuses.find({"due": True, "next_at": {"$lte": now}}, {"_id": 1}).limit(limit):
        got = store.commit_statuses.find_one_and_update(
            {"_id": doc["_id"], "due": True, "lease_until": {"$lte": now}},
            {"$set": {"lease_until": now + LEASE}}, return_document=ReturnDocument.AFTER)
        if got is not None:
            claimed.append(got)
    return claimed


def delivered(store: ReadModelStore, doc: dict[str, Any], provider_state: str | None, error: str | None = None) -> None:
    """The post of `doc`'s state is done (or given up): not due again unless a later state is wanted."""
    # What was posted is recorded even if a later state became wanted meanwhile (it is then still due).
    store.commit_statuses.update_one({"_id": doc["_id"]}, {"$set": {
        "delivered": provider_state, "lease_until": 0.0, "error": error, "uncertain": False}})
    store.commit_statuses.update_one({"_id": doc["_id"], "rank": doc["rank"]}, {"$set": {"due": False}})


def retry(store: ReadModelStore, doc: dict[str, Any], after: float, reason: str) -> None:
    store.commit_statuses.update_one(
        {"_id": doc["_id"]},
        {"$set": {"next_at": time.time() + after, "lease_until": 0.0, "error": reason},
         "$inc": {"attempts": 1}})


def mark_uncertain(store: ReadModelStore, doc: dict[str, Any]) -> None:
    store.commit_statuses.update_one({"_id": doc["_id"]}, {"$set": {"uncertain": True}})


def unfinished(store: ReadModelStore) -> list[dict[str, Any]]:
    """Outbox documents not yet at a final state (for reconciling after a restart)."""
    return list(store.commit_statuses.find({"rank": {"$lt": 2}}, {"_id": 1}))
