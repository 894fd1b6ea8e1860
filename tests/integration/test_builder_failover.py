"""kill -9 of the builder that is building a version, with a second builder running: the version ends
`success` or `failed` with a reason within 60 s, and nothing of it remains."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from shared.auth import create_user
from tests.integration.builder_helpers import Api, GitRepo, dockerfile, remove_images, wait_clean
from tests.waits import wait_until


@pytest.fixture(scope="module")
def services(stack, busybox_image):
    for name in ("projector", "gateway", "builder"):
        stack.start_service(name)
    stack.start_service("builder", instance="builder2")
    yield stack
    stack.stop("builder2")
    stack.start_service("builder")
    remove_images(f"127.0.0.1:{stack.registry_port}/fo-")


@pytest.fixture(scope="module")
def api(services, store):
    user = f"fo-{uuid.uuid4().hex[:6]}"
    return Api(services.gateway_port, user, create_user(store, user))


def test_kill_builder_mid_build(services, api, settings, store, tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    # A unique step, so no earlier build's layer cache skips the sleep.
    repo.commit({"Dockerfile": dockerfile(f"RUN echo long step {uuid.uuid4().hex}; sleep 8")})
    sid = api.create_service(f"failover-{uuid.uuid4().hex[:6]}", repo.url)["service_id"]
    api.wait_repo_status(sid)
    vid = api.new_version(sid, "v1")

    def building() -> str | None:
        doc = api.version(vid) or {}
        stages = {s["name"]: s["status"] for s in doc.get("stages", [])}
        hb = store.builder_heartbeats.find_one({"_id": vid}) or {}
        return hb.get("worker") if stages.get("build") == "running" and hb.get("worker") else None

    owner = wait_until(building, 60, "the build stage to run")
    instance = owner.split("@", 1)[0]
    assert instance in ("builder", "builder2")
    services.kill(instance)
    killed_at = time.monotonic()

    doc = api.wait_version(vid, timeout=60)
    print(f"version {doc['status']} ({doc.get('error')}) {time.monotonic() - killed_at:.1f}s after the kill")
    assert time.monotonic() - killed_at <= 60
    assert doc["status"] in ("success", "failed"), doc
    if doc["status"] == "failed":
        assert doc["error"], doc
    wait_clean(vid, settings.workspaces, timeout=30)
