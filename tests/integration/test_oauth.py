"""OAuth for private repositories, GitHub and GitLab, against local stand-ins of the providers
(tests/fixtures/oauth_fake.py: authorize, token exchange, repository list, and a private repository
served by `git http-backend` that demands the token).

The gateway and builder instances here run with the OAuth settings (FORNAX_OAUTH_PROVIDERS,
FORNAX_OAUTH_CALLBACK_BASE; the stack's FORNAX_SECRETS_KEY seals the tokens) and, since the fakes serve
plain http on 127.0.0.1, with `http` added to FORNAX_REPO_URL_SCHEMES."""

from __future__ import annotations

import json
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from infra.local.procs import free_port
from shared.auth import create_user
from tests.fixtures.forge import Forge
from tests.fixtures.oauth_fake import FakeProvider
from tests.integration.builder_helpers import Api, GitRepo, dockerfile, remove_images
from tests.waits import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

CONFIG = """\
integration:
  image: fornax/busybox:latest
  commands:
    - cat app.txt
"""


@pytest.fixture(scope="module")
def world(stack, busybox_image, tmp_path_factory):
    root = tmp_path_factory.mktemp("oauth-git")
    repo = GitRepo(root / "acme")
    repo.commit({"Dockerfile": dockerfile("COPY app.txt /app.txt"), "app.txt": "private app\n",
                 "fornax.yml": CONFIG})
    github = FakeProvider("github", root, repos=["acme/origin.git"]).start()
    gitlab = FakeProvider("gitlab", root, repos=["acme/origin.git"]).start()
    port = free_port()
    env = {"FORNAX_OAUTH_PROVIDERS": json.dumps({"github": github.app_settings(), "gitlab": gitlab.app_settings()}),
           # The fakes serve plain http on 127.0.0.1: allowed here explicitly (the default has no http).
           "FORNAX_REPO_URL_SCHEMES": "https,ssh,git,svn,svn+ssh,http",
           "FORNAX_OAUTH_CALLBACK_BASE": f"http://127.0.0.1:{port}", "FORNAX_GATEWAY_PORT": str(port)}
    stack.start_service("projector")
    stack.start_service("logstream")  # archives the log lines read below
    stack.stop("builder")  # only the instance with the OAuth settings may take the versions
    stack.start_service("gateway", instance="gateway-oauth", env=env)
    stack.start_service("builder", instance="builder-oauth", env=env)
    forge = Forge(token="set-once-connected").start()  # GitHub's commit-status endpoint
    stack.start_service("notifier", env={"FORNAX_COMMIT_STATUS_TIMEOUT": "2", "FORNAX_PUBLIC_URL": "http://fornax.test"})
    try:
        yield {"port": port, "github": github, "gitlab": gitlab, "repo": repo, "forge": forge}
    finally:
        stack.stop("notifier")
        forge.stop()
        stack.stop("builder-oauth")
        stack.stop("gateway-oauth")
        github.stop()
        gitlab.stop()
        remove_images(f"127.0.0.1:{stack.registry_port}/oa-")
        stack.start_service("builder")


@pytest.fixture
def user(world, store):
    name = f"oa-{uuid.uuid4().hex[:6]}"
    return Api(world["port"], name, create_user(store, name))


def connect(api: Api, provider: str) -> httpx.Response:
    """requesttoken → the provider's authorize page (consents) → the gateway's callback."""
    resp = api.http.get(f"/{api.user}/services/{provider}/requesttoken")
    assert resp.status_code == 200, resp.text
    consent = httpx.get(resp.json()["authorize_url"], follow_redirects=False)
    assert consent.status_code == 302, consent.text
    return httpx.get(consent.headers["Location"])


def test_private_github_repository_builds_with_the_token(world, user, store) -> None:
    github, repo = world["github"], world["repo"]
    done = connect(user, "github")
    assert done.status_code == 200 and done.json() == {"user_id": user.user, "provider": "github",
                                                       "connected": True}
    # At rest: encrypted, not the token.
    doc = store.db["oauth_tokens"].find_one({"_id": f"{user.user}:github"})
    assert doc and not any(t in json.dumps(doc, default=str) for t in github.tokens)

    listed = user.http.get(f"/{user.user}/services/github/listrepo")
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == [{"name": "origin", "full_name": "acme/origin", "private": True,
                                       "clone_url": github.clone_url("acme/origin.git"), "default_branch": "main"}]
    assert user.http.get(f"/api/v1/{user.user}/services/github/listrepo").json() == listed.json()

    world["forge"].token = next(iter(github.tokens))  # the forge takes the OAuth token for commit statuses
    service = user.create_service("private-app", github.clone_url("acme/origin.git"),
                                  repository={"oauth": "github"},
                                  commit_status={"provider": "github", "api_url": world["forge"].url,
                                                 "repository": "acme/origin"})
    sid = service["service_id"]
    assert user.wait_repo_status(sid) == "healthy"
    vid = user.new_version(sid, "v1")
    version = user.wait_version(vid, timeout=180)
    assert version["status"] == "success", version
    assert repo.tag_commit("v1") == version["commit"]  # tagged through http, with the token
    wait_until(lambda: "success" in world["forge"].states(version["commit"]), 60,
               "the commit status posted with the OAuth token")
    assert any(r.startswith("x-access-token:ok /acme/origin.git/git-receive-pack") for r in github.git_requests)
    logs = wait_until(lambda: (r := user.http.get(f"/api/v1/{user.user}/versions/{vid}/logs")).status_code == 200
                      and "private app" in r.text and r, 60, "the archived log")
    # The token is in no log, event or response.
    seen = logs.text + json.dumps(user.service(sid)) + json.dumps(user.version(vid))
    seen += json.dumps([e for e in store.events.find({"aggregate_id": {"$in": [sid, vid]}})], default=str)
    assert github.tokens and not any(t in seen for t in github.tokens)

    # Revocable: logout deletes the token; listing and building no longer work.
    out = user.http.get(f"/{user.user}/services/github/logout")
    assert out.status_code == 200 and out.json() == {"provider": "github", "disconnected": True}
    assert store.db["oauth_tokens"].find_one({"_id": f"{user.user}:github"}) is None
    gone = user.http.get(f"/{user.user}/services/github/listrepo")
    assert gone.status_code == 409 and "not connected to github" in gone.json()["error"]["message"]
    after = user.wait_version(user.new_version(sid, "v2"), timeout=120)
    assert after["status"] == "failed", after


def test_state_is_random_bound_single_use_and_expires(world, user, store) -> None:
    gitlab = world["gitlab"]
    resp = user.http.get(f"/{user.user}/services/gitlab/requesttoken")
    url = resp.json()["authorize_url"]
    q = parse_qs(urlsplit(url).query)
    assert q["redirect_uri"] == [f"http://127.0.0.1:{world['port']}/services/gitlab/authcallback"]
    assert len(q["state"][0]) >= 40 and q["client_id"] == [gitlab.client_id]
    callback = httpx.get(url, follow_redirects=False).headers["Location"]
    forged = callback.replace(q["state"][0], "forged-" + q["state"][0][7:])
    bad = httpx.get(forged)
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "state"
    assert httpx.get(callback).status_code == 200          # the real one, once
    again = httpx.get(callback)
    assert again.status_code == 400 and again.json()["error"]["field"] == "state"
    listed = user.http.get(f"/{user.user}/services/gitlab/listrepo").json()["items"]
    assert listed[0]["full_name"] == "acme/origin" and listed[0]["private"] is True

    # Expired states are refused.
    resp = user.http.get(f"/{user.user}/services/gitlab/requesttoken")
    callback = httpx.get(resp.json()["authorize_url"], follow_redirects=False).headers["Location"]
    store.db["oauth_states"].update_many({"user_id": user.user}, {"$set": {"expires_at": 0}})
    assert httpx.get(callback).status_code == 400

    # The provider's refusal, a missing code, unknown providers, other users.
    port = world["port"]
    assert httpx.get(f"http://127.0.0.1:{port}/services/gitlab/authcallback?error=access_denied").status_code == 400
    assert httpx.get(f"http://127.0.0.1:{port}/services/gitlab/authcallback?state=x").json()["error"]["field"] == "code"
    assert user.http.get(f"/{user.user}/services/bitbucket/requesttoken").status_code == 404
    assert user.http.get("/someone-else/services/github/requesttoken").status_code == 403
    assert httpx.get(f"http://127.0.0.1:{port}/{user.user}/services/github/listrepo").status_code == 401


def test_service_with_oauth_needs_a_connection(world, user) -> None:
    resp = user.http.post(f"/api/v1/{user.user}/services", json={
        "name": "nope", "repository": {"url": world["github"].clone_url("acme/origin.git"), "oauth": "github"}})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "repository.oauth", resp.text
    resp = user.http.post(f"/api/v1/{user.user}/services", json={
        "name": "nope", "repository": {"url": "https://x.test/a.git", "oauth": "github", "password": "p"}})
    assert resp.status_code == 422, resp.text
    resp = user.http.post(f"/api/v1/{user.user}/services", json={
        "name": "nope", "repository": {"url": "https://x.test/a.git"},
        "commit_status": {"provider": "github", "api_url": "https://api.x.test", "repository": "a/b"}})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "commit_status.token_secret", resp.text
