"""Commit status at GitHub and GitLab, delivered by the notifier through injected faults: real builds on the
local stack, a local stand-in for both providers' status endpoints (tests/fixtures/forge.py)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from services.notifier import outbox
from services.notifier.handlers import reconcile
from shared.auth import create_user
from tests.fixtures.forge import Forge
from tests.integration.builder_helpers import Api, GitRepo, dockerfile, remove_images
from tests.waits import wait_until

pytestmark = pytest.mark.integration
NOTIFIER_ENV = {"FORNAX_COMMIT_STATUS_TIMEOUT": "1", "FORNAX_COMMIT_STATUS_MAX_BACKOFF": "2",
                "FORNAX_PUBLIC_URL": "http://fornax.test"}


@pytest.fixture(scope="module")
def forge():
    f = Forge(token="tok-" + uuid.uuid4().hex, slow_seconds=2.5).start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def services(stack, busybox_image):
    for name in ("projector", "gateway", "builder"):
        stack.start_service(name)
    stack.stop("notifier")  # one an earlier module started would be shared, without these settings
    stack.start_service("notifier", env=NOTIFIER_ENV)
    yield stack
    stack.stop("notifier")
    remove_images(f"127.0.0.1:{stack.registry_port}/cs-")


@pytest.fixture(scope="module")
def api(services, store):
    user = f"cs-{uuid.uuid4().hex[:6]}"
    return Api(services.gateway_port, user, create_user(store, user))


def _service(api: Api, forge: Forge, repo: GitRepo, provider: str, name: str) -> str:
    created = api.create_service(name, repo.url, secrets={"FORGE_TOKEN": forge.token}, commit_status={
        "provider": provider, "api_url": forge.url, "repository": "acme/shop",
        "token_secret": "FORGE_TOKEN"})
    assert api.wait_repo_status(created["service_id"]) == "healthy"
    return str(created["service_id"])


def _settled(store: Any, forge: Forge, vid: str) -> None:
    """The notifier is done with `vid`: its final state is delivered (nothing is due any more), and the forge
    has answered every post (one the notifier gave up on, after its timeout, has landed or not for good)."""
    wait_until(lambda: store.commit_statuses.find_one({"_id": vid, "state": "success", "due": False})
               and forge.in_flight == 0, 30, f"the notifier to be done with {vid}")


def _built(api: Api, sid: str) -> tuple[str, str]:
    vid = api.new_version(sid, "v" + uuid.uuid4().hex[:6])
    doc = api.wait_version(vid, timeout=120)
    assert doc["status"] == "success", doc
    return vid, doc["commit"]


def test_github_status_survives_5xx_rate_limits_and_slow_answers(api, forge, store, tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit({"Dockerfile": dockerfile('CMD ["true"]')})
    sid = _service(api, forge, repo, "github", "gh-app")
    forge.faults[:] = ["500", "ratelimit", "slow"]
    vid, sha = _built(api, sid)
    wait_until(lambda: "success" in forge.states(sha), 60, "the success status at GitHub")
    _settled(store, forge, vid)  # would a state be posted again (after the slow answer timed out)? It must not.
    # No state twice, never backwards, success last. (GitHub has no "running"; a pending still failing
    # when the version ended is superseded by success, not posted late.)
    states = forge.states(sha)
    assert states in (["pending", "success"], ["success"]), states
    final = next(s for s in forge.statuses if s["sha"] == sha and s["state"] == "success")
    assert final["context"] == "fornax/gh-app"
    assert final["target_url"] == f"http://fornax.test/ui/versions/{vid}"
    assert len(final["description"]) <= 140
    assert [a["fault"] for a in forge.attempts if a["sha"] == sha][:3] == ["500", "ratelimit", "slow"]
    assert forge.faults == []


def test_gitlab_same_state_400_counts_as_done_and_states_are_never_repeated(api, forge, store,
                                                                            tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit({"Dockerfile": dockerfile('CMD ["true"]')})
    sid = _service(api, forge, repo, "gitlab", "gl-app")
    forge.faults[:] = ["same"]  # the first post is refused as "already in that state"
    vid, sha = _built(api, sid)
    wait_until(lambda: "success" in forge.states(sha), 60, "the success status at GitLab")
    _settled(store, forge, vid)  # would a refused or delivered state be posted again? (it must not)
    sent = [a["state"] for a in forge.attempts if a["sha"] == sha]
    # An API build learns its commit when cloned, so its first post is "running" (or "success", when the
    # build ended before the notifier posted); refused as already so, it counts as done: nothing is posted
    # twice, and success is last.
    assert sent in (["running", "success"], ["success"]), sent
    assert forge.states(sha) == sent
    assert all(s["name"] == "fornax/gl-app" for s in forge.statuses if s["sha"] == sha)


def test_a_version_that_ended_while_the_notifier_was_down_gets_its_final_status(api, forge, services, store,
                                                                               tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit({"Dockerfile": dockerfile('CMD ["true"]')})
    sid = _service(api, forge, repo, "github", "down-app")
    services.stop("notifier")
    try:
        vid, sha = _built(api, sid)
        assert forge.states(sha) == []
    finally:
        services.start_service("notifier", env=NOTIFIER_ENV)
    wait_until(lambda: "success" in forge.states(sha), 60, "the final status after the restart")
    _settled(store, forge, vid)
    # Caught up from its offsets, it records pending, running and success at once: the final state is
    # posted (the superseded ones need not be), and nothing twice.
    assert forge.states(sha) in (["success"], ["pending", "success"]), forge.states(sha)


def test_reconcile_gives_an_ended_version_its_final_state(store) -> None:
    vid = "rc-" + uuid.uuid4().hex
    outbox.want(store, vid, "running", service_id="s", commit="c" * 40)
    store.versions.insert_one({"_id": vid, "status": "failed", "error": "build: exit 1", "commit": "c" * 40})
    try:
        assert reconcile(store) >= 1
        doc = store.commit_statuses.find_one({"_id": vid})
        assert (doc["state"], doc["due"], doc["detail"]) == ("failed", True, "build: exit 1")
        outbox.want(store, vid, "running")  # a late, older event never moves it back
        assert store.commit_statuses.find_one({"_id": vid})["state"] == "failed"
    finally:
        store.versions.delete_one({"_id": vid})
        store.commit_statuses.delete_one({"_id": vid})
