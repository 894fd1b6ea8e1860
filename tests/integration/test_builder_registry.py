"""Registry failures: a builder with a wrong registry password, and one pointed at a registry that is
down. The version fails naming the reason (no endless retry) and leaves nothing behind."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from infra.local.procs import free_port
from shared.auth import create_user
from tests.integration.builder_helpers import Api, GitRepo, dockerfile, leftovers, remove_images


@pytest.fixture(scope="module")
def services(stack, busybox_image):
    for name in ("projector", "gateway"):
        stack.start_service(name)
    stack.stop("builder")  # only the misconfigured instance below may take the versions
    yield stack
    remove_images(f"127.0.0.1:{stack.registry_port}/rg-")
    stack.start_service("builder")


@pytest.fixture(scope="module")
def api(services, store):
    user = f"rg-{uuid.uuid4().hex[:6]}"
    return Api(services.gateway_port, user, create_user(store, user))


def _run_with(services, env: dict[str, str], api: Api, settings, tmp_path: Path) -> dict:
    services.start_service("builder", instance="builder-misconfigured", env=env)
    try:
        repo = GitRepo(tmp_path)
        repo.commit({"Dockerfile": dockerfile("RUN echo layer > /layer.txt")})
        sid = api.create_service(f"reg-{uuid.uuid4().hex[:6]}", repo.url)["service_id"]
        api.wait_repo_status(sid)
        vid = api.new_version(sid, "v1")
        doc = api.wait_version(vid, timeout=120)
        assert doc["status"] == "failed", doc
        assert {s["name"]: s["status"] for s in doc["stages"]}["push"] == "failed"
        assert repo.tag_commit("v1") is None  # nothing tagged after a failed push
        assert leftovers(vid, settings.workspaces) == []
        return doc
    finally:
        services.stop("builder-misconfigured")


def test_wrong_registry_password(services, api, settings, tmp_path: Path) -> None:
    doc = _run_with(services, {"FORNAX_REGISTRY_PASSWORD": "not-the-password"}, api, settings, tmp_path)
    assert "unauthorized" in doc["error"].lower() or "authentication" in doc["error"].lower(), doc["error"]
    assert "not-the-password" not in str(doc)


def test_registry_down(services, api, settings, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    try:
        doc = _run_with(services, {"FORNAX_REGISTRY_LOCATION": f"127.0.0.1:{port}"}, api, settings, tmp_path)
    finally:
        remove_images(f"127.0.0.1:{port}/rg-")
    assert "connection refused" in doc["error"].lower() or "connect" in doc["error"].lower(), doc["error"]
