"""The builder's coordinator and its steps (build, push, tag, finish) on fakes of every port: the events
each path publishes, failures with their stage and reason, publish-once across a resumed run, claim
fencing, cancellation, the crash limit, the reaper and the watch loop. No Docker, Kafka or Mongo."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from services.builder import coordinator, reaper
from services.builder.coordinator import handle, resume_event
from services.builder.vcs import VcsError
from services.builder.watch import fence_once, watch_once
from shared.events import ImageBuilt
from shared.events.versions import ImageBuiltPayload
from tests.fixtures.builder_fakes import REPO_URL, BuilderWorld
from tests.unit.test_package_boundaries import SERVICES, imported_names

CLONE = [("clone", "started"), ("clone", "success")]
BUILD = [("build", "started"), ("build", "success")]
PUSH = [("push", "started"), ("push", "success")]
TAG = [("tag", "started"), ("tag", "success")]
SUCCESS_EVENTS = [
    "StageStarted", "StageFinished", "SourceFetched", "StageStarted", "StageFinished", "ImageBuilt",
    "StageStarted", "StageFinished", "ImagePushed", "StageStarted", "StageFinished", "VersionTagged",
    "VersionSucceeded",
]


class Crash(BaseException):
    """The worker process dies here (nothing of it runs on: no handler catches this)."""


@pytest.fixture
def world(tmp_path: Path) -> BuilderWorld:
    return BuilderWorld(tmp_path)


def _failed(w: BuilderWorld) -> Any:
    [failed] = w.bus.of("VersionFailed")
    return failed.payload


def _ended_clean(w: BuilderWorld, vid: str) -> None:
    """The run tore everything of the version down before its terminal event."""
    assert w.records.heartbeats[vid]["state"] == "done"
    assert (vid, None) in w.docker.cleanups
    assert not w.builder.workspace(vid).exists()
    assert vid not in w.quota.reserved
    assert vid not in w.builder.active and vid not in w.builder.logs and vid not in w.builder.hosts.own


def test_the_steps_do_not_import_each_other_nor_the_coordinator() -> None:
    steps = {"build", "push", "tag"}
    for step in sorted(steps):
        names = {name for _, name in imported_names((SERVICES / "builder" / f"{step}.py").read_text(),
                                                    f"services.builder.{step}")}
        others = {f"services.builder.{m}" for m in steps - {step} | {"coordinator", "reaper", "app"}}
        assert not names & others, (step, names & others)


# -- the success path -------------------------------------------------------------------------------
async def test_a_requested_version_is_built_pushed_tagged_and_succeeds_in_one_run(world: BuilderWorld) -> None:
    vid = world.add_version()
    await handle(world.builder, world.requested(vid))

    assert world.bus.types() == SUCCESS_EVENTS
    assert world.bus.stages() == CLONE + BUILD + PUSH + TAG
    image = "reg.test:5000/alice/web:v1"
    [built] = world.bus.of("ImageBuilt")
    assert built.payload.image == image and built.payload.host == "fake://host"  # type: ignore[attr-defined]
    [pushed] = world.bus.of("ImagePushed")
    [tagged] = world.bus.of("VersionTagged")
    [succeeded] = world.bus.of("VersionSucceeded")
    assert (tagged.payload.tag, tagged.payload.commit) == ("v1", world.commit)  # type: ignore[attr-defined]
    assert succeeded.payload.image == image  # type: ignore[attr-defined]
    assert succeeded.payload.digest == pushed.payload.digest  # type: ignore[attr-defined]
    # Each milestone is caused by the step's own input, and every builder event carries the claim's epoch.
    assert pushed.causation_id == built.event_id and tagged.causation_id == pushed.event_id
    epochs = {getattr(e.payload, "epoch", 1) for e in world.bus.events if e.type != "LogLine"}
    assert epochs == {1}

    assert world.images.builds[0]["labels"] == {"fornax.version": vid, "fornax.service": "svc-web"}
    assert world.images.builds[0]["network"] == f"fornax-{vid}"
    assert world.registry.pushes == [image]
    assert world.vcs.tags == {(REPO_URL, "v1"): world.commit}
    hb = world.records.heartbeats[vid]
    assert all(hb.get(f"emitted_{t}") for t in ("ImageBuilt", "ImagePushed", "VersionTagged"))
    assert world.quota.released == [vid]
    _ended_clean(world, vid)
    log = world.bus.log_text()
    assert "pipeline: build → push → tag (default: root Dockerfile)" in log
    assert f"pushed {image}@{pushed.payload.digest}" in log  # type: ignore[attr-defined]
    assert f"version v1 succeeded: {image}@" in log


async def test_a_version_that_builds_no_image_succeeds_after_the_build_step(world: BuilderWorld) -> None:
    vid = world.add_version(operations=["integration"])  # no integration in the config: nothing to run
    await handle(world.builder, world.requested(vid))
    assert world.bus.types() == ["StageStarted", "StageFinished", "SourceFetched", "VersionSucceeded"]
    assert world.images.builds == [] and world.registry.pushes == [] and world.vcs.tags == {}
    _ended_clean(world, vid)


async def test_a_version_waiting_for_quota_is_queued_first(world: BuilderWorld) -> None:
    world.quota.wait_first = "waiting for quota: 2048 of 2048 MiB in use"
    vid = world.add_version()
    await handle(world.builder, world.requested(vid))
    [queued] = world.bus.of("VersionQueued")
    assert queued.payload.reason.startswith("waiting for quota")  # type: ignore[attr-defined]
    assert world.bus.types()[-1] == "VersionSucceeded"


# -- failures: the stage and the reason ---------------------------------------------------------------
async def test_a_failed_clone_fails_the_version_at_the_clone(world: BuilderWorld) -> None:
    world.vcs.fail_clone[REPO_URL] = "git clone failed: repository not found"
    vid = world.add_version()
    await handle(world.builder, world.requested(vid))
    assert world.bus.stages() == [("clone", "started"), ("clone", "failed")]
    assert world.bus.of("StageFinished")[0].payload.error == "git clone failed: repository not found"  # type: ignore[attr-defined]
    assert (_failed(world).stage, _failed(world).reason) == ("clone", "git clone failed: repository not found")
    assert world.bus.types()[-1] == "VersionFailed"
    assert world.images.builds == []
    assert "version failed: git clone failed" in world.bus.log_text()
    _ended_clean(world, vid)


async def test_an_unhealthy_repository_fails_before_the_clone(world: BuilderWorld) -> None:
    world.records.services["svc-web"].update(status="missing", status_message="authentication failed")
    vid = world.add_version()
    await handle(world.builder, world.requested(vid))
    assert world.bus.types() == ["VersionFailed"]
    assert _failed(world).stage == "clone"
    assert _failed(world).reason == "the repository is not healthy (missing): authentication failed"


async def test_a_failed_docker_build_fails_the_version_at_the_build(world: BuilderWorld) -> None:
    world.images.fail = "docker build failed at Step 2/2 : RUN false: exit code 1"
    vid = world.add_version()
    await handle(world.builder, world.requested(vid))
    assert world.bus.stages() == CLONE + [("build", "started"), ("build", "failed")]
    assert (_failed(world).stage, _failed(world).reason) == ("build", world.images.fail)
    assert world.bus.of("ImageBuilt") == [] and world.registry.pushes == []
    _ended_clean(world, vid)


async def test_a_quota_the_version_can_never_fit_fails_it_at_the_quota(world: BuilderWorld) -> None:
    world.quota.exceeded = True
    vid = world.add_version()
    await handle(world.builder, world.requested(vid))
    assert _failed(world).stage == "quota" and "more than the quota of user alice" in _failed(world).reason
    assert world.images.builds == []


async def test_a_failed_push_fails_the_version_at_the_push_with_the_secret_masked(world: BuilderWorld) -> None:
    world.registry.fail = "push of the image to reg.test:5000 failed: login registry-s3cret refused"
    vid = world.add_version()
    await handle(world.builder, world.requested(vid))
    assert world.bus.stages() == CLONE + BUILD + [("push", "started"), ("push", "failed")]
    assert len(world.bus.of("ImageBuilt")) == 1 and world.bus.of("ImagePushed") == []
    assert _failed(world).stage == "push"
    assert _failed(world).reason == "push of the image to reg.test:5000 failed: login **** refused"
    assert "registry-s3cret" not in world.bus.log_text()
    _ended_clean(world, vid)


async def test_a_tag_taken_at_another_commit_fails_the_version_at_the_tag(world: BuilderWorld) -> None:
    world.vcs.tags[(REPO_URL, "v1")] = "b" * 40
    vid = world.add_version()
    await handle(world.builder, world.requested(vid))
    assert world.bus.stages() == CLONE + BUILD + PUSH + [("tag", "started"), ("tag", "failed")]
    assert len(world.bus.of("ImagePushed")) == 1 and world.bus.of("VersionTagged") == []
    assert (_failed(world).stage, _failed(world).reason) == ("tag", f"tag v1 already exists at {'b' * 40}")
    assert world.bus.of("VersionSucceeded") == []
    _ended_clean(world, vid)


async def test_an_unexpected_error_fails_the_version_naming_it(world: BuilderWorld) -> None:
    async def broken() -> None:
        raise KeyError("surprise")

    world.registry.during = broken
    vid = world.add_version()
    await handle(world.builder, world.requested(vid))
    assert _failed(world).stage == "push"
    assert _failed(world).reason == "internal builder error: KeyError: 'surprise'"
    assert world.bus.stages()[-1] == ("push", "started")  # the stage's end is in the failure
    _ended_clean(world, vid)


# -- crashes, resumes and publish-once --------------------------------------------------------------
async def test_a_run_resumed_after_a_crash_publishes_each_milestone_once(world: BuilderWorld) -> None:
    vid = world.add_version()

    async def crash() -> None:
        raise Crash()

    world.registry.during = crash  # the worker dies during the push, after ImageBuilt was published
    with pytest.raises(Crash):
        await handle(world.builder, world.requested(vid))
    assert world.bus.types()[-3:] == ["StageFinished", "ImageBuilt", "StageStarted"]
    assert vid not in world.builder.active

    # Another worker's reaper resumes it. The read model has not shown the build yet (the projector
    # lags), so the run starts from the clone again: the same image, not published a second time.
    other = world.other_worker("builder@test:2")
    world.state.stall(vid)
    reserved = other.builder.begin(vid)
    assert reserved is not None
    await reaper._resume(other.builder, world.records.versions[vid], reserved)
    assert other.bus.stages() == CLONE + BUILD + PUSH + TAG
    assert other.bus.of("ImageBuilt") == []
    assert [e.type for e in other.bus.events if e.type in ("ImagePushed", "VersionTagged", "VersionSucceeded")] == [
        "ImagePushed", "VersionTagged", "VersionSucceeded"]
    assert {getattr(e.payload, "epoch", 2) for e in other.bus.events if e.type != "LogLine"} == {2}
    assert world.records.heartbeats[vid]["attempts"] == 2
    _ended_clean(other, vid)


async def test_a_resumed_push_does_not_publish_the_image_again(world: BuilderWorld) -> None:
    vid = world.add_version()
    original = world.vcs.tag

    async def tag_then_crash(*args: Any) -> None:
        await original(*args)
        raise Crash()

    world.vcs.tag = tag_then_crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await handle(world.builder, world.requested(vid))
    [built] = world.bus.of("ImageBuilt")
    assert len(world.bus.of("ImagePushed")) == 1

    # The read model shows the push (the reaper resumes at the tag): redone, VersionTagged published once.
    world.records.versions[vid].update(
        status="running", image=built.payload.image, digest=world.bus.of("ImagePushed")[0].payload.digest,  # type: ignore[attr-defined]
        stages={"build": {"status": "success"}, "push": {"status": "success"}, "tag": {"status": "running"}},
        commit=world.commit,
    )
    other = world.other_worker("builder@test:2")
    world.state.stall(vid)
    event = resume_event(world.records.versions[vid], "fake://host")
    assert event.type == "ImagePushed"
    await handle(other.builder, event)
    assert other.bus.stages() == TAG
    assert other.bus.types() == ["StageStarted", "StageFinished", "VersionTagged", "VersionSucceeded"]
    assert other.registry.pushes == [] and world.vcs.tags == {(REPO_URL, "v1"): world.commit}


async def test_the_reaper_resumes_a_built_version_at_the_push(world: BuilderWorld) -> None:
    vid = world.add_version(status="running", image="reg.test:5000/alice/web:v1", image_id="sha256:1",
                            host="fake://host", commit="a" * 40, stages={"build": {"status": "success"}})
    world.records.heartbeats[vid] = {"_id": vid, "worker": "dead@test:9", "at": 0.0, "epoch": 1, "attempts": 1}
    event = resume_event(world.records.versions[vid], "fake://host")
    assert event.type == "ImageBuilt"
    await handle(world.builder, event)
    assert world.bus.types() == SUCCESS_EVENTS[6:]
    assert world.records.heartbeats[vid]["epoch"] == 2
    assert world.vcs.clones == [(REPO_URL, "a" * 40)]  # the tag step cloned: this worker had no workspace


def test_the_resume_event_is_the_next_steps_input() -> None:
    doc = {"_id": "v", "user_id": "u", "service_id": "s", "name": "v1", "stages": {}}
    assert resume_event(doc, "h").type == "VersionRequested"
    built = {**doc, "image": "r/u/s:v1", "image_id": "sha256:1", "stages": {"build": {"status": "success"}}}
    assert resume_event(built, "h").type == "ImageBuilt" and resume_event(built, "h").payload.host == "h"  # type: ignore[attr-defined]
    pushed = {**built, "digest": "sha256:2", "stages": {"build": {"status": "success"}, "push": {"status": "success"}}}
    assert resume_event(pushed, "h").type == "ImagePushed"
    assert [s.name for s in coordinator.STEPS] == ["build", "push", "tag", "finish"]


async def test_a_version_that_stopped_its_builders_too_often_is_failed(world: BuilderWorld) -> None:
    vid = world.add_version(status="running", stages={"clone": {"status": "success"}, "build": {"status": "running"}})
    world.records.heartbeats[vid] = {"_id": vid, "worker": "dead@test:9", "at": 0.0, "epoch": 2, "attempts": 2}
    await handle(world.builder, world.requested(vid))
    assert world.bus.types() == ["StageFinished", "VersionFailed"]
    assert world.bus.stages() == [("build", "failed")]
    assert _failed(world).stage == "build"
    assert _failed(world).reason.startswith("processing this version stopped its builder 2 times")
    assert world.vcs.clones == [] and world.images.builds == []
    _ended_clean(world, vid)


# -- fencing -----------------------------------------------------------------------------------------
async def test_a_result_of_a_lost_claim_is_refused(world: BuilderWorld) -> None:
    vid = world.add_version(status="running")
    world.records.heartbeats[vid] = {"_id": vid, "worker": "b@test:2", "at": 0.0, "epoch": 3}
    stale = ImageBuilt.make(vid, ImageBuiltPayload(image="reg.test:5000/alice/web:v1", image_id="sha256:1",
                                                   host="fake://host", epoch=2))
    await handle(world.builder, stale)
    assert world.bus.events == [] and world.registry.pushes == []
    assert world.records.heartbeats[vid]["epoch"] == 3  # not claimed


async def test_a_run_whose_claim_is_taken_over_stops_and_leaves_the_version_to_the_new_owner(
    world: BuilderWorld,
) -> None:
    vid = world.add_version()
    other = world.other_worker("builder@test:2")

    async def stall_and_lose() -> None:  # this worker stalls; another takes the version over
        world.state.stall(vid)
        assert await other.state.claim(vid) == 2

    world.images.during = stall_and_lose
    await handle(world.builder, world.requested(vid))
    assert world.bus.types() == ["StageStarted", "StageFinished", "SourceFetched", "StageStarted"]
    assert world.registry.pushes == [] and world.bus.of("VersionFailed") == []
    assert world.docker.cleanups == [(vid, 1)]  # only its own epoch's containers
    assert world.builder.workspace(vid).is_dir()  # the workspace, quota and claim belong to the new owner
    assert vid in world.quota.reserved
    assert world.records.heartbeats[vid]["worker"] == "builder@test:2"
    assert "state" not in world.records.heartbeats[vid]


async def test_a_version_that_ended_on_another_worker_is_not_run_again(world: BuilderWorld) -> None:
    vid = world.add_version()
    world.records.heartbeats[vid] = {"_id": vid, "worker": "b@test:2", "at": 0.0, "epoch": 1, "state": "done"}
    await handle(world.builder, world.requested(vid))  # its end is on its way to the read model
    assert world.bus.events == [] and vid not in world.builder.active


async def test_a_live_owner_is_waited_for_and_taken_over_once_its_heartbeat_stops(
    world: BuilderWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coordinator, "CLAIM_POLL", 0.01)
    vid = world.add_version()
    owner = world.other_worker("builder@test:2")
    assert await owner.state.claim(vid) == 1
    waiting = asyncio.create_task(handle(world.builder, world.requested(vid)))
    await asyncio.sleep(0.1)
    assert not waiting.done() and world.bus.events == []  # the owner is alive
    world.state.stall(vid)  # and now it is not
    await asyncio.wait_for(waiting, 10)
    assert world.bus.types() == SUCCESS_EVENTS
    assert world.records.heartbeats[vid]["epoch"] == 2


# -- skips and cancellation ---------------------------------------------------------------------------
async def test_finished_built_or_active_versions_are_skipped(world: BuilderWorld) -> None:
    done = world.add_version(status="success")
    built = world.add_version(status="running", image_id="sha256:1", stages={"build": {"status": "success"}})
    busy = world.add_version()
    world.builder.begin(busy)
    for vid in (done, built, busy):
        await handle(world.builder, world.requested(vid))
    assert world.bus.events == [] and world.records.heartbeats == {}


async def test_a_version_cancelled_while_it_builds_stops_quietly_and_is_cleaned(world: BuilderWorld) -> None:
    vid = world.add_version()

    async def cancelled_meanwhile() -> None:
        world.records.versions[vid]["status"] = "cancelled"
        world.builder.active[vid].cancelled.set()  # what the watch loop does
        await asyncio.sleep(30)

    world.images.during = cancelled_meanwhile
    await asyncio.wait_for(handle(world.builder, world.requested(vid)), 10)
    assert world.bus.stages() == CLONE + [("build", "started"), ("build", "cancelled")]
    assert world.bus.of("VersionFailed") == [] and world.bus.of("ImageBuilt") == []
    assert "cancelled: stopped and cleaned up" in world.bus.log_text()
    _ended_clean(world, vid)


async def test_a_tag_error_from_the_vcs_port_is_shown_masked(world: BuilderWorld) -> None:
    world.records.secrets["svc-web"] = {"repo_password": "git-pa55word"}

    async def refuse(*args: Any) -> None:
        raise VcsError("git push --tags failed: auth git-pa55word rejected")

    world.vcs.tag = refuse  # type: ignore[method-assign]
    vid = world.add_version()
    await handle(world.builder, world.requested(vid))
    assert _failed(world).reason == "git push --tags failed: auth **** rejected"
    _ended_clean(world, vid)


# -- the reaper and the watch loop ------------------------------------------------------------------
async def test_the_reaper_takes_over_a_version_nobody_works_on_and_runs_it_through_the_coordinator(
    world: BuilderWorld,
) -> None:
    vid = world.add_version(created_at="2026-01-01T00:00:00+00:00")  # requested long ago, never started
    fresh = world.add_version()  # its worker may just not have got to it yet
    assert await reaper.reap_lost(world.builder) == [vid]
    while vid in world.builder.resuming:
        await asyncio.sleep(0.01)
    assert world.bus.types() == SUCCESS_EVENTS
    assert world.records.heartbeats[vid]["takeovers"] == 1
    assert fresh not in world.records.heartbeats


async def test_the_reaper_fails_a_version_taken_over_too_often_with_worker_lost(world: BuilderWorld) -> None:
    vid = world.add_version(status="running", stages={"build": {"status": "running"}})
    world.records.heartbeats[vid] = {"_id": vid, "worker": "dead@test:9", "at": 0.0, "epoch": 3,
                                     "takeovers": reaper.MAX_TAKEOVERS}
    world.quota.reserved[vid] = (512, 512)
    assert await reaper.reap_lost(world.builder) == [vid]
    assert world.bus.stages() == [("build", "failed")]
    assert (_failed(world).stage, _failed(world).reason) == ("build", "worker lost")
    assert world.images.builds == [] and vid not in world.builder.resuming
    _ended_clean(world, vid)


async def test_the_watch_loop_flags_cancelled_versions_and_runs_whose_claim_was_taken_over(
    world: BuilderWorld,
) -> None:
    cancelled, lost, fine = world.add_version(status="cancelled"), world.add_version(), world.add_version()
    for vid in (cancelled, lost, fine):
        world.builder.begin(vid).epoch = await world.state.claim(vid)  # type: ignore[union-attr]
    world.state.stall(lost)
    await world.other_worker("builder@test:2").state.claim(lost)
    assert await watch_once(world.builder) == [cancelled]
    assert await fence_once(world.builder) == [lost]
    flags = {vid: (a.cancelled.is_set(), a.lost) for vid, a in world.builder.active.items()}
    assert flags == {cancelled: (True, False), lost: (True, True), fine: (False, False)}


def test_each_builder_agent_routes_exactly_its_events() -> None:
    from services.builder.app import BUILD, CHECK, PUSH, TAG

    assert set(CHECK.types) == {"ServiceCreated", "ServiceUpdated"}
    assert (set(BUILD.types), set(PUSH.types), set(TAG.types)) == (
        {"VersionRequested"}, {"ImageBuilt"}, {"ImagePushed"})


async def test_an_agent_never_runs_under_a_claim_the_reaper_of_its_process_takes(world: BuilderWorld) -> None:
    """The reaper finds a version nobody seems to work on; just before its claim lands, an agent of the
    same process is handed the version. A claim by the same worker gets a new epoch, so the agent's
    run would turn into a lost one (it stopped, nobody ran the version, and after repeated takeovers it
    failed "worker lost"). The reaper marks the version as worked on here first: the agent skips it."""
    vid = world.add_version(status="pending", created_at="2000-01-01T00:00:00+00:00")
    gate = asyncio.Event()

    async def held() -> None:
        await gate.wait()

    world.registry.during = held  # a run waits in its push until the reaper is done
    claim = world.state.claim
    agent: list[asyncio.Future[None]] = []

    async def claim_as_the_agent_is_handed_it(version_id: str) -> int | None:
        if not agent:  # the reaper's claim: the agent's delivery arrives first
            agent.append(asyncio.ensure_future(handle(world.builder, world.requested(vid))))
            for _ in range(20):
                await asyncio.sleep(0.005)
        return await claim(version_id)

    world.state.claim = claim_as_the_agent_is_handed_it  # type: ignore[method-assign]
    assert await reaper.reap_lost(world.builder) == [vid]
    gate.set()
    await agent[0]
    while world.builder.resuming:
        await asyncio.sleep(0.01)
    assert world.bus.types() == SUCCESS_EVENTS  # one run, to the end
    assert world.records.heartbeats[vid]["takeovers"] == 1
    _ended_clean(world, vid)


async def test_the_end_of_a_version_names_the_seq_of_its_last_log_line(world: BuilderWorld) -> None:
    vid = world.add_version()
    await handle(world.builder, world.requested(vid))
    [succeeded] = world.bus.of("VersionSucceeded")
    seqs = [e.payload.seq for e in world.bus.of("LogLine")]  # type: ignore[attr-defined]
    assert seqs == list(range(1, len(seqs) + 1))
    assert succeeded.payload.log_seq == seqs[-1]  # type: ignore[attr-defined]
    failing = world.add_version("v2")
    world.vcs.fail_clone[REPO_URL] = "git clone failed: repository not found"
    await handle(world.builder, world.requested(failing))
    [failed] = world.bus.of("VersionFailed")
    assert failed.payload.log_seq == max(  # type: ignore[attr-defined]
        e.payload.seq for e in world.bus.of("LogLine") if e.aggregate_id == failing)  # type: ignore[attr-defined]


async def test_an_end_lost_with_its_worker_after_the_claim_was_marked_done_is_published_by_the_reaper(
    world: BuilderWorld,
) -> None:
    """The worker marks the claim done and dies before publishing VersionSucceeded: nobody would resume
    a done claim, so the end noted on it is published by a reaper (the same event, by id)."""
    vid = world.add_version()
    publish = world.bus.publish

    async def dies_at_the_end(*events: Any) -> None:
        if any(e.type == "VersionSucceeded" for e in events):
            raise Crash()
        await publish(*events)

    world.bus.publish = dies_at_the_end  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await handle(world.builder, world.requested(vid))
    world.bus.publish = publish  # type: ignore[method-assign]
    assert world.bus.of("VersionSucceeded") == []
    hb = world.records.heartbeats[vid]
    assert hb["state"] == "done" and hb["end"]["type"] == "VersionSucceeded"
    other = world.other_worker("builder@test:2")
    assert await reaper.reap_lost(other.builder) == []  # too soon: the projector may only lag
    hb["at"] = 0.0
    await reaper.reap_lost(other.builder)
    [end] = other.bus.of("VersionSucceeded")
    assert end.event_id == hb["end"]["event_id"]
    assert end.payload.log_seq == max(e.payload.seq for e in world.bus.of("LogLine"))  # type: ignore[attr-defined]
