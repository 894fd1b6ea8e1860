"""The Fornax 2016 REST paths (no /api/v1 prefix) answer exactly as their /api/v1 twins, and never
shadow the gateway's fixed paths."""

from __future__ import annotations

import uuid

import httpx
import pytest

from services.gateway.routes.compat import RESERVED, SEED_PATHS
from shared.auth import create_user
from tests.integration.gateway_helpers import auth
from tests.waits import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(stack, no_build_workers):
    stack.start_service("projector")
    stack.start_service("gateway")
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.gateway_port}", timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def user(store):
    name = "compat-" + uuid.uuid4().hex[:6]
    return name, create_user(store, name)


def same(api, method: str, path: str, token: str | None, **kw) -> httpx.Response:
    """Call the compat path and its /api/v1 twin; both answer the same status and body (an error
    message that quotes the request path quotes each its own)."""
    headers = auth(token) if token else {}
    old = api.request(method, path, headers=headers, **kw)
    new = api.request(method, "/api/v1" + path, headers=headers, **kw)
    twin_body = new.content.replace(b" on /api/v1" + path.encode(), b" on " + path.encode())
    assert (old.status_code, old.content) == (new.status_code, twin_body), (method, path, old.text, new.text)
    return old


def test_every_compat_path_answers_as_its_twin(api, user) -> None:
    name, token = user
    created = api.post(f"/{name}/services", headers=auth(token), json={
        "name": "svc-" + uuid.uuid4().hex[:8],
        "repository": {"url": f"https://git.example.test/{name}/app.git", "vcs": "git"}})
    assert created.status_code in (201, 202), created.text
    assert created.headers["Location"].startswith(f"/api/v1/{name}/services/")
    sid = created.json()["service_id"]
    wait_until(lambda: api.get(f"/{name}/services/{sid}", headers=auth(token)).status_code == 200,
               timeout=30, what="the service through its compat path")
    version = api.post(f"/{name}/versions", headers=auth(token),
                       json={"service_id": sid, "name": "v1", "operations": ["integration"]})
    assert version.status_code in (201, 202), version.text
    vid = version.json()["version_id"]
    wait_until(lambda: api.get(f"/{name}/versions/{vid}", headers=auth(token)).status_code == 200,
               timeout=30, what="the version through its compat path")

    covered = set()
    for path, template in ((f"/{name}/services", "/{user_id}/services"),
                           (f"/{name}/services/{sid}", "/{user_id}/services/{service_id}"),
                           (f"/{name}/services/{sid}/versions", "/{user_id}/services/{service_id}/versions"),
                           (f"/{name}/versions/{vid}", "/{user_id}/versions/{version_id}"),
                           (f"/{name}/versions/{vid}/logs", "/{user_id}/versions/{version_id}/logs")):
        assert same(api, "GET", path, token).status_code == 200, path
        same(api, "GET", path, None)                       # 401 alike
        same(api, "GET", path, token + "x")
        covered.add(template)
    # Writes: the same validation errors, field by field, and the same 404s.
    same(api, "POST", f"/{name}/services", token, json={"name": "Bad Name"})
    same(api, "POST", f"/{name}/versions", token, json={"service_id": sid, "name": "bad..tag"})
    same(api, "PUT", f"/{name}/services/{sid}", token, json={"nope": 1})
    same(api, "DELETE", f"/{name}/services/missing-{uuid.uuid4().hex[:6]}", token)
    same(api, "GET", f"/{name}/versions/missing-{uuid.uuid4().hex[:6]}", token)
    same(api, "PATCH", f"/{name}/services/{sid}", token)  # 405 alike
    covered.add("/{user_id}/versions")
    assert covered == set(SEED_PATHS)
    # A write through a compat path is a real write.
    assert api.delete(f"/{name}/services/{sid}", headers=auth(token)).status_code == 202


def test_fixed_paths_win_over_compat_paths(api, store) -> None:
    assert api.get("/healthz").status_code == 200
    assert api.get("/openapi.json").status_code == 200
    assert api.get("/apidocs").status_code == 200
    # A user whose name is a fixed path segment reaches the API through /api/v1 only.
    token = create_user(store, "ui")
    assert api.get("/api/v1/ui/services", headers=auth(token)).status_code == 200
    for first in sorted(RESERVED):
        resp = api.get(f"/{first}/services", headers=auth(token))
        if first == "ui":  # the dashboard's own page, not the user's services
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html"), resp.text
        else:
            assert resp.status_code == 404, (first, resp.status_code, resp.text)
    assert api.post("/webhooks/github", content=b"{}").status_code != 404


def test_compat_paths_are_documented(api) -> None:
    doc = api.get("/openapi.json").json()
    for seed in SEED_PATHS:
        twin = doc["paths"]["/api/v1" + seed]
        mine = doc["paths"][seed]
        assert set(mine) == set(twin), seed
        for method, op in mine.items():
            assert op["tags"] == ["compatibility"]
            assert op["responses"] == twin[method]["responses"]
            assert "compatibility path of /api/v1" + seed in op["summary"]
