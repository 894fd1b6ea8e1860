"""The notifier's handlers on the in-memory store (no Kafka, no Mongo): which commit state each version
event asks for in the outbox, never backwards, and reconciling versions that ended unrecorded."""

from __future__ import annotations

import json
from typing import Any

from services.notifier import outbox
from services.notifier.handlers import ROUTES, on_version_event, reconcile
from shared.events import (
    Event,
    SourceFetched,
    StageFinished,
    StageStarted,
    VersionCancelled,
    VersionFailed,
    VersionQueued,
    VersionRequested,
    VersionSucceeded,
)
from shared.events.versions import (
    SourceFetchedPayload,
    StageFinishedPayload,
    StageStartedPayload,
    VersionCancelledPayload,
    VersionFailedPayload,
    VersionQueuedPayload,
    VersionRequestedPayload,
    VersionSucceededPayload,
)
from tests.fakes.store import MemoryStore

VID = "v1"


def requested() -> Event:
    return VersionRequested.make(VID, VersionRequestedPayload(service_id="svc1", user_id="alice", name="v1",
                                                             commit="c0ffee"))


def wanted(store: MemoryStore) -> dict[str, Any]:
    doc = store.commit_statuses.find_one({"_id": VID})
    assert doc is not None
    return doc


def test_routed_types() -> None:
    assert ROUTES.types == {"VersionRequested", "VersionQueued", "SourceFetched", "StageStarted",
                            "VersionSucceeded", "VersionFailed", "VersionCancelled"}


def test_a_version_walks_pending_running_success() -> None:
    store = MemoryStore()
    on_version_event(store, requested())
    doc = wanted(store)
    assert (doc["state"], doc["service_id"], doc["commit"], doc["due"], doc["delivered"]) == (
        "pending", "svc1", "c0ffee", True, None)
    on_version_event(store, VersionQueued.make(VID, VersionQueuedPayload(reason="quota")))
    assert (wanted(store)["state"], wanted(store)["detail"]) == ("pending", "")  # pending already wanted
    on_version_event(store, SourceFetched.make(VID, SourceFetchedPayload(commit="c0ffee11", host="h")))
    assert (wanted(store)["state"], wanted(store)["commit"]) == ("running", "c0ffee11")
    on_version_event(store, StageStarted.make(VID, StageStartedPayload(stage="build")))
    on_version_event(store, StageFinished.make(VID, StageFinishedPayload(stage="build", status="success")))
    assert wanted(store)["state"] == "running"
    on_version_event(store, VersionSucceeded.make(VID, VersionSucceededPayload()))
    assert (wanted(store)["state"], wanted(store)["rank"]) == ("success", 2)


def test_failure_carries_its_reason_and_nothing_moves_it_back() -> None:
    store = MemoryStore()
    on_version_event(store, requested())
    on_version_event(store, VersionFailed.make(VID, VersionFailedPayload(reason="tests failed")))
    assert (wanted(store)["state"], wanted(store)["detail"]) == ("failed", "tests failed")
    for late in (StageStarted.make(VID, StageStartedPayload(stage="push")), requested(),
                 VersionCancelled.make(VID, VersionCancelledPayload())):
        on_version_event(store, late)
    assert wanted(store)["state"] == "failed"


def test_a_delivered_state_is_not_due_again_after_a_redelivered_event() -> None:
    store = MemoryStore()
    on_version_event(store, requested())
    outbox.delivered(store, wanted(store), "pending")
    on_version_event(store, requested())
    assert wanted(store)["due"] is False and wanted(store)["delivered"] == "pending"
    [claimed] = outbox.claim_due(store, now=1e12, limit=10) or [None]
    assert claimed is None


def test_reconcile_records_the_end_of_versions_that_ended_unrecorded() -> None:
    store = MemoryStore()
    on_version_event(store, requested())
    store.versions.insert_one({"_id": VID, "status": "cancelled", "error": "by alice", "commit": "c0ffee"})
    store.versions.insert_one({"_id": "v2", "status": "running"})
    on_version_event(store, VersionRequested.make("v2", VersionRequestedPayload(service_id="s", user_id="a",
                                                                               name="v2")))
    assert reconcile(store) == 1
    assert (wanted(store)["state"], wanted(store)["detail"]) == ("cancelled", "by alice")
    assert store.commit_statuses.find_one({"_id": "v2"})["state"] == "pending"


async def test_delivery_posts_the_wanted_state_once_and_retries_a_refusal() -> None:
    import httpx

    from services.notifier.deliver import Delivery

    store = MemoryStore()
    store.services.insert_one({"_id": "svc1", "name": "shop", "user_id": "alice", "commit_status": {
        "provider": "github", "api_url": "https://api.github.test", "repository": "alice/shop",
        "token_secret": "GH"}})
    store.secrets.insert_one({"_id": "svc1", "values": {"GH": "tok"}})
    posted: list[tuple[str, dict[str, Any]]] = []
    answers = [503, 201]

    def provider(request: httpx.Request) -> httpx.Response:
        posted.append((str(request.url), json.loads(request.content)))
        assert request.headers["Authorization"].endswith("tok")
        return httpx.Response(answers.pop(0), json={})

    delivery = Delivery(store, "https://fornax.test", transport=httpx.MockTransport(provider))
    try:
        on_version_event(store, requested())
        assert await delivery.step() == 1  # refused (503): retried later
        assert wanted(store)["attempts"] == 1 and wanted(store)["due"] is True
        store.commit_statuses.update_one({"_id": VID}, {"$set": {"next_at": 0.0}})
        assert await delivery.step() == 1
        assert await delivery.step() == 0  # delivered: nothing due
    finally:
        await delivery.close()
    assert [url for url, _ in posted] == ["https://api.github.test/repos/alice/shop/statuses/c0ffee"] * 2
    assert posted[-1][1]["state"] == "pending" and posted[-1][1]["context"] == "fornax/shop"
    assert (wanted(store)["delivered"], wanted(store)["due"]) == ("pending", False)
