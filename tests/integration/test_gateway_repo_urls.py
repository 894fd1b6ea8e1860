"""The repository URL policy at the gateway: a gateway with the defaults (local repositories off)
refuses file:// URLs, bare paths, other schemes and credentials in the URL (422 naming the field) at
create and update, and accepts the allowed schemes. The builder side: a missing local repository's
check message holds no host path besides the URL as the user gave it."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from infra.local.procs import free_port
from services.builder.vcs import RepoSpec, VcsError
from services.builder.vcs.clients import GitSvn
from shared.auth import create_user
from tests.integration.builder_helpers import Api, wait_clean
from tests.integration.gateway_helpers import assert_error, auth
from tests.waits import wait_until

pytestmark = pytest.mark.integration

GATEWAY = "gateway-no-local"
CREDENTIAL_FIELDS = ("repository.username", "repository.password")


@pytest.fixture(scope="module")
def strict(stack, store):
    """A second gateway with the server defaults: local repositories not allowed."""
    stack.start_service("projector")
    port = free_port()
    stack.start_service(
        "gateway", instance=GATEWAY, env={"FORNAX_GATEWAY_PORT": str(port), "FORNAX_REPO_ALLOW_LOCAL": "false",
                               "FORNAX_REPO_URL_SCHEMES": "https,ssh,git,svn,svn+ssh"}
    )
    user = "urls-" + uuid.uuid4().hex[:6]
    token = create_user(store, user)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, headers=auth(token)) as client:
            yield client, user
    finally:
        stack.stop(GATEWAY)


def _create(api: httpx.Client, user: str, url: str) -> httpx.Response:
    return api.post(
        f"/api/v1/{user}/services",
        json={"name": "s-" + uuid.uuid4().hex[:8], "repository": {"url": url, "vcs": "git"}},
    )


@pytest.mark.parametrize(
    "url, says",
    [
        ("file:///srv/git/other-user.git", "local repositories"),
        ("/srv/git/other-user.git", "local repositories"),
        ("../other-user.git", "local repositories"),
        ("ext::id", "not allowed"),
        ("http://git.example.test/a.git", "not allowed"),
    ],
)
def test_local_and_unlisted_urls_are_refused(strict, url: str, says: str) -> None:
    api, user = strict
    err = assert_error(_create(api, user, url), 422, "validation_error", "repository.url")
    assert says in err["message"]


@pytest.mark.parametrize("url", ["https://u:p@git.example.test/r.git", "https://ghp_abc123@git.example.test/r.git"])
def test_credentials_in_the_url_are_refused_naming_the_credential_fields(strict, url: str) -> None:
    api, user = strict
    err = assert_error(_create(api, user, url), 422, "validation_error", "repository.url")
    assert all(name in err["message"] for name in CREDENTIAL_FIELDS), err
    assert "ghp_abc123" not in err["message"] and "u:p@" not in err["message"]
    # nothing was stored: the user has no service
    assert api.get(f"/api/v1/{user}/services").json()["total"] == 0


def test_allowed_schemes_are_accepted_and_updates_are_checked_too(strict) -> None:
    api, user = strict
    ids = []
    for url in (
        "https://git.example.test/a.git",
        "ssh://git@git.example.test/a.git",
        "git@git.example.test:a.git",
        "git://git.example.test/a.git",
        "svn://svn.example.test/a/trunk",
    ):
        resp = _create(api, user, url)
        assert resp.status_code in (201, 202), (url, resp.text)  # 202: not yet projected
        ids.append(resp.json()["service_id"])
    sid = ids[0]
    wait_until(lambda: api.get(f"/api/v1/{user}/services/{sid}").status_code == 200, timeout=30, what="the service")
    path = f"/api/v1/{user}/services/{sid}"
    err = assert_error(
        api.put(path, json={"repository": {"url": "https://u:p@git.example.test/a.git"}}),
        422,
        "validation_error",
        "repository.url",
    )
    assert all(name in err["message"] for name in CREDENTIAL_FIELDS)
    assert_error(api.put(path, json={"repository": {"url": "file:///etc"}}), 422, field="repository.url")
    assert api.put(path, json={"repository": {"url": "https://git.example.test/b.git"}}).status_code == 202
    assert api.get(path).json()["repository"]["url"] in (
        "https://git.example.test/a.git",  # the projector may not have applied the update yet
        "https://git.example.test/b.git",
    )


# An absolute path standing on its own, as in git's or svn's messages.
_HOST_PATH = re.compile(r"(?<![\w.:/~+-])/[\w.~+-]+/")


def _host_paths(message: str, url: str) -> list[str]:
    return _HOST_PATH.findall(message.replace(url, "<url>"))


def test_check_and_clone_errors_name_no_host_path(tmp_path: Path) -> None:
    vcs = GitSvn(probe_timeout=10)
    missing = f"file:///nonexistent-{uuid.uuid4().hex[:6]}/r.git"
    probe = asyncio.run(vcs.probe(RepoSpec(missing)))
    assert probe.status == "missing" and missing in probe.message
    assert _host_paths(probe.message, missing) == [], probe.message
    # a "repository" whose git file points somewhere else on the host: that path is not shown
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / ".git").write_text(f"gitdir: {tmp_path}/hidden/place\n")
    probe = asyncio.run(vcs.probe(RepoSpec(str(fake))))
    assert probe.status == "missing" and str(tmp_path / "hidden") not in probe.message, probe.message
    assert _host_paths(probe.message, str(fake)) == [], probe.message
    svn = asyncio.run(vcs.probe(RepoSpec(missing, vcs="svn")))
    assert svn.status == "missing" and _host_paths(svn.message, missing) == [], svn.message

    async def quiet(_: str) -> None:
        return None

    # clone failures: git names the workspace it clones into ("Cloning into '<workspace>'...")
    for url in (missing, "http://127.0.0.1:9/r.git"):
        with pytest.raises(VcsError) as info:
            asyncio.run(vcs.clone(RepoSpec(url), tmp_path / "workspaces" / "v1", None, None, quiet))
        assert str(tmp_path) not in str(info.value) and _host_paths(str(info.value), url) == [], info.value


def test_the_builder_fails_a_version_whose_stored_url_is_not_allowed(stack, store, settings, busybox_image) -> None:
    """A service stored before the policy (credentials in its URL, which the gateway no longer takes):
    its version fails with the reason, and the password shows nowhere."""
    for name in ("projector", "gateway", "builder"):
        stack.start_service(name)
    user = "urls-old-" + uuid.uuid4().hex[:6]
    api = Api(stack.gateway_port, user, create_user(store, user))
    sid, name = uuid.uuid4().hex, "stored-before"
    now = datetime.now(UTC)
    store.services.insert_one({
        "_id": sid, "user_id": user, "name": name, "description": "", "status": "healthy",
        "repository": {"url": "https://fornax:hunter2pw@git.example.test/r.git", "vcs": "git", "username": None},
        "deleted": False, "created_at": now, "updated_at": now,
    })  # fmt: skip
    store.secrets.insert_one({"_id": sid, "webhook_secret": "stored-secret", "values": {}})
    store.reservations.insert_one({"_id": f"service:{user}/{name}", "ref": sid})
    try:
        vid = api.new_version(sid, "v1")
        doc = api.wait_version(vid, timeout=90)
        assert doc["status"] == "failed", doc
        assert "the repository URL is not allowed" in doc["error"] and "repository.password" in doc["error"]
        assert "hunter2pw" not in str(doc)
        shown = api.service(sid)["repository"]["url"]
        assert shown == "https://****@git.example.test/r.git", shown
        wait_clean(vid, settings.workspaces)
    finally:
        # Written straight into the read model (no event made it), so no rebuild could make it again:
        # gone again, the session's read models stay a fold of its events (test_projector checks that).
        store.services.delete_one({"_id": sid})
        store.secrets.delete_one({"_id": sid})
        store.reservations.delete_one({"_id": f"service:{user}/{name}"})
