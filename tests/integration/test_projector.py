"""The projector on the real broker and Mongo-wire server: folds, idempotent replays, malformed events,
the push trigger's de-duplication, and `fornax projections rebuild` equality."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from shared.bus import EventBus
from shared.events import (
    DeployRequested,
    DeployStarted,
    DeploySucceeded,
    ImagePushed,
    PushReceived,
    RepositoryChecked,
    ServiceCreated,
    StageFinished,
    StageStarted,
    VersionCancelled,
    VersionRequested,
    VersionSucceeded,
)
from shared.events.deploys import DeployRequestedPayload, DeployStartedPayload, DeploySucceededPayload
from shared.events.services import RepositoryCheckedPayload, ServiceCreatedPayload
from shared.events.versions import (
    ImagePushedPayload,
    StageFinishedPayload,
    StageStartedPayload,
    VersionCancelledPayload,
    VersionRequestedPayload,
    VersionSucceededPayload,
)
from shared.events.webhooks import PushReceivedPayload
from tests.waits import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def projector(stack, no_build_workers):
    stack.start_service("projector")
    yield
    stack.stop("projector")


def publish(settings, *events):
    async def run():
        async with EventBus(settings) as bus:
            await bus.publish(*events)

    asyncio.run(run())


def _history(user: str):
    sid, vid, did = (uuid.uuid4().hex for _ in range(3))
    created = ServiceCreated.make(sid, ServiceCreatedPayload(
        user_id=user, name="api", repository={"url": "file:///tmp/x.git", "vcs": "git"}), actor=user)
    checked = RepositoryChecked.make(sid, RepositoryCheckedPayload(status="healthy"), cause=created)
    requested = VersionRequested.make(vid, VersionRequestedPayload(service_id=sid, user_id=user, name="v1"),
                                      actor=user)
    started = StageStarted.make(vid, StageStartedPayload(stage="build"), cause=requested)
    finished = StageFinished.make(vid, StageFinishedPayload(stage="build", status="success"), cause=started)
    pushed = ImagePushed.make(vid, ImagePushedPayload(image="r/u/api:v1", digest="sha256:abc"), cause=finished)
    done = VersionSucceeded.make(vid, VersionSucceededPayload(image="r/u/api:v1", digest="sha256:abc"), cause=pushed)
    dreq = DeployRequested.make(sid, DeployRequestedPayload(deployment_id=did, service_id=sid, user_id=user,
                                                             version_id=vid, target="local"), actor=user)
    dstart = DeployStarted.make(sid, DeployStartedPayload(deployment_id=did, service_id=sid, version_id=vid,
                                                           target="local", image="r/u/api:v1", digest="sha256:abc"),
                                cause=dreq)
    dok = DeploySucceeded.make(sid, DeploySucceededPayload(deployment_id=did, service_id=sid), cause=dstart)
    return sid, vid, did, [created, checked, requested, started, finished, pushed, done, dreq, dstart, dok]


def test_folds_replays_and_malformed_events(settings, store, projector):
    sid, vid, did, events = _history("alice")
    publish(settings, *events)
    version = wait_until(lambda: store.versions.find_one({"_id": vid, "status": "success"}), 30, what="version success")
    assert version["stages"]["build"]["status"] == "success"
    assert version["digest"] == "sha256:abc"
    wait_until(lambda: store.deployments.find_one({"_id": did, "status": "success"}), 30, what="deployment")
    service = store.services.find_one({"_id": sid})
    assert service["status"] == "healthy" and service["user_id"] == "alice"
    target = store.targets.find_one({"_id": f"{sid}/local"})
    assert target["current_version_id"] == vid

    snapshot = {c: list(store[c].find({"$or": [{"_id": {"$in": [sid, vid, did]}}, {"service_id": sid}]}))
                for c in ("services", "versions", "deployments", "targets")}

    async def garbage():
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(settings.topic("versions"), b"{not json", key=vid.encode())
            await producer.send_and_wait(settings.topic("versions"), b'{"type": "Unknown"}', key=vid.encode())
        finally:
            await producer.stop()

    asyncio.run(garbage())
    # Replay everything (at-least-once delivery), plus a late cancel that must not undo success.
    late_cancel = VersionCancelled.make(vid, VersionCancelledPayload())
    publish(settings, *events, late_cancel)
    wait_until(lambda: store.events.find_one({"_id": late_cancel.event_id}), 30, what="replay archived")
    again = {c: list(store[c].find({"$or": [{"_id": {"$in": [sid, vid, did]}}, {"service_id": sid}]}))
             for c in ("services", "versions", "deployments", "targets")}
    assert again == snapshot
    assert store.events.count_documents({"aggregate_id": {"$in": [sid, vid]}}) == len(events) + 1


def test_push_trigger_makes_one_version_per_delivery(settings, store, projector):
    sid = uuid.uuid4().hex

    def push(delivery, **kw):
        fields = dict(provider="github", delivery_id=delivery, service_id=sid, user_id="bob",
                      repo_url="file:///r.git", ref="refs/heads/feature/x", branch="feature/x",
                      after="1234567890abcdef1234567890abcdef12345678")
        fields.update(kw)
        return PushReceived.make(sid, PushReceivedPayload(**fields), actor="bob")

    publish(settings, push("d-1"), push("d-1"), push("d-2"),
            push("d-tag", ref="refs/tags/v1", branch=None, tag="v1"), push("d-del", deleted=True))
    wait_until(lambda: store.versions.count_documents({"service_id": sid}) >= 2, 30, what="two versions")
    time.sleep(2)  # let any wrong extra version arrive
    versions = sorted(store.versions.find({"service_id": sid}), key=lambda v: v["name"])
    assert [v["name"] for v in versions] == ["feature-x-1234567", "feature-x-1234567-2"]
    assert {v["delivery_id"] for v in versions} == {"d-1", "d-2"}
    assert all(v["trigger"] == "webhook" and v["commit"].startswith("1234567") for v in versions)


def test_rebuild_gives_equal_read_models(settings, store, projector):
    from services.projector.app import projections_main

    _, vid, _, events = _history("carol")
    # An event made before the one it follows on the log (another producer, a clock skew): the rebuild
    # must replay in the order the projector folded, not by occurred_at.
    late = uuid.uuid4().hex
    started = StageStarted.make(late, StageStartedPayload(stage="build"))
    time.sleep(0.01)
    requested = VersionRequested.make(late, VersionRequestedPayload(service_id="s", user_id="carol", name="v"))
    publish(settings, *events, requested, started)
    wait_until(lambda: store.deployments.find_one({"version_id": vid, "status": "success"}), 30, what="deployment")
    wait_until(lambda: (store.versions.find_one({"_id": late}) or {}).get("status") == "running", 30, what="late")
    time.sleep(1)
    before = {c: sorted(store[c].find(), key=lambda d: d["_id"]) for c in ("services", "versions", "deployments",
                                                                         "targets")}
    assert projections_main(["rebuild"]) == 0
    after = {c: sorted(store[c].find(), key=lambda d: d["_id"]) for c in before}
    for c in before:
        for old, new in zip(before[c], after[c], strict=False):
            differing = {k: (old.get(k), new.get(k)) for k in set(old) | set(new) if old.get(k) != new.get(k)}
            assert old == new, (c, differing)
    assert after == before
