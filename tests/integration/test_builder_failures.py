"""Bad input and failures through the real stack (gateway, projector, builder, dockerd, registry, git).

Each failure names its reason in the version, and leaves no container, network or workspace behind.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from shared.auth import create_user
from tests.integration.builder_helpers import (
    Api,
    GitRepo,
    dockerfile,
    leftovers,
    registry_tags,
    remove_images,
    sh,
)
from tests.integration.gateway_helpers import consume_until


@pytest.fixture(scope="module")
def services(stack, busybox_image):
    for name in ("projector", "gateway", "builder"):
        stack.start_service(name)
    yield stack
    remove_images(f"127.0.0.1:{stack.registry_port}/bf-")


@pytest.fixture(scope="module")
def api(services, store):
    user = f"bf-{uuid.uuid4().hex[:6]}"
    return Api(services.gateway_port, user, create_user(store, user))


@pytest.fixture(scope="module")
def other(services, store):
    user = f"bf-other-{uuid.uuid4().hex[:6]}"
    return Api(services.gateway_port, user, create_user(store, user))


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path)


def _service(api: Api, url: str, vcs: str = "git") -> str:
    """Create a service and wait for its repository check (the read model then has it)."""
    sid = api.create_service(f"svc-{uuid.uuid4().hex[:8]}", url, vcs=vcs)["service_id"]
    api.wait_repo_status(sid)
    return sid


def _fails(api: Api, settings, sid: str, **version) -> dict:
    vid = api.new_version(sid, **version)
    doc = api.wait_version(vid, timeout=90)
    assert doc["status"] == "failed", doc
    assert doc["error"], doc
    assert leftovers(vid, settings.workspaces) == []
    return doc


def test_unreachable_repository_is_missing_and_versions_are_refused(api, settings) -> None:
    sid = _service(api, "123456")
    assert api.service(sid)["status"] == "missing"
    doc = _fails(api, settings, sid)
    assert "not healthy (missing)" in doc["error"]


def test_unknown_vcs(api, settings) -> None:
    sid = _service(api, "https://example.invalid/x.hg", vcs="hg")
    assert api.service(sid)["status"] == "unknownvcs"
    assert "unknownvcs" in _fails(api, settings, sid)["error"]


def test_unknown_commit(api, settings, repo) -> None:
    repo.commit({"Dockerfile": dockerfile()})
    sid = _service(api, repo.url)
    doc = _fails(api, settings, sid, commit="0123456789abcdef0123456789abcdef01234567")
    assert "unknown commit" in doc["error"]
    assert {s["name"]: s["status"] for s in doc["stages"]}["clone"] == "failed"


def test_missing_dockerfile(api, settings, repo) -> None:
    repo.commit({"README": "no dockerfile here\n"})
    doc = _fails(api, settings, _service(api, repo.url))
    assert "Dockerfile not found" in doc["error"]
    assert {s["name"]: s["status"] for s in doc["stages"]}["build"] == "failed"


def test_failing_dockerfile_names_the_step(api, settings, repo) -> None:
    repo.commit({"Dockerfile": dockerfile("RUN echo building", "RUN echo about-to-fail && exit 3")})
    doc = _fails(api, settings, _service(api, repo.url))
    assert "RUN echo about-to-fail && exit 3" in doc["error"], doc["error"]
    assert "3" in doc["error"]
    vid = doc["version_id"]
    lines = consume_until(
        settings.kafka_bootstrap,
        settings.topic("logs"),
        lambda e: e["aggregate_id"] == vid and "about-to-fail" in e["payload"]["text"],
        count=2,
        timeout=20,
    )
    assert len(lines) >= 2  # the step header and its output


def test_bad_config_names_key_and_line(api, settings, repo) -> None:
    repo.commit({"Dockerfile": dockerfile(), "fornax.yml": "integration:\n  image: x\n  comands: [true]\n"})
    doc = _fails(api, settings, _service(api, repo.url))
    assert "line 3" in doc["error"] and "comands" in doc["error"], doc["error"]


def test_integration_only_pushes_nothing(api, services, settings, repo) -> None:
    repo.commit(
        {
            "Dockerfile": dockerfile(),
            "fornax.yml": "integration:\n  image: fornax/busybox:latest\n  commands: [echo ci-ok]\n",
        }
    )
    sid = _service(api, repo.url)
    name = api.service(sid)["name"]
    vid = api.new_version(sid, "ci-only", operations=["integration"])
    doc = api.wait_version(vid)
    assert doc["status"] == "success", doc
    assert not doc.get("image") and not doc.get("digest")
    assert registry_tags(services.registry_port, f"{api.user}/{name}") == []
    assert repo.tag_commit("ci-only") is None
    assert leftovers(vid, settings.workspaces) == []


def test_tag_existing_at_another_commit_fails(api, settings, repo) -> None:
    first = repo.commit({"Dockerfile": dockerfile()})
    # The tag name is taken in the origin by another commit.
    sh("git", "-C", str(repo.work), "tag", "v9.9.9", first)
    sh("git", "-C", str(repo.work), "push", "-q", "origin", "refs/tags/v9.9.9")
    second = repo.commit({"Dockerfile": dockerfile("RUN true")})
    doc = _fails(api, settings, _service(api, repo.url), name="v9.9.9")
    assert f"tag v9.9.9 already exists at {first}" in doc["error"], doc["error"]
    assert repo.tag_commit("v9.9.9") == first != second


def test_same_tag_same_commit_is_fine(api, settings, repo) -> None:
    sha = repo.commit({"Dockerfile": dockerfile()})
    sh("git", "-C", str(repo.work), "tag", "-a", "-m", "pre", "v1.2.3", sha)
    sh("git", "-C", str(repo.work), "push", "-q", "origin", "refs/tags/v1.2.3")
    vid = api.new_version(_service(api, repo.url), "v1.2.3")
    assert api.wait_version(vid)["status"] == "success"


def test_duplicate_version_name_is_409(api, repo) -> None:
    repo.commit({"Dockerfile": dockerfile()})
    sid = _service(api, repo.url)
    assert api.create_version(sid, "dup").status_code in (201, 202)
    resp = api.create_version(sid, "dup")
    assert resp.status_code == 409, resp.text
    assert resp.json()["error"]["code"]


def test_other_users_service_is_not_reachable(api, other, repo) -> None:
    repo.commit({"Dockerfile": dockerfile()})
    sid = _service(api, repo.url)
    assert other.http.get(f"/api/v1/{other.user}/services/{sid}").status_code in (403, 404)
    assert other.create_version(sid, "steal").status_code in (403, 404)
    assert other.http.get(f"/api/v1/{api.user}/services/{sid}").status_code in (401, 403, 404)
