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


def test_a_push_repeated_after_a_crash_finds_the_image_in_the_registry(stack, busybox_image) -> None:
    """A run that pushed (and so took the image off the build host) and was killed before it published
    ImagePushed is resumed by another worker: its push answers with the registry's digest."""
    import asyncio

    import docker

    from infra.local.stack import REGISTRY_PASSWORD, REGISTRY_USER
    from services.builder.engine import DockerRegistry, PushError

    registry = f"127.0.0.1:{stack.registry_port}"
    image = f"{registry}/rg-{uuid.uuid4().hex[:6]}/idem:v1"
    client = docker.from_env()
    lines: list[str] = []

    async def line(text: str) -> None:
        lines.append(text)

    try:
        client.images.get(busybox_image).tag(image)
        pusher = DockerRegistry(registry, REGISTRY_USER, REGISTRY_PASSWORD)
        first = asyncio.run(pusher.push(client, image, line))
        assert first.startswith("sha256:")
        assert not [i for i in client.images.list() if image in i.tags]  # off the build host
        again = asyncio.run(pusher.push(client, image, line))
        assert again == first
        assert any("pushed before the builder restarted" in ln for ln in lines)
        with pytest.raises(PushError, match="no longer on the build host and not in the registry"):
            asyncio.run(pusher.push(client, f"{registry}/rg-never/built:v1", line))
    finally:
        remove_images(image)
        client.close()
