"""Fencing: a builder that stalled past builder_lost_after (SIGSTOP) while a second builder took its
version over must, when it wakes (SIGCONT), stop instead of finishing the version a second time: one
push, one ImagePushed, one VersionSucceeded, one tag in the registry. Its late results are refused by
the projector and the agents (claim epochs), and it removes only its own epoch's containers."""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from pathlib import Path

import docker
import pytest

from services.builder.core import Lost, bootstrap
from services.builder.run import Run
from services.builder.state import BuilderState
from services.builder.watch import fence_once
from shared.auth import create_user
from shared.events import ImagePushed, StageStarted, VersionRequested, VersionSucceeded
from shared.events.versions import (
    ImagePushedPayload,
    StageStartedPayload,
    VersionRequestedPayload,
    VersionSucceededPayload,
)
from shared.projections import apply
from tests.integration.builder_helpers import Api, GitRepo, dockerfile, registry_tags, remove_images, wait_clean
from tests.waits import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
BUILDERS = ("builder", "fence-b")
FAST_TAKEOVER = {"FORNAX_BUILDER_LOST_AFTER": "4", "FORNAX_BUILDER_REAP_EVERY": "1"}


def _archived(store, vid: str, etype: str) -> int:
    return store.events.count_documents({"aggregate_id": vid, "type": etype})


# -- claims, projection and one run, in process ------------------------------------------------------
async def test_each_claim_has_a_newer_epoch_and_the_old_holder_knows_it_lost(store) -> None:
    vid = uuid.uuid4().hex
    a, b = BuilderState(store, "a@x:1", lost_after=30), BuilderState(store, "b@x:2", lost_after=30)
    first = await a.claim(vid)
    assert first == 1 and await b.claim(vid) is None  # a is alive
    store.builder_heartbeats.update_one({"_id": vid}, {"$set": {"at": time.time() - 60}})  # a stalls
    second = await b.claim(vid)
    assert second == 2
    assert await a.lost_claims({vid: first}) == {vid} and not await a.holds(vid, first)
    assert await b.holds(vid, second)


def test_the_projector_refuses_results_of_an_older_claim(store) -> None:
    vid = uuid.uuid4().hex
    request = VersionRequested.make(vid, VersionRequestedPayload(service_id="s", user_id="u", name="v1"))
    apply(store, request)
    apply(store, StageStarted.make(vid, StageStartedPayload(stage="build", epoch=2)))  # the new owner
    apply(store, ImagePushed.make(vid, ImagePushedPayload(image="r/u/s:v1", digest="sha256:old", epoch=1)))
    apply(store, VersionSucceeded.make(vid, VersionSucceededPayload(digest="sha256:old", epoch=1)))
    doc = store.versions.find_one({"_id": vid})
    assert doc["status"] == "running" and "digest" not in doc and doc["epoch"] == 2
    apply(store, ImagePushed.make(vid, ImagePushedPayload(image="r/u/s:v1", digest="sha256:new", epoch=2)))
    apply(store, VersionSucceeded.make(vid, VersionSucceededPayload(digest="sha256:new")))  # no epoch: applied
    doc = store.versions.find_one({"_id": vid})
    assert doc["status"] == "success" and doc["digest"] == "sha256:new"
    assert _archived(store, vid, "ImagePushed") == 2  # the refused one is still in the archive


class Recorder:
    def __init__(self) -> None:
        self.events: list = []

    async def publish(self, *events) -> None:
        self.events.extend(events)


async def test_a_run_whose_claim_was_taken_over_stops_and_removes_only_its_containers(
    settings, store, busybox_image
) -> None:
    b = bootstrap(settings)
    b.bus = Recorder()
    vid = uuid.uuid4().hex
    client = docker.from_env()
    net = client.networks.create(f"fornax-{vid}", labels={"fornax.version": vid})
    started = {}
    try:
        for epoch in (1, 2):
            started[epoch] = client.containers.run(
                busybox_image,
                ["sleep", "300"],
                detach=True,
                network=net.name,
                labels={"fornax.version": vid, "fornax.epoch": str(epoch)},
            )
        (settings.workspaces / vid).mkdir(parents=True)
        act = b.begin(vid)
        act.epoch = await b.state.claim(vid)
        run = Run(b, StageStarted.make(vid, StageStartedPayload(stage="build")), {"_id": vid, "user_id": "u"}, act)
        await run.emit(StageStarted, StageStartedPayload(stage="build"))
        assert [e.payload.epoch for e in b.bus.events] == [act.epoch]
        # This process stalls; another worker takes the version over.
        store.builder_heartbeats.update_one({"_id": vid}, {"$set": {"at": time.time() - 600}})
        other = BuilderState(store, "other@x:9", lost_after=settings.builder_lost_after)
        assert await other.claim(vid) == act.epoch + 1
        assert await fence_once(b) == [vid] and act.lost and act.cancelled.is_set()
        with pytest.raises(Lost):
            await run.emit(StageStarted, StageStartedPayload(stage="push"))
        await run.cancelled()
        assert len(b.bus.events) == 1
        remaining = {c.id for c in client.containers.list(all=True, filters={"label": f"fornax.version={vid}"})}
        assert remaining == {started[2].id}  # the other worker's container and network stay
        assert client.networks.get(net.id) is not None
        assert (settings.workspaces / vid).is_dir()
        assert store.builder_heartbeats.find_one({"_id": vid})["worker"] == "other@x:9"
    finally:
        for c in started.values():
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass
        net.remove()
        shutil.rmtree(settings.workspaces / vid, ignore_errors=True)
        store.builder_heartbeats.delete_one({"_id": vid})
        client.close()
        b.store.close()


# -- two builder processes -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def services(stack, busybox_image):
    for name in ("projector", "gateway"):
        stack.start_service(name)
    # The second builder takes over after 4 s; the usual one after builder_lost_after (20 s).
    for name in BUILDERS:  # a ready marker of an earlier, stopped instance does not count
        proc = stack.procs.get(name)
        if proc is None or proc.poll() is not None:
            (stack.base / "ready" / name).unlink(missing_ok=True)
    stack.start_service("builder", wait=False)
    stack.start_service("builder", instance="fence-b", env=FAST_TAKEOVER, wait=False)
    for name in BUILDERS:
        wait_until((stack.base / "ready" / name).exists, 90, f"{name} worker")
    yield stack
    for name in BUILDERS:
        proc = stack.procs.get(name)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGCONT)  # never leave a stopped builder behind
        stack.stop(name)  # nor one that was stopped and woken (a fresh usual builder follows)
    remove_images(f"127.0.0.1:{stack.registry_port}/fe-")
    stack.start_service("builder", wait=False)


def _print_logs(stack) -> None:
    """The builders' log tails, for a failure report."""
    for name in BUILDERS:
        print(f"==== {name}\n" + (stack.log_dir / f"{name}.log").read_text(errors="replace")[-8000:])


def test_a_stalled_builder_woken_after_a_takeover_does_not_finish_the_version_twice(
    services, settings, store, tmp_path: Path
) -> None:
    user = f"fe-{uuid.uuid4().hex[:6]}"
    api = Api(services.gateway_port, user, create_user(store, user))
    repo = GitRepo(tmp_path)
    # A unique step, so no earlier build's layer cache skips the sleep.
    repo.commit({"Dockerfile": dockerfile(f"RUN echo fenced {uuid.uuid4().hex}; sleep 6")})
    service = f"fence-{uuid.uuid4().hex[:6]}"
    sid = api.create_service(service, repo.url)["service_id"]
    api.wait_repo_status(sid)
    vid = api.new_version(sid, "v1")

    def owner() -> str | None:
        doc = api.version(vid) or {}
        stages = {s["name"]: s["status"] for s in doc.get("stages", [])}
        hb = store.builder_heartbeats.find_one({"_id": vid}) or {}
        return hb.get("worker") if stages.get("build") == "running" and hb.get("worker") else None

    stalled = wait_until(owner, 60, "the build stage to run").split("@", 1)[0]
    assert stalled in BUILDERS
    pid = services.procs[stalled].pid
    os.killpg(pid, signal.SIGSTOP)
    try:
        taken = wait_until(
            lambda: (
                (store.builder_heartbeats.find_one({"_id": vid}) or {}).get("worker", "").split("@")[0]
                not in ("", stalled)
            ),
            30,
            "the other builder to take the version over",
        )
        assert taken
    except AssertionError:
        _print_logs(services)
        raise
    finally:
        os.killpg(pid, signal.SIGCONT)  # it wakes while the other builder works on the version

    doc = api.wait_version(vid, timeout=120)
    if doc["status"] != "success":
        _print_logs(services)
    assert doc["status"] == "success", (doc.get("error"), doc.get("stages"))
    log = services.log_dir / f"{stalled}.log"
    wait_until(lambda: "was taken over" in log.read_text(errors="replace"), 30, "the woken builder to stop")
    time.sleep(3)  # room for any late result of the woken builder to reach the archive
    assert _archived(store, vid, "ImagePushed") == 1
    assert _archived(store, vid, "VersionSucceeded") == 1
    assert _archived(store, vid, "ImageBuilt") == 1
    assert registry_tags(services.registry_port, f"{user}/{service}") == ["v1"]
    assert store.versions.find_one({"_id": vid})["status"] == "success"
    wait_clean(vid, settings.workspaces, timeout=30)
