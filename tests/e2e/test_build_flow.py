"""End to end through HTTP: git service + signed GitHub webhook → success; svn service + API version.

Checks the image is listed by the registry and pulls back, the origin has the tag at the commit,
the log was written, and nothing labelled with the version (or its workspace) remains.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import docker
import pytest

from infra.local.stack import REGISTRY_PASSWORD, REGISTRY_USER
from shared.auth import create_user
from tests.integration.builder_helpers import (
    Api,
    GitRepo,
    SvnRepo,
    dockerfile,
    leftovers,
    registry_tags,
    remove_images,
)
from tests.integration.gateway_helpers import consume_until, github_push


@pytest.fixture(scope="module")
def services(stack, busybox_image):
    for name in ("projector", "gateway", "builder"):
        stack.start_service(name)
    yield stack


@pytest.fixture(scope="module")
def api(services, store):
    user = f"e2e-{uuid.uuid4().hex[:6]}"
    return Api(services.gateway_port, user, create_user(store, user))


@pytest.fixture(autouse=True)
def _images(stack):
    yield
    remove_images(f"127.0.0.1:{stack.registry_port}/e2e-")


def test_git_webhook_to_success(api, services, settings, tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit(
        {
            "Dockerfile": dockerfile("COPY index.html /www/index.html", 'CMD ["httpd", "-f", "-p", "8080"]'),
            "index.html": "<h1>hello</h1>\n",
        }
    )
    created = api.create_service("webapp", repo.url, webhook_secret="s3cret-webhook")
    sid = created["service_id"]
    assert api.wait_repo_status(sid) == "healthy"

    sha = repo.commit({"index.html": "<h1>hello again</h1>\n"}, "second")
    headers, body = github_push(repo.url, "s3cret-webhook", after=sha)
    resp = api.http.post("/webhooks/github", content=body, headers=headers)
    assert resp.status_code in (200, 202), resp.text

    def version_id():
        resp = api.http.get(f"/api/v1/{api.user}/services/{sid}/versions")
        items = resp.json()["versions"] if resp.status_code == 200 else []
        return items[0]["version_id"] if items else None

    from tests.waits import wait_until

    vid = wait_until(version_id, 30, "the webhook's version")
    doc = api.wait_version(vid, timeout=120)
    assert doc["status"] == "success", doc
    name = doc["name"]
    assert name == f"main-{sha[:7]}"
    assert doc["commit"] == sha
    image = f"127.0.0.1:{services.registry_port}/{api.user}/webapp:{name}"
    assert doc["image"] == image
    assert doc["digest"].startswith("sha256:")
    stages = {s["name"]: s["status"] for s in doc["stages"]}
    assert stages == {"clone": "success", "build": "success", "push": "success", "tag": "success"}

    # The registry lists it and it pulls back (the builder removed it from the build host after the push).
    assert name in registry_tags(services.registry_port, f"{api.user}/webapp")
    client = docker.from_env()
    try:
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get(image)
        pulled = client.images.pull(
            image, auth_config={"username": REGISTRY_USER, "password": REGISTRY_PASSWORD}
        )
        assert doc["digest"] in " ".join(pulled.attrs.get("RepoDigests", []))
    finally:
        client.close()

    # The origin has an annotated tag at the commit.
    assert repo.tag_commit(name) == sha
    assert repo.tag_type(name) == "tag"

    # The log: clone and build output, on fornax.logs with a per-version sequence.
    lines = consume_until(
        settings.kafka_bootstrap,
        settings.topic("logs"),
        lambda e: e["aggregate_id"] == vid and "Step 2/" in e["payload"]["text"],
        timeout=20,
    )
    assert lines, "the build steps are in the version's log"
    assert leftovers(vid, settings.workspaces) == []


def test_svn_service_through_the_api(api, services, settings, tmp_path: Path) -> None:
    repo = SvnRepo(tmp_path)
    rev = repo.commit({"Dockerfile": dockerfile("RUN echo svn-build > /built.txt")})
    sid = api.create_service("svnapp", repo.url, vcs="svn")["service_id"]
    assert api.wait_repo_status(sid) == "healthy"
    vid = api.new_version(sid, "v1.0.0", description="first svn release")
    doc = api.wait_version(vid, timeout=120)
    assert doc["status"] == "success", doc
    assert doc["commit"] == rev
    assert "v1.0.0" in registry_tags(services.registry_port, f"{api.user}/svnapp")
    assert repo.tag_source("v1.0.0") == rev
    assert leftovers(vid, settings.workspaces) == []


def test_log_is_masked_and_sequenced(api, services, settings, tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    secret = f"very-secret-{uuid.uuid4().hex[:8]}"
    repo.commit({"Dockerfile": dockerfile(f"RUN echo the key is {secret}; echo {REGISTRY_PASSWORD}")})
    sid = api.create_service(
        "masked", repo.url, secrets={"API_KEY": secret}, repository={"password": "repo-pass-123"}
    )["service_id"]
    api.wait_repo_status(sid)
    vid = api.new_version(sid, "v1")
    assert api.wait_version(vid, timeout=120)["status"] == "success"
    lines = consume_until(
        settings.kafka_bootstrap,
        settings.topic("logs"),
        lambda e: e["aggregate_id"] == vid,
        count=10_000,
        timeout=10,
    )
    texts = [e["payload"]["text"] for e in lines]
    assert any("the key is ****" in t for t in texts), texts
    joined = "\n".join(texts)
    assert secret not in joined and REGISTRY_PASSWORD not in joined and "repo-pass-123" not in joined
    seqs = [e["payload"]["seq"] for e in lines]
    assert seqs == list(range(1, len(seqs) + 1))  # one writer across build, push and tag: no gap, no repeat
    stages = {e["payload"]["stage"] for e in lines}
    assert {"clone", "build", "push", "tag"} <= stages
