"""The projector's folds on the in-memory store (no Kafka, no Mongo): each event type's effect on the
read models, the guards that keep a replayed or late event from moving anything backwards, the
claim-epoch fence, the archive, and a rebuild that folds the archive to the same read models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from shared.events import (
    DeployFailed,
    DeployRequested,
    DeploySkipped,
    DeployStarted,
    DeploySucceeded,
    Event,
    ImageBuilt,
    ImagePushed,
    LogLine,
    LogLinePayload,
    Repository,
    RepositoryChecked,
    RollbackRequested,
    ServiceCreated,
    ServiceDeleted,
    ServiceUpdated,
    SourceFetched,
    StageFinished,
    StageStarted,
    TargetPinChanged,
    VersionCancelled,
    VersionFailed,
    VersionQueued,
    VersionRequested,
    VersionSucceeded,
    VersionTagged,
    decode,
)
from shared.events.deploys import (
    DeployFailedPayload,
    DeployRequestedPayload,
    DeploySkippedPayload,
    DeployStartedPayload,
    DeploySucceededPayload,
    RollbackRequestedPayload,
    TargetPinChangedPayload,
)
from shared.events.services import (
    RepositoryCheckedPayload,
    ServiceCreatedPayload,
    ServiceDeletedPayload,
    ServiceUpdatedPayload,
)
from shared.events.versions import (
    ImageBuiltPayload,
    ImagePushedPayload,
    SourceFetchedPayload,
    StageFinishedPayload,
    StageStartedPayload,
    VersionCancelledPayload,
    VersionFailedPayload,
    VersionQueuedPayload,
    VersionRequestedPayload,
    VersionSucceededPayload,
    VersionTaggedPayload,
)
from shared.projections import FOLDS, apply, rebuild
from tests.fakes.store import MemoryStore

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SID, VID = "svc1", "ver1"


def at(event: Event, seconds: float) -> Any:
    return event.model_copy(update={"occurred_at": T0 + timedelta(seconds=seconds)})


def created() -> ServiceCreated:
    return ServiceCreated.make(SID, ServiceCreatedPayload(
        user_id="alice", name="shop", repository=Repository(url="https://x/shop.git"), secret_names=["A"]))


def requested() -> VersionRequested:
    return VersionRequested.make(VID, VersionRequestedPayload(service_id=SID, user_id="alice", name="v1",
                                                             commit="main", delivery_id="d1"))


def fold_all(store: MemoryStore, *events: Event) -> None:
    for e in events:
        apply(store, e)


def version(store: MemoryStore) -> dict[str, Any]:
    doc = store.versions.find_one({"_id": VID})
    assert doc is not None
    return doc


def test_every_fold_is_routed_by_its_event_type() -> None:
    assert FOLDS.types == {
        "ServiceCreated", "RepositoryChecked", "ServiceUpdated", "ServiceDeleted", "VersionRequested",
        "VersionQueued", "SourceFetched", "StageStarted", "StageFinished", "ImageBuilt", "ImagePushed",
        "VersionTagged", "VersionSucceeded", "VersionFailed", "VersionCancelled", "DeployRequested",
        "RollbackRequested", "DeployStarted", "DeploySucceeded", "DeployFailed", "DeploySkipped",
        "TargetPinChanged",
    }


def test_service_lifecycle() -> None:
    store = MemoryStore()
    fold_all(store, at(created(), 0))
    doc = store.services.find_one({"_id": SID})
    assert doc is not None
    assert (doc["name"], doc["status"], doc["deleted"], doc["secret_names"]) == ("shop", "accepted", False, ["A"])
    assert doc["repository"] == {"url": "https://x/shop.git", "vcs": "git", "username": None}
    assert doc["created_at"] == "2026-01-02T03:04:05.000+00:00"
    fold_all(store, RepositoryChecked.make(SID, RepositoryCheckedPayload(status="healthy", message="ok")))
    assert store.services.find_one({"_id": SID})["status"] == "healthy"
    fold_all(store, ServiceUpdated.make(SID, ServiceUpdatedPayload(
        user_id="alice", description="new", repository=Repository(url="https://x/new.git"))))
    doc = store.services.find_one({"_id": SID})
    assert (doc["description"], doc["repository"]["url"], doc["status"]) == ("new", "https://x/new.git", "accepted")
    fold_all(store, ServiceDeleted.make(SID, ServiceDeletedPayload(user_id="alice")))
    assert store.services.find_one({"_id": SID})["deleted"] is True


def test_a_replayed_service_created_keeps_the_checked_status() -> None:
    store = MemoryStore()
    first = created()
    fold_all(store, first, RepositoryChecked.make(SID, RepositoryCheckedPayload(status="missing")))
    store.events.delete_one({"_id": first.event_id})  # (so that apply archives it again)
    fold_all(store, first)
    assert store.services.find_one({"_id": SID})["status"] == "missing"


def test_version_lifecycle_with_stages() -> None:
    store = MemoryStore()
    fold_all(
        store,
        at(requested(), 0),
        at(VersionQueued.make(VID, VersionQueuedPayload(reason="quota")), 1),
        at(SourceFetched.make(VID, SourceFetchedPayload(commit="c" * 40, host="h1", branch="main")), 2),
        at(StageStarted.make(VID, StageStartedPayload(stage="build")), 3),
        at(ImageBuilt.make(VID, ImageBuiltPayload(image="reg/shop:v1", image_id="sha256:i", host="h1")), 4),
        at(StageFinished.make(VID, StageFinishedPayload(stage="build", status="success")), 5),
        at(ImagePushed.make(VID, ImagePushedPayload(image="reg/shop:v1", digest="sha256:d")), 6),
        at(VersionTagged.make(VID, VersionTaggedPayload(tag="v1", commit="c" * 40)), 7),
        at(VersionSucceeded.make(VID, VersionSucceededPayload()), 8),
    )
    doc = version(store)
    assert doc["status"] == "success" and doc["error"] is None
    assert (doc["commit"], doc["branch"], doc["host"], doc["tag"]) == ("c" * 40, "main", "h1", "v1")
    assert (doc["image"], doc["image_id"], doc["digest"]) == ("reg/shop:v1", "sha256:i", "sha256:d")
    assert doc["queued_reason"] == "quota" and doc["delivery_id"] == "d1"
    assert doc["stages"]["build"] == {"status": "success", "start": "2026-01-02T03:04:08.000+00:00",
                                      "end": "2026-01-02T03:04:10.000+00:00", "error": None}
    assert doc["started_at"] == "2026-01-02T03:04:07.000+00:00"
    assert doc["finished_at"] == "2026-01-02T03:04:13.000+00:00"


def test_a_finished_version_never_moves_back() -> None:
    store = MemoryStore()
    fold_all(store, requested(), VersionFailed.make(VID, VersionFailedPayload(reason="boom", stage="build")))
    late = [
        VersionQueued.make(VID, VersionQueuedPayload(reason="late")),
        SourceFetched.make(VID, SourceFetchedPayload(commit="c", host="h")),
        StageStarted.make(VID, StageStartedPayload(stage="push")),
        VersionSucceeded.make(VID, VersionSucceededPayload()),
        VersionCancelled.make(VID, VersionCancelledPayload()),
    ]
    fold_all(store, *late)
    doc = version(store)
    assert (doc["status"], doc["error"], doc["failed_stage"]) == ("failed", "boom", "build")
    # A replayed VersionRequested does not reset the status or the stages either.
    fold_all(store, requested())
    assert version(store)["status"] == "failed" and "push" in version(store)["stages"]


def test_a_finished_stage_is_not_restarted_by_a_late_start() -> None:
    store = MemoryStore()
    fold_all(store, requested(),
             StageFinished.make(VID, StageFinishedPayload(stage="clone", status="failed", error="auth")),
             StageStarted.make(VID, StageStartedPayload(stage="clone")))
    assert version(store)["stages"]["clone"]["status"] == "failed"


def test_results_of_a_taken_over_claim_are_fenced_off_but_archived() -> None:
    store = MemoryStore()
    fold_all(store, requested(), StageStarted.make(VID, StageStartedPayload(stage="build", epoch=2)))
    assert version(store)["epoch"] == 2
    stale = VersionFailed.make(VID, VersionFailedPayload(reason="old worker", epoch=1))
    fold_all(store, stale)
    assert version(store)["status"] == "running"
    assert store.events.find_one({"_id": stale.event_id}) is not None
    fold_all(store, VersionSucceeded.make(VID, VersionSucceededPayload(epoch=3)))
    assert version(store)["status"] == "success" and version(store)["epoch"] == 3


def deploy_events(did: str = "d1") -> list[Event]:
    return [
        at(DeployRequested.make(SID, DeployRequestedPayload(
            deployment_id=did, service_id=SID, user_id="alice", version_id=VID, target="local"),
            actor="alice"), 0),
        at(DeployStarted.make(SID, DeployStartedPayload(
            deployment_id=did, service_id=SID, version_id=VID, target="local", image="reg/shop:v1",
            digest="sha256:d")), 1),
        at(DeploySucceeded.make(SID, DeploySucceededPayload(deployment_id=did, service_id=SID, detail="up")), 3.5),
    ]


def test_deployment_lifecycle_and_current_target() -> None:
    store = MemoryStore()
    fold_all(store, *deploy_events())
    doc = store.deployments.find_one({"_id": "d1"})
    assert (doc["status"], doc["actor"], doc["digest"], doc["detail"], doc["duration"]) == (
        "success", "alice", "sha256:d", "up", 2.5)
    target = store.targets.find_one({"_id": f"{SID}/local"})
    assert (target["current_deployment_id"], target["current_version_id"], target["pinned"]) == ("d1", VID, False)
    # A late failure, or the whole history replayed, changes nothing.
    fold_all(store, DeployFailed.make(SID, DeployFailedPayload(deployment_id="d1", service_id=SID, reason="x")))
    for e in deploy_events():
        FOLDS.dispatch(e, store)
    doc = store.deployments.find_one({"_id": "d1"})
    assert doc["status"] == "success" and doc["reason"] is None


def test_rollback_skip_and_pin() -> None:
    store = MemoryStore()
    fold_all(
        store,
        RollbackRequested.make(SID, RollbackRequestedPayload(deployment_id="r1", service_id=SID, user_id="alice",
                                                             to_version_id="v0")),
        DeploySkipped.make(SID, DeploySkippedPayload(deployment_id="a1", service_id=SID, version_id=VID,
                                                     target="local", reason="pinned")),
        TargetPinChanged.make(SID, TargetPinChangedPayload(service_id=SID, target="local", pinned=True,
                                                           reason="rolled back")),
    )
    rollback = store.deployments.find_one({"_id": "r1"})
    assert (rollback["kind"], rollback["status"], rollback["to_version_id"]) == ("rollback", "requested", "v0")
    skipped = store.deployments.find_one({"_id": "a1"})
    assert (skipped["status"], skipped["kind"], skipped["reason"]) == ("skipped", "auto", "pinned")
    assert store.targets.find_one({"_id": f"{SID}/local"})["pinned"] is True


def test_archive_keeps_each_event_once_and_never_log_lines() -> None:
    store = MemoryStore()
    event = requested()
    apply(store, event, {"topic": "fornax.versions", "partition": 0, "offset": 7})
    apply(store, event)
    line = LogLine.make(VID, LogLinePayload(version_id=VID, seq=1, stage="build", text="x", ts=1.0))
    apply(store, line)
    docs = list(store.events.find({}))
    assert [d["_id"] for d in docs] == [event.event_id]
    assert docs[0]["_pos"] == {"topic": "fornax.versions", "partition": 0, "offset": 7}
    assert decode(docs[0]) == event


def test_rebuild_folds_the_archive_to_the_same_read_models() -> None:
    store = MemoryStore()
    fold_all(store, created(), requested(),
             StageStarted.make(VID, StageStartedPayload(stage="build")),
             VersionSucceeded.make(VID, VersionSucceededPayload(image="reg/shop:v1", digest="sha256:d")),
             *deploy_events())
    before = {name: list(store[name].find({}).sort("_id")) for name in ("services", "versions", "deployments",
                                                                        "targets")}
    assert rebuild(store, decode) == 7
    after = {name: list(store[name].find({}).sort("_id")) for name in before}
    assert after == before
