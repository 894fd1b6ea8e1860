"""The API as a user meets it: `fornax user create`, then services, versions and a webhook through HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import httpx
import pytest

from tests.integration.gateway_helpers import assert_error, auth, github_push
from tests.waits import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api(stack):
    stack.start_service("projector")
    stack.start_service("gateway")
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.gateway_port}", timeout=30) as client:
        yield client


def fornax(stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **stack.env()},
        timeout=60,
    )


def test_user_command_prints_token_once(stack, api):
    name = "dana-" + uuid.uuid4().hex[:6]
    first = fornax(stack, "user", "create", name)
    assert first.returncode == 0, first.stderr
    token = first.stdout.strip().splitlines()[-1]
    assert token.startswith("fx_")
    assert api.get(f"/api/v1/{name}/services", headers=auth(token)).json()["services"] == []
    again = fornax(stack, "user", "create", name)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert token not in again.stdout + again.stderr
    bad = fornax(stack, "user", "create", "Not Valid")
    assert bad.returncode == 1 and "invalid user name" in bad.stderr


def test_walk_through(stack, api):
    name = "erin-" + uuid.uuid4().hex[:6]
    token = fornax(stack, "user", "create", name).stdout.strip().splitlines()[-1]
    h = auth(token)
    repo = f"https://git.example.test/{name}/shop.git"
    created = api.post(
        f"/api/v1/{name}/services",
        headers=h,
        json={"name": "shop", "description": "the shop", "repository": {"url": repo, "vcs": "git"}},
    )
    assert created.status_code in (201, 202)
    sid, secret = created.json()["service_id"], created.json()["webhook_secret"]
    service = wait_until(
        lambda: (r := api.get(f"/api/v1/{name}/services/{sid}", headers=h)).status_code == 200 and r.json(),
        timeout=30,
        what="the service",
    )
    assert service["name"] == "shop" and service["status"] in ("accepted", "healthy", "missing", "unknownvcs")

    version = api.post(
        f"/api/v1/{name}/versions",
        headers=h,
        json={"service_id": sid, "name": "v1.0.0", "operations": ["integration", "publish"]},
    )
    assert version.status_code in (201, 202)
    vid = version.json()["version_id"]
    doc = wait_until(
        lambda: (r := api.get(f"/api/v1/{name}/versions/{vid}", headers=h)).status_code == 200 and r.json(),
        timeout=30,
        what="the version",
    )
    assert doc["name"] == "v1.0.0" and doc["trigger"] == "api"
    names = [s["name"] for s in doc["stages"]]
    order = ["clone", "integration", "pre_build", "build", "push", "tag", "post_build", "deploy"]
    assert names == [s for s in order if s in names]  # stages in pipeline order

    delivery = str(uuid.uuid4())
    headers, body = github_push(repo, secret, ref="refs/heads/main", delivery=delivery)
    assert api.post("/webhooks/github", content=body, headers=headers).status_code == 202

    def webhook_version():
        listing = api.get(f"/api/v1/{name}/services/{sid}/versions", headers=h).json()
        return [v for v in listing["versions"] if v.get("delivery_id") == delivery]

    [built] = wait_until(webhook_version, timeout=30, what="the webhook version")
    assert built["trigger"] == "webhook" and built["branch"] == "main"
    assert built["name"].startswith("main-")
    listing = api.get(f"/api/v1/{name}/services/{sid}/versions", headers=h).json()
    assert listing["total"] == 2 and listing["versions"][0]["version_id"] == built["version_id"]

    assert api.delete(f"/api/v1/{name}/services/{sid}", headers=h).status_code == 202
    wait_until(
        lambda: api.get(f"/api/v1/{name}/services/{sid}", headers=h).status_code == 404, timeout=30, what="deletion"
    )
    assert_error(api.post(f"/api/v1/{name}/versions", headers=h, json={"service_id": sid, "name": "v2"}), 404)
