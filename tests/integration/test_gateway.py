"""The gateway over HTTP against the real broker and Mongo-wire server (projector running for reads)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from shared.auth import create_user
from shared.secretbox import SecretBox
from tests.integration.gateway_helpers import assert_error, auth, consume_until, github_push, gitlab_push
from tests.waits import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(stack):
    stack.start_service("projector")
    stack.start_service("gateway")
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.gateway_port}", timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def alice(store):
    name = "alice-" + uuid.uuid4().hex[:6]
    return name, create_user(store, name)


@pytest.fixture(scope="module")
def bob(store):
    name = "bob-" + uuid.uuid4().hex[:6]
    return name, create_user(store, name)


def create_service(api, user, token, **extra):
    body = {
        "name": "svc-" + uuid.uuid4().hex[:8],
        "repository": {"url": f"https://git.example.test/{user}/{uuid.uuid4().hex}.git", "vcs": "git"},
        **extra,
    }
    resp = api.post(f"/api/v1/{user}/services", json=body, headers=auth(token))
    assert resp.status_code in (201, 202), resp.text  # (202: the projector, just started, is catching up)
    out = resp.json()
    assert resp.headers["Location"] == f"/api/v1/{user}/services/{out['service_id']}"
    if resp.status_code == 202:
        wait_until(
            lambda: api.get(resp.headers["Location"], headers=auth(token)).status_code == 200,
            timeout=30,
            what="the service projection",
        )
    return out["service_id"], out["webhook_secret"], body


@pytest.fixture(scope="module")
def service(api, alice):
    return create_service(api, *alice, description="the main one")


# -- health and docs -----------------------------------------------------------------------------------


def test_health_ready_and_docs(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    wait_until(lambda: api.get("/readyz").status_code == 200, timeout=30, what="readyz")
    doc = api.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for path, method in [
        ("/api/v1/{user_id}/services", "post"),
        ("/api/v1/{user_id}/services", "get"),
        ("/api/v1/{user_id}/services/{service_id}", "put"),
        ("/api/v1/{user_id}/services/{service_id}", "delete"),
        ("/api/v1/{user_id}/services/{service_id}/versions", "get"),
        ("/api/v1/{user_id}/versions", "post"),
        ("/api/v1/{user_id}/versions/{version_id}", "get"),
        ("/api/v1/{user_id}/versions/{version_id}/cancel", "post"),
        ("/api/v1/{user_id}/versions/{version_id}/logs", "get"),
        ("/api/v1/{user_id}/services/{service_id}/deploy", "post"),
        ("/api/v1/{user_id}/services/{service_id}/rollback", "post"),
        ("/api/v1/{user_id}/services/{service_id}/deployments", "get"),
        ("/webhooks/github", "post"),
        ("/webhooks/gitlab", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ]:
        assert method in paths[path], (path, method)
    page = api.get("/apidocs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "/api/v1/{user_id}/versions" in html and "X-Hub-Signature-256" in html
    assert "<script src" not in html and "<link" not in html and "https://" not in html  # self-contained


def test_error_shape_for_unknown_route_and_method(api):
    assert_error(api.get("/nope"), 404, "not_found")
    assert_error(api.delete("/webhooks/github"), 405, "method_not_allowed")
    for path, allow in (("/api/v1/u/services", "GET, HEAD, POST"), ("/api/v1/u/services/s", "DELETE, GET, HEAD, PUT")):
        resp = api.options(path)
        assert_error(resp, 405, "method_not_allowed")
        assert resp.headers["Allow"] == allow  # every method of the path, not only the first route's


# -- authentication ------------------------------------------------------------------------------------


def test_token_required_and_checked(api, alice, bob):
    user, token = alice
    assert_error(api.get(f"/api/v1/{user}/services"), 401, "unauthorized")
    assert_error(api.get(f"/api/v1/{user}/services", headers=auth("fx_wrong")), 401, "unauthorized")
    assert_error(api.get(f"/api/v1/{user}/services", headers=auth(bob[1])), 403, "forbidden")
    assert api.get(f"/api/v1/{user}/services", headers=auth(token)).status_code == 200


# -- services ------------------------------------------------------------------------------------------


def test_create_read_list_service_without_secrets(api, alice):
    user, token = alice
    sid, secret, body = create_service(
        api,
        user,
        token,
        description="d1",
        webhook_secret="given-secret-123",
        secrets={"API_KEY": "sup3r-secret-value"},
        repository={
            "url": "https://git.example.test/a/b.git",
            "vcs": "git",
            "username": "bot",
            "password": "hunter2-password",
        },
    )
    assert secret == "given-secret-123"
    one = api.get(f"/api/v1/{user}/services/{sid}", headers=auth(token))
    doc = one.json()
    assert doc["service_id"] == sid and doc["name"] == body["name"] and doc["description"] == "d1"
    assert doc["repository"] == {"url": "https://git.example.test/a/b.git", "vcs": "git", "username": "bot"}
    listing = api.get(f"/api/v1/{user}/services", headers=auth(token)).json()
    assert sid in [s["service_id"] for s in listing["services"]] and listing["total"] >= 1
    for text in (one.text, api.get(f"/api/v1/{user}/services", headers=auth(token)).text):
        assert (
            "hunter2-password" not in text
            and "sup3r-secret-value" not in text
            and "given-secret-123" not in text
        )


def test_generated_webhook_secret_and_secret_doc(api, alice, store, settings):
    user, token = alice
    sid, secret, _ = create_service(api, user, token, secrets={"K": "v"})
    assert len(secret) == 40
    doc = store.secrets.find_one({"_id": sid})
    assert secret not in str(doc)  # stored encrypted
    opened = SecretBox.of(settings).open_doc(doc)
    assert opened["webhook_secret"] == secret and opened["values"] == {"K": "v"}


def test_duplicate_service_name_is_409(api, alice):
    user, token = alice
    _, _, body = create_service(api, user, token)
    assert_error(
        api.post(f"/api/v1/{user}/services", json=body, headers=auth(token)), 409, "service_exists", "name"
    )


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"name": "Bad_Name", "repository": {"url": "https://x/y.git"}}, 422, "name"),
        ({"name": "ok"}, 422, "repository"),
        ({"name": "ok", "repository": {"vcs": "git"}}, 422, "repository.url"),
        ({"name": "ok", "repository": {"url": "https://x/y.git", "vcs": ""}}, 422, "repository.vcs"),
        ({"name": "ok", "repository": {"url": "https://x/y.git"}, "colour": "red"}, 422, "colour"),
        (
            {"name": "ok", "repository": {"url": "https://x/y.git"}, "secrets": {"bad name": "v"}},
            422,
            "secrets",
        ),
        ([1, 2], 422, None),
    ],
)
def test_service_validation(api, alice, body, status, field):
    user, token = alice
    assert_error(api.post(f"/api/v1/{user}/services", json=body, headers=auth(token)), status, field=field)


def test_unknown_vcs_is_accepted(api, alice):
    user, token = alice
    resp = api.post(
        f"/api/v1/{user}/services",
        headers=auth(token),
        json={"name": "hg-" + uuid.uuid4().hex[:6], "repository": {"url": "https://x/y", "vcs": "hg"}},
    )
    assert resp.status_code in (201, 202)


def test_bad_json_and_too_large_body(api, alice):
    user, token = alice
    headers = {**auth(token), "Content-Type": "application/json"}
    assert_error(
        api.post(f"/api/v1/{user}/services", content=b"{not json", headers=headers), 400, "invalid_json"
    )
    assert_error(api.post(f"/api/v1/{user}/services", content=b"", headers=headers), 400, "invalid_json")
    big = b'{"name": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    assert_error(api.post(f"/api/v1/{user}/services", content=big, headers=headers), 413, "payload_too_large")


def test_update_and_delete_service(api, alice, store, settings):
    user, token = alice
    sid, _, body = create_service(api, user, token)
    resp = api.put(
        f"/api/v1/{user}/services/{sid}",
        headers=auth(token),
        json={"description": "changed", "webhook_secret": "rotated-secret-1", "secrets": {"A": "1"}},
    )
    assert resp.status_code == 202, resp.text
    wait_until(
        lambda: (
            api.get(f"/api/v1/{user}/services/{sid}", headers=auth(token)).json().get("description")
            == "changed"
        ),
        timeout=30,
        what="the update",
    )
    assert SecretBox.of(settings).open_doc(store.secrets.find_one({"_id": sid}))["webhook_secret"] == "rotated-secret-1"
    assert_error(
        api.put(f"/api/v1/{user}/services/{sid}", headers=auth(token), json={"name": "x"}), 422, field="name"
    )
    assert api.delete(f"/api/v1/{user}/services/{sid}", headers=auth(token)).status_code == 202
    wait_until(
        lambda: api.get(f"/api/v1/{user}/services/{sid}", headers=auth(token)).status_code == 404,
        timeout=30,
        what="the deletion",
    )
    assert sid not in [
        s["service_id"] for s in api.get(f"/api/v1/{user}/services", headers=auth(token)).json()["services"]
    ]
    # The name is free again.
    again = api.post(f"/api/v1/{user}/services", json=body, headers=auth(token))
    assert again.status_code in (201, 202), again.text


# -- versions ------------------------------------------------------------------------------------------


def test_create_read_list_versions(api, alice, service):
    user, token = alice
    sid = service[0]
    ids = []
    for name in ("v0.1.0", "v0.2.0", "release/v0.3.0"):
        resp = api.post(
            f"/api/v1/{user}/versions",
            headers=auth(token),
            json={"service_id": sid, "name": name, "description": "d", "operations": ["publish"]},
        )
        assert resp.status_code in (201, 202), resp.text
        ids.append(resp.json()["version_id"])
    doc = wait_until(
        lambda: (
            (r := api.get(f"/api/v1/{user}/versions/{ids[0]}", headers=auth(token))).status_code == 200
            and r.json()
        ),
        timeout=30,
        what="the version projection",
    )
    assert doc["version_id"] == ids[0] and doc["name"] == "v0.1.0" and doc["service_id"] == sid
    assert doc["trigger"] == "api" and doc["operations"] == ["publish"] and isinstance(doc["stages"], list)
    assert doc["status"] in ("pending", "queued", "running", "success", "failed", "cancelled")
    page = wait_until(
        lambda: (
            (r := api.get(f"/api/v1/{user}/services/{sid}/versions?limit=2", headers=auth(token)).json())[
                "total"
            ]
            >= 3
            and r
        ),
        timeout=30,
        what="all versions",
    )
    assert len(page["versions"]) == 2 and page["limit"] == 2 and page["offset"] == 0
    everything = api.get(f"/api/v1/{user}/services/{sid}/versions", headers=auth(token)).json()["versions"]
    order = [v["version_id"] for v in everything]
    assert order.index(ids[2]) < order.index(ids[1]) < order.index(ids[0])  # newest first
    second = api.get(f"/api/v1/{user}/services/{sid}/versions?page=2&per_page=2", headers=auth(token)).json()
    assert second["offset"] == 2 and [v["version_id"] for v in second["versions"]] == order[2:4]
    assert_error(
        api.get(f"/api/v1/{user}/services/{sid}/versions?limit=0", headers=auth(token)), 422, field="limit"
    )


def test_duplicate_version_name_is_409(api, alice, service):
    user, token = alice
    body = {"service_id": service[0], "name": "dup-" + uuid.uuid4().hex[:6]}
    assert api.post(f"/api/v1/{user}/versions", json=body, headers=auth(token)).status_code in (201, 202)
    assert_error(
        api.post(f"/api/v1/{user}/versions", json=body, headers=auth(token)), 409, "version_exists", "name"
    )


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"operations": ["build"]}, "operations"),
        ({"name": "bad name"}, "name"),
        ({"name": "x" * 129}, "name"),
        ({"name": "a..b"}, "name"),
        ({"name": "v1.lock"}, "name"),
        ({"commit": "abc def"}, "commit"),
    ],
)
def test_version_validation(api, alice, service, extra, field):
    user, token = alice
    body = {"service_id": service[0], "name": "ok-" + uuid.uuid4().hex[:6], **extra}
    assert_error(
        api.post(f"/api/v1/{user}/versions", json=body, headers=auth(token)), 422, "validation_error", field
    )


def test_version_of_missing_service_is_404(api, alice):
    user, token = alice
    assert_error(
        api.post(f"/api/v1/{user}/versions", json={"service_id": "nope", "name": "v1"}, headers=auth(token)),
        404,
        "service_not_found",
    )


def test_cancel_pending_version_then_409(no_build_workers, api, alice, service):
    # No builder: the version stays pending (with one, its unreachable repository could fail it while
    # the cancel is on its way).
    user, token = alice
    vid = api.post(
        f"/api/v1/{user}/versions",
        headers=auth(token),
        json={"service_id": service[0], "name": "c-" + uuid.uuid4().hex[:6]},
    ).json()["version_id"]
    url = f"/api/v1/{user}/versions/{vid}"
    wait_until(lambda: api.get(url, headers=auth(token)).status_code == 200, timeout=30, what="the version")
    resp = api.post(f"{url}/cancel", headers=auth(token))
    if resp.status_code == 409:  # a builder may already have finished it; then cancelling must be refused
        assert api.get(url, headers=auth(token)).json()["status"] in ("success", "failed", "cancelled")
        return
    assert resp.status_code == 202, resp.text
    wait_until(lambda: api.get(url, headers=auth(token)).json()["status"] == "cancelled", timeout=30, what="cancelled")
    assert_error(api.post(f"{url}/cancel", headers=auth(token)), 409, "version_finished")


# -- someone else's resources ---------------------------------------------------------------------------


def test_other_users_resources_are_hidden_on_every_route(api, alice, bob, service):
    user, token = alice
    other, other_token = bob
    sid = service[0]
    vid = api.post(
        f"/api/v1/{user}/versions",
        headers=auth(token),
        json={"service_id": sid, "name": "o-" + uuid.uuid4().hex[:6]},
    ).json()["version_id"]
    wait_until(
        lambda: api.get(f"/api/v1/{user}/versions/{vid}", headers=auth(token)).status_code == 200,
        timeout=30,
        what="the version",
    )
    routes = [
        ("GET", "services/{sid}", None),
        ("PUT", "services/{sid}", {"description": "x"}),
        ("DELETE", "services/{sid}", None),
        ("GET", "services/{sid}/versions", None),
        ("POST", "versions", {"service_id": sid, "name": "steal"}),
        ("GET", "versions/{vid}", None),
        ("POST", "versions/{vid}/cancel", None),
        ("GET", "versions/{vid}/logs", None),
        ("POST", "services/{sid}/deploy", {"version_id": vid}),
        ("POST", "services/{sid}/rollback", {}),
        ("GET", "services/{sid}/deployments", None),
    ]
    for method, path, body in routes:
        path = path.format(sid=sid, vid=vid)
        # Bob's token on Alice's paths: 403.
        r = api.request(method, f"/api/v1/{user}/{path}", headers=auth(other_token), json=body)
        if r.status_code == 404 and r.json()["error"]["code"] == "not_found":
            continue  # a route not mounted in this app: nothing to check
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert "error" in r.json()
        # Bob's token on his own paths naming Alice's ids: 404, same as a missing id.
        r = api.request(method, f"/api/v1/{other}/{path}", headers=auth(other_token), json=body)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert "error" in r.json()
    # Nothing changed for Alice.
    assert (
        api.get(f"/api/v1/{user}/services/{sid}", headers=auth(token)).json()["description"] == "the main one"
    )
    assert api.get(f"/api/v1/{user}/versions/{vid}", headers=auth(token)).json()["status"] != "cancelled"
    assert sid not in [
        s["service_id"]
        for s in api.get(f"/api/v1/{other}/services", headers=auth(other_token)).json()["services"]
    ]


# -- webhooks ------------------------------------------------------------------------------------------


def _push_events(stack, settings, delivery, count=1):
    return consume_until(
        settings.kafka_bootstrap,
        settings.topic("webhooks"),
        lambda e: e.get("type") == "PushReceived" and e["payload"]["delivery_id"] == delivery,
        count=count,
    )


def _webhook_version(api, user, token, sid, delivery):
    def find():
        versions = api.get(f"/api/v1/{user}/services/{sid}/versions?limit=100", headers=auth(token)).json()[
            "versions"
        ]
        return [v for v in versions if v.get("delivery_id") == delivery]

    return wait_until(find, timeout=30, what="the webhook's version")


def test_github_signed_push(api, alice, stack, settings):
    user, token = alice
    sid, secret, body = create_service(api, user, token)
    delivery = str(uuid.uuid4())
    # The payload spells the URL differently (host case, no .git, trailing slash): still the same repository.
    payload_url = (
        body["repository"]["url"].replace("git.example.test", "GIT.Example.test").removesuffix(".git") + "/"
    )
    headers, raw = github_push(payload_url, secret, ref="refs/heads/feature/x", delivery=delivery)
    resp = api.post("/webhooks/github", content=raw, headers=headers)
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"delivery_id": delivery, "services": 1}
    [event] = _push_events(stack, settings, delivery)
    assert event["aggregate_id"] == sid and event["actor"] == user
    p = event["payload"]
    assert (
        p["provider"] == "github"
        and p["service_id"] == sid
        and p["branch"] == "feature/x"
        and not p["deleted"]
    )
    assert p["repo_url"] == body["repository"]["url"] and len(p["after"]) == 40
    [version] = _webhook_version(api, user, token, sid, delivery)
    assert version["trigger"] == "webhook" and version["branch"] == "feature/x"


def test_gitlab_push(api, alice, stack, settings):
    user, token = alice
    sid, secret, body = create_service(api, user, token)
    delivery = str(uuid.uuid4())
    headers, raw = gitlab_push(body["repository"]["url"], secret, delivery=delivery)
    resp = api.post("/webhooks/gitlab", content=raw, headers=headers)
    assert resp.status_code == 202, resp.text
    [event] = _push_events(stack, settings, delivery)
    assert event["payload"]["provider"] == "gitlab" and event["payload"]["branch"] == "master"
    assert event["aggregate_id"] == sid
    _webhook_version(api, user, token, sid, delivery)


def test_same_delivery_twice_makes_one_version(api, alice, stack, settings):
    user, token = alice
    sid, secret, body = create_service(api, user, token)
    delivery = str(uuid.uuid4())
    headers, raw = github_push(body["repository"]["url"], secret, delivery=delivery)
    for _ in range(2):
        assert api.post("/webhooks/github", content=raw, headers=headers).status_code == 202
    assert len(_push_events(stack, settings, delivery, count=2)) == 2
    _webhook_version(api, user, token, sid, delivery)
    # Another delivery reaches the projection after the duplicate would have: still one version for ours.
    other = str(uuid.uuid4())
    h2, raw2 = github_push(body["repository"]["url"], secret, delivery=other)
    assert api.post("/webhooks/github", content=raw2, headers=h2).status_code == 202
    _webhook_version(api, user, token, sid, other)
    assert len(_webhook_version(api, user, token, sid, delivery)) == 1


def test_tag_push_and_branch_delete_are_published_not_built(api, alice, stack, settings):
    user, token = alice
    sid, secret, body = create_service(api, user, token)
    tag_delivery, del_delivery = str(uuid.uuid4()), str(uuid.uuid4())
    h, raw = github_push(body["repository"]["url"], secret, ref="refs/tags/v9", delivery=tag_delivery)
    assert api.post("/webhooks/github", content=raw, headers=h).status_code == 202
    h, raw = github_push(
        body["repository"]["url"], secret, ref="refs/heads/gone", after="0" * 40, delivery=del_delivery
    )
    assert api.post("/webhooks/github", content=raw, headers=h).status_code == 202
    [tag] = _push_events(stack, settings, tag_delivery)
    [gone] = _push_events(stack, settings, del_delivery)
    assert tag["payload"]["tag"] == "v9" and tag["payload"]["branch"] is None
    assert gone["payload"]["deleted"] is True


def test_webhook_rejections(api, alice):
    user, token = alice
    sid, secret, body = create_service(api, user, token)
    url = body["repository"]["url"]
    h, raw = github_push(url, secret, sign_with="wrong-secret")
    assert_error(api.post("/webhooks/github", content=raw, headers=h), 401, "invalid_signature")
    h, raw = github_push(url, secret)
    assert_error(
        api.post(
            "/webhooks/github",
            content=raw,
            headers={k: v for k, v in h.items() if k != "X-Hub-Signature-256"},
        ),
        401,
    )
    h, raw = gitlab_push(url, "not-the-token")
    assert_error(api.post("/webhooks/gitlab", content=raw, headers=h), 401, "invalid_signature")
    h, raw = github_push("https://git.example.test/nobody/unknown.git", secret)
    assert_error(api.post("/webhooks/github", content=raw, headers=h), 404, "repository_not_found")
    h, raw = github_push(url, secret)
    assert_error(api.post("/webhooks/github", content=b"{broken", headers=h), 400, "invalid_webhook")
    big = b" " * (5 * 1024 * 1024 + 1)
    assert_error(api.post("/webhooks/github", content=big, headers=h), 413, "payload_too_large")
    ping = api.post("/webhooks/github", content=b'{"zen": "x"}', headers={"X-GitHub-Event": "ping"})
    assert ping.status_code == 200 and ping.json() == {"ignored": "ping"}
    other = api.post("/webhooks/gitlab", content=b"{}", headers={"X-Gitlab-Event": "Note Hook"})
    assert other.status_code == 200 and "ignored" in other.json()


def test_rotated_secret_verifies_at_once(api, alice, stack, settings):
    user, token = alice
    sid, secret, body = create_service(api, user, token)
    h, raw = github_push(body["repository"]["url"], secret)
    assert api.post("/webhooks/github", content=raw, headers=h).status_code == 202  # warms the cache
    assert (
        api.put(
            f"/api/v1/{user}/services/{sid}", headers=auth(token), json={"webhook_secret": "brand-new-secret"}
        ).status_code
        == 202
    )
    h, raw = github_push(body["repository"]["url"], "brand-new-secret")
    assert api.post("/webhooks/github", content=raw, headers=h).status_code == 202
