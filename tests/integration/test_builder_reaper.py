"""The reaper against the real store, broker, projector and dockerd (no builder process running, so
only the reaper called here acts): a version whose worker is gone for good fails with "worker lost"
and loses its containers, network and workspace; leftovers of finished versions are removed, while
objects of versions this installation does not know are left alone (the engine may be shared)."""

from __future__ import annotations

import time
import uuid

import docker
import pytest

from services.builder.core import bootstrap
from services.builder.reaper import reap_leftovers, reap_lost
from shared.bus import EventBus
from shared.events import StageStarted, VersionFailed, VersionRequested
from shared.events.versions import StageStartedPayload, VersionFailedPayload, VersionRequestedPayload
from tests.integration.builder_helpers import leftovers
from tests.waits import wait_until


@pytest.fixture(scope="module")
def services(stack, busybox_image):
    stack.start_service("projector")
    stack.stop("builder")  # only the reaper called by the test may act
    yield stack
    stack.start_service("builder")


@pytest.fixture
def client():
    c = docker.from_env()
    yield c
    c.close()


def _labelled(client, busybox: str, vid: str):
    net = client.networks.create(f"fornax-{vid}", labels={"fornax.version": vid})
    return client.containers.run(
        busybox,
        ["sleep", "300"],
        detach=True,
        labels={"fornax.version": vid},
        network=net.name,
        name=f"fornax-{vid}-step",
    )


async def _request(bus: EventBus, vid: str, *more) -> None:
    payload = VersionRequestedPayload(service_id="svc-" + vid, user_id="reaper-user", name="v1")
    await bus.publish(VersionRequested.make(vid, payload, actor="reaper-user"), *more)


async def test_lost_version_fails_and_is_cleaned(services, settings, store, client, busybox_image) -> None:
    b = bootstrap(settings)
    vid, stranger = uuid.uuid4().hex, f"not-ours-{uuid.uuid4().hex}"
    foreign = _labelled(client, busybox_image, stranger)
    try:
        await _request(
            b.bus, vid, StageStarted.make(vid, StageStartedPayload(stage="build"), correlation_id=vid)
        )
        wait_until(
            lambda: (store.versions.find_one({"_id": vid}) or {}).get("status") == "running", 30, "running"
        )
        _labelled(client, busybox_image, vid)
        (settings.workspaces / vid).mkdir(parents=True)
        # Its worker stopped beating long ago, and it was taken over twice already.
        store.builder_heartbeats.insert_one(
            {"_id": vid, "worker": "dead@x:1", "at": time.time() - 300, "takeovers": 2}
        )
        assert vid in await reap_lost(b)
        doc = wait_until(
            lambda: (
                (store.versions.find_one({"_id": vid}) or {}).get("status") == "failed"
                and store.versions.find_one({"_id": vid})
            ),
            30,
            "failed",
        )
        assert doc["error"] == "worker lost"
        assert doc["stages"]["build"]["status"] == "failed"
        assert leftovers(vid, settings.workspaces) == []
        # the claim stays marked done until the read model shows the end, then the reaper drops it
        assert (store.builder_heartbeats.find_one({"_id": vid}) or {}).get("state") == "done"
        await reap_leftovers(b)
        assert store.builder_heartbeats.find_one({"_id": vid}) is None
        assert client.containers.get(foreign.id).status == "running"  # not ours: untouched
    finally:
        foreign.remove(force=True)
        client.networks.get(f"fornax-{stranger}").remove()
        await b.bus.stop()


async def test_leftovers_of_finished_versions_are_removed(
    services, settings, store, client, busybox_image
) -> None:
    b = bootstrap(settings)
    vid, stranger = uuid.uuid4().hex, f"not-ours-{uuid.uuid4().hex}"
    foreign = _labelled(client, busybox_image, stranger)
    (settings.workspaces / stranger).mkdir(parents=True)  # unknown and fresh: kept
    try:
        await _request(
            b.bus, vid, VersionFailed.make(vid, VersionFailedPayload(reason="x"), correlation_id=vid)
        )
        wait_until(
            lambda: (store.versions.find_one({"_id": vid}) or {}).get("status") == "failed", 30, "failed"
        )
        _labelled(client, busybox_image, vid)
        (settings.workspaces / vid).mkdir(parents=True)
        removed = await reap_leftovers(b)
        assert vid in removed and f"workspace:{vid}" in removed
        assert leftovers(vid, settings.workspaces) == []
        assert client.containers.get(foreign.id).status == "running"
        assert (settings.workspaces / stranger).exists()
    finally:
        foreign.remove(force=True)
        client.networks.get(f"fornax-{stranger}").remove()
        (settings.workspaces / stranger).rmdir()
        await b.bus.stop()


async def test_published_milestones_outlive_a_takeover_of_the_claim(services, settings, store) -> None:
    """What a crashed worker published stays on the claim for the worker that resumes the version."""
    first, second = bootstrap(settings), bootstrap(settings)
    second.state.worker = "resumer@x:2"
    vid = uuid.uuid4().hex
    try:
        assert await first.state.claim(vid)
        await first.state.record_emitted(vid, "VersionTagged")
        store.builder_heartbeats.update_one({"_id": vid}, {"$set": {"at": time.time() - 3600}})  # it died
        assert await second.state.claim(vid)
        assert (store.builder_heartbeats.find_one({"_id": vid}) or {}).get("worker") == "resumer@x:2"
        assert await second.state.emitted(vid, "VersionTagged")
        assert not await second.state.emitted(vid, "ImagePushed")
    finally:
        store.builder_heartbeats.delete_one({"_id": vid})
        await first.bus.stop()
        await second.bus.stop()
