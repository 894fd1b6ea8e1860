"""Cancel: a running build (RUN sleep 30) is stopped and ends `cancelled` with nothing left; a version
cancelled before it starts never starts."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import docker
import pytest

from shared.auth import create_user
from tests.integration.builder_helpers import Api, GitRepo, dockerfile, leftovers, wait_clean
from tests.waits import wait_until


@pytest.fixture(scope="module")
def services(stack, busybox_image):
    for name in ("projector", "gateway", "builder"):
        stack.start_service(name)
    return stack


@pytest.fixture(scope="module")
def api(services, store):
    user = f"bc-{uuid.uuid4().hex[:6]}"
    return Api(services.gateway_port, user, create_user(store, user))


def _sleep_containers() -> list[str]:
    client = docker.from_env()
    try:
        return [
            c["Id"] for c in client.api.containers(all=True) if "fornax-cancel-test" in c.get("Command", "")
        ]
    finally:
        client.close()


def test_cancel_running_build(api, settings, store, tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit(
        {"Dockerfile": dockerfile(f"RUN echo sleeping {uuid.uuid4().hex}; sleep 30 # fornax-cancel-test")}
    )
    sid = api.create_service(f"cancel-{uuid.uuid4().hex[:6]}", repo.url)["service_id"]
    api.wait_repo_status(sid)
    vid = api.new_version(sid, "slow")
    # Wait until the RUN step is really running, then cancel.
    wait_until(
        lambda: (api.version(vid) or {}).get("status") == "running" and _sleep_containers(),
        60,
        "the sleep step to run",
    )
    started = time.monotonic()
    resp = api.cancel(vid)
    assert resp.status_code == 202, resp.text
    doc = api.wait_version(vid, timeout=30)
    assert doc["status"] == "cancelled"
    wait_until(lambda: not _sleep_containers(), 20, "the build container to be stopped")
    assert time.monotonic() - started < 30  # it did not just run to its end
    wait_clean(vid, settings.workspaces)
    stages = {s["name"]: s for s in api.version(vid)["stages"]}
    wait_until(
        lambda: {s["name"]: s["status"] for s in api.version(vid)["stages"]}.get("build") == "cancelled",
        15,
        "build stage cancelled",
    )
    assert stages["clone"]["status"] == "success"
    # No VersionFailed/Succeeded after the cancel.
    time.sleep(2)
    final = api.version(vid)
    assert final["status"] == "cancelled"
    assert not final.get("digest")
    types = [e["type"] for e in store.events.find({"aggregate_id": vid})]
    assert "VersionFailed" not in types and "VersionSucceeded" not in types and "ImageBuilt" not in types


def test_cancelled_before_start_never_starts(api, settings, store, services, tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit({"Dockerfile": dockerfile()})
    sid = api.create_service(f"precancel-{uuid.uuid4().hex[:6]}", repo.url)["service_id"]
    api.wait_repo_status(sid)
    # Stop the builder so the version stays pending, cancel it, start the builder again.
    services.stop("builder")
    try:
        vid = api.new_version(sid, "never")
        wait_until(lambda: api.version(vid), 30, "the version to be projected")
        assert api.cancel(vid).status_code == 202
        api.wait_version(vid, ("cancelled",), timeout=30)
    finally:
        services.start_service("builder")
    # Give the builder time to see the VersionRequested again; nothing may start.
    time.sleep(5)
    doc = api.version(vid)
    assert doc["status"] == "cancelled"
    assert doc["stages"] == []
    types = {e["type"] for e in store.events.find({"aggregate_id": vid})}
    assert types <= {"VersionRequested", "VersionCancelled"}, types
    assert leftovers(vid, settings.workspaces) == []
