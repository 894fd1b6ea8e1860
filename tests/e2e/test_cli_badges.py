"""The `fornax` CLI and the status badges, as a user meets them: real gateway, projector, builder, logstream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from shared.auth import create_user
from tests.integration.builder_helpers import GitRepo, dockerfile, remove_images

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def services(stack, busybox_image):
    for name in ("projector", "gateway", "builder", "logstream"):
        stack.start_service(name)
    yield stack
    remove_images(f"127.0.0.1:{stack.registry_port}/cli-")


@pytest.fixture(scope="module")
def user(services, store):
    name = f"cli-{uuid.uuid4().hex[:6]}"
    return name, create_user(store, name)


def fornax(stack, token: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.env(), "FORNAX_TOKEN": token,
           "FORNAX_URL": f"http://127.0.0.1:{stack.gateway_port}",
           "FORNAX_LOGSTREAM_URL": f"ws://127.0.0.1:{stack.logstream_port}"}
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True,
                          env=env, input=stdin, timeout=180)


def test_cli_walk_through_and_badges(services, user, tmp_path: Path) -> None:
    name, token = user
    repo = GitRepo(tmp_path)
    repo.commit({"Dockerfile": dockerfile("RUN echo built-by-cli-marker", 'CMD ["true"]')})

    created = fornax(services, token, "service", "create", "web", "--repo", repo.url, "--public", "--json")
    assert created.returncode == 0, created.stderr
    service = json.loads(created.stdout)
    assert service["name"] == "web" and service["public"] is True and service["webhook_secret"]

    listed = fornax(services, token, "service", "list")
    assert listed.returncode == 0 and "web" in listed.stdout and "SERVICE_ID" in listed.stdout

    badge_url = f"http://127.0.0.1:{services.gateway_port}/badges/{name}/web.svg"
    none = httpx.get(badge_url)
    assert none.status_code == 200 and ">none<" in none.text
    assert none.headers["content-type"].startswith("image/svg+xml")

    # version create --follow: the build's own output arrives, and the exit code is the outcome.
    built = fornax(services, token, "version", "create", "web", "v1.0.0", "--follow")
    assert built.returncode == 0, built.stdout + built.stderr
    assert "built-by-cli-marker" in built.stdout
    assert "ended: success" in built.stderr

    versions = json.loads(fornax(services, token, "version", "list", "web", "--json").stdout)
    assert [v["name"] for v in versions] == ["v1.0.0"] and versions[0]["status"] == "success"
    vid = versions[0]["version_id"]
    shown = fornax(services, token, "version", "show", vid)
    assert shown.returncode == 0 and "stages:" in shown.stdout and "build" in shown.stdout

    logs = fornax(services, token, "logs", vid)
    assert logs.returncode == 0 and "built-by-cli-marker" in logs.stdout

    # The badge is public, cached by ETag, and filters by branch.
    passing = httpx.get(badge_url)
    assert passing.status_code == 200 and ">passing<" in passing.text
    assert passing.headers["cache-control"] == "no-cache"
    again = httpx.get(badge_url, headers={"If-None-Match": passing.headers["etag"]})
    assert again.status_code == 304
    assert ">none<" in httpx.get(badge_url, params={"branch": "no-such-branch"}).text

    # Refusals name what was wrong and exit 3; cancel of an ended version is refused too.
    bad_target = fornax(services, token, "deploy", "web", vid, "--target", "nowhere")
    assert bad_target.returncode == 3 and "target" in bad_target.stderr
    assert fornax(services, token, "version", "cancel", vid).returncode == 3
    assert fornax(services, token, "service", "show", "no-such-service").returncode == 3
    history = fornax(services, token, "history", "web")
    assert history.returncode == 0 and "(none)" in history.stdout

    # Usage errors are 64; an unreachable server is 4.
    assert fornax(services, token, "version", "create").returncode == 64
    down = subprocess.run([sys.executable, "-m", "services.cli", "service", "list", "--url", "http://127.0.0.1:9"],
                          capture_output=True, text=True, env={**os.environ, "FORNAX_TOKEN": token}, timeout=60)
    assert down.returncode == 4 and "cannot reach" in down.stderr


def test_private_badge_needs_the_owners_token(services, store, tmp_path: Path) -> None:
    owner = f"cli-{uuid.uuid4().hex[:6]}"
    token = create_user(store, owner)
    other = create_user(store, f"cli-{uuid.uuid4().hex[:6]}")
    created = fornax(services, token, "service", "create", "secretapp", "--repo", GitRepo(tmp_path).url)
    assert created.returncode == 0, created.stderr
    url = f"http://127.0.0.1:{services.gateway_port}/badges/{owner}/secretapp.svg"
    assert httpx.get(url).status_code == 404
    assert httpx.get(url, headers={"Authorization": f"Bearer {other}"}).status_code == 404
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{services.gateway_port}/badges/{owner}/missing.svg").status_code == 404


def test_token_rotate_and_revoke(services, store) -> None:
    name = f"cli-{uuid.uuid4().hex[:6]}"
    old = create_user(store, name)
    rotated = fornax(services, old, "token", "rotate", "--json")
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)["token"]
    assert new != old
    refused = fornax(services, old, "service", "list")
    assert refused.returncode == 3 and "401" in refused.stderr
    assert fornax(services, new, "service", "list").returncode == 0
    assert fornax(services, new, "token", "revoke").returncode == 0
    assert fornax(services, new, "service", "list").returncode == 3
