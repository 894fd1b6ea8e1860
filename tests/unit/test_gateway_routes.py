"""Gateway routes on the in-memory store with a fake bus (no Kafka, no Mongo): what each request
emits, what it answers, and that validation errors name the field. The fake bus folds what it
receives into the store, so creates are read back at once (201) as with a live projector."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

with warnings.catch_warnings():  # starlette warns about its httpx-based TestClient at import
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from services.gateway import io
from services.gateway.app import create_app
from shared.auth import create_user
from shared.settings import Settings
from tests.fakes.bus import FakeBus
from tests.fakes.store import MemoryStore
from tests.integration.gateway_helpers import github_push, gitlab_push

URL = "https://git.example.test/alice/shop.git"


class Gateway:
    def __init__(self, client: TestClient, store: MemoryStore, bus: FakeBus) -> None:
        self.client, self.store, self.bus = client, store, bus
        self.token = create_user(store, "alice")
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def post(self, path: str, body: Any, **kw: Any) -> Any:
        return self.client.post(path, json=body, headers=self.headers, **kw)

    def get(self, path: str) -> Any:
        return self.client.get(path, headers=self.headers)

    def create_service(self, name: str = "shop", **extra: Any) -> dict[str, Any]:
        resp = self.post("/api/v1/alice/services", {"name": name, "repository": {"url": URL}, **extra})
        assert resp.status_code == 201, resp.text
        return dict(resp.json())


@pytest.fixture
def gw() -> Iterator[Gateway]:
    io._mongo.open_until = io._broker.open_until = 0.0  # a previous test's tripped breaker
    settings = Settings(read_your_writes_wait=1.0)
    store = MemoryStore(settings)
    bus = FakeBus(settings, project_into=store)
    with TestClient(create_app(settings, store=store, bus=bus)) as client:  # type: ignore[arg-type]
        yield Gateway(client, store, bus)
    io._mongo.open_until = io._broker.open_until = 0.0


def _error(resp: Any, status: int, code: str | None = None, field: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err: dict[str, Any] = resp.json()["error"]
    if code is not None:
        assert err["code"] == code
    if field is not None:
        assert err.get("field") == field, err
    return err


def test_create_service_emits_service_created_and_reads_back(gw: Gateway) -> None:
    created = gw.create_service(description="the shop")
    sid = created["service_id"]
    [event] = gw.bus.events
    assert event.type == "ServiceCreated" and event.aggregate_id == sid and event.actor == "alice"
    p: Any = event.payload
    assert (p.user_id, p.name, p.description, p.repository.url) == ("alice", "shop", "the shop", URL)
    # The webhook secret is in the secret store, never in the event.
    assert "webhook_secret" not in event.model_dump_json()
    assert gw.store.secrets.find_one({"_id": sid})["webhook_secret"] == created["webhook_secret"]
    got = gw.get(f"/api/v1/alice/services/{sid}")
    assert got.status_code == 200 and got.json()["name"] == "shop"
    listed = gw.get("/api/v1/alice/services").json()
    assert [s["service_id"] for s in listed["services"]] == [sid]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Bad_Name", "repository": {"url": "https://x/y.git"}}, "name"),
        ({"name": "ok"}, "repository"),
        ({"name": "ok", "repository": {"vcs": "git"}}, "repository.url"),
        ({"name": "ok", "repository": {"url": "https://x/y.git", "vcs": ""}}, "repository.vcs"),
        ({"name": "ok", "repository": {"url": "https://x/y.git"}, "colour": "red"}, "colour"),
        ({"name": "ok", "repository": {"url": "file:///srv/git/y.git"}}, "repository.url"),
    ],
)
def test_service_validation_names_the_field_and_emits_nothing(gw: Gateway, body: Any, field: str) -> None:
    _error(gw.post("/api/v1/alice/services", body), 422, "validation_error", field)
    assert gw.bus.events == []


def test_duplicate_service_name_is_409_on_name(gw: Gateway) -> None:
    gw.create_service()
    _error(gw.post("/api/v1/alice/services", {"name": "shop", "repository": {"url": URL}}), 409,
           "service_exists", "name")
    assert len(gw.bus.events) == 1


def test_token_required_and_other_users_are_forbidden(gw: Gateway) -> None:
    _error(gw.client.get("/api/v1/alice/services"), 401)
    _error(gw.client.get("/api/v1/alice/services", headers={"Authorization": "Bearer nope"}), 401)
    create_user(gw.store, "bob")
    assert gw.get("/api/v1/bob/services").status_code in (403, 404)


def test_broker_down_is_503_and_leaves_no_reservation(gw: Gateway) -> None:
    gw.bus.down = True
    _error(gw.post("/api/v1/alice/services", {"name": "shop", "repository": {"url": URL}}), 503,
           "event_bus_unavailable")
    assert gw.store.reservations.count_documents({}) == 0 and gw.store.secrets.count_documents({}) == 0
    gw.bus.down = False
    io._broker.open_until = 0.0
    gw.create_service()  # the name is free again


def test_update_and_delete_emit_their_events(gw: Gateway) -> None:
    sid = gw.create_service()["service_id"]
    resp = gw.client.put(f"/api/v1/alice/services/{sid}", json={"description": "new"}, headers=gw.headers)
    assert resp.status_code == 202, resp.text
    assert gw.bus.events[-1].type == "ServiceUpdated" and gw.bus.events[-1].payload.description == "new"
    assert gw.get(f"/api/v1/alice/services/{sid}").json()["description"] == "new"
    assert gw.client.delete(f"/api/v1/alice/services/{sid}", headers=gw.headers).status_code == 202
    assert gw.bus.events[-1].type == "ServiceDeleted"
    _error(gw.get(f"/api/v1/alice/services/{sid}"), 404, "service_not_found")


def test_create_version_emits_version_requested(gw: Gateway) -> None:
    sid = gw.create_service()["service_id"]
    resp = gw.post("/api/v1/alice/versions", {"service_id": sid, "name": "v1", "commit": "main"})
    assert resp.status_code == 201, resp.text
    vid = resp.json()["version_id"]
    event = gw.bus.events[-1]
    assert event.type == "VersionRequested" and event.aggregate_id == vid
    assert (event.payload.service_id, event.payload.name, event.payload.trigger) == (sid, "v1", "api")
    assert gw.get(f"/api/v1/alice/versions/{vid}").json()["status"] == "pending"
    _error(gw.post("/api/v1/alice/versions", {"service_id": sid, "name": "v1"}), 409)
    _error(gw.post("/api/v1/alice/versions", {"service_id": sid, "name": "a..b"}), 422, "validation_error", "name")
    _error(gw.post("/api/v1/alice/versions", {"service_id": "nope", "name": "v2"}), 404, "service_not_found")


def test_cancel_version_emits_version_cancelled(gw: Gateway) -> None:
    sid = gw.create_service()["service_id"]
    vid = gw.post("/api/v1/alice/versions", {"service_id": sid, "name": "v1"}).json()["version_id"]
    assert gw.post(f"/api/v1/alice/versions/{vid}/cancel", {}).status_code == 202
    assert gw.bus.events[-1].type == "VersionCancelled" and gw.bus.events[-1].aggregate_id == vid
    _error(gw.post(f"/api/v1/alice/versions/{vid}/cancel", {}), 409)


def test_signed_github_push_emits_push_received(gw: Gateway) -> None:
    created = gw.create_service()
    headers, raw = github_push(URL.removesuffix(".git") + "/", created["webhook_secret"], delivery="d-1",
                               ref="refs/heads/feature/x")
    resp = gw.client.post("/webhooks/github", content=raw, headers=headers)
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"delivery_id": "d-1", "services": 1}
    assert gw.bus.topics[-1] == "webhooks"
    event = gw.bus.events[-1]
    p: Any = event.payload
    assert event.type == "PushReceived" and event.aggregate_id == created["service_id"] and event.actor == "alice"
    assert (p.provider, p.delivery_id, p.branch, p.repo_url, p.deleted) == ("github", "d-1", "feature/x", URL, False)


def test_gitlab_push_and_webhook_rejections(gw: Gateway) -> None:
    created = gw.create_service()
    headers, raw = gitlab_push(URL, created["webhook_secret"], delivery="g-1")
    assert gw.client.post("/webhooks/gitlab", content=raw, headers=headers).status_code == 202
    assert gw.bus.events[-1].payload.provider == "gitlab"
    count = len(gw.bus.events)
    headers, raw = github_push(URL, "wrong secret")
    _error(gw.client.post("/webhooks/github", content=raw, headers=headers), 401, "invalid_signature")
    headers, raw = github_push("https://git.example.test/nobody/else.git", created["webhook_secret"])
    _error(gw.client.post("/webhooks/github", content=raw, headers=headers), 404, "repository_not_found")
    _error(gw.client.post("/webhooks/github", content=b"{broken", headers=headers), 400, "invalid_webhook")
    assert len(gw.bus.events) == count


def test_health_and_openapi(gw: Gateway) -> None:
    assert gw.client.get("/healthz").status_code == 200
    assert gw.client.get("/openapi.json").json()["openapi"].startswith("3.1")


def _successful_version(gw: Gateway) -> tuple[str, str]:
    sid = gw.create_service()["service_id"]
    vid = gw.post("/api/v1/alice/versions", {"service_id": sid, "name": "v1"}).json()["version_id"]
    gw.store.versions.update_one({"_id": vid}, {"$set": {"status": "success", "digest": "sha256:d"}})
    return sid, vid


def test_deploy_rollback_and_unpin_emit_their_requests(gw: Gateway) -> None:
    sid, vid = _successful_version(gw)
    resp = gw.post(f"/api/v1/alice/services/{sid}/deploy", {"version_id": vid, "target": "local"})
    assert resp.status_code == 202, resp.text  # an operation that goes on running
    event = gw.bus.events[-1]
    assert event.type == "DeployRequested" and event.payload.deployment_id == resp.json()["deployment_id"]
    assert (event.payload.version_id, event.payload.target, event.payload.kind) == (vid, "local", "deploy")
    listed = gw.get(f"/api/v1/alice/services/{sid}/deployments").json()
    assert [d["deployment_id"] for d in listed["deployments"]] == [event.payload.deployment_id]
    _error(gw.post(f"/api/v1/alice/services/{sid}/rollback", {"target": "local"}), 409, "nothing_to_roll_back")
    resp = gw.post(f"/api/v1/alice/services/{sid}/rollback", {"target": "local", "to_version_id": vid})
    assert resp.status_code == 202, resp.text
    assert gw.bus.events[-1].type == "RollbackRequested" and gw.bus.events[-1].payload.to_version_id == vid
    assert gw.post(f"/api/v1/alice/services/{sid}/unpin", {"target": "local"}).status_code == 202
    assert gw.bus.events[-1].type == "TargetPinChanged" and gw.bus.events[-1].payload.pinned is False


def test_deploy_refusals_name_the_field(gw: Gateway) -> None:
    sid, vid = _successful_version(gw)
    pending = gw.post("/api/v1/alice/versions", {"service_id": sid, "name": "v2"}).json()["version_id"]
    count = len(gw.bus.events)
    _error(gw.post(f"/api/v1/alice/services/{sid}/deploy", {"version_id": vid, "target": "mars"}), 422,
           "unknown_target", "target")
    _error(gw.post(f"/api/v1/alice/services/{sid}/deploy", {"version_id": pending, "target": "local"}), 409,
           "version_not_successful", "version_id")
    _error(gw.post(f"/api/v1/alice/services/{sid}/deploy", {"version_id": "nope", "target": "local"}), 404,
           "version_not_found", "version_id")
    _error(gw.post(f"/api/v1/alice/services/{sid}/deploy", {"target": "local"}), 422, "validation_error",
           "version_id")
    assert len(gw.bus.events) == count


def test_archived_log_lines_are_paged(gw: Gateway) -> None:
    sid = gw.create_service()["service_id"]
    vid = gw.post("/api/v1/alice/versions", {"service_id": sid, "name": "v1"}).json()["version_id"]
    gw.store.logs.insert_many([{"_id": f"{vid}:{n:012d}", "version_id": vid, "seq": n, "stage": "build",
                                "stream": "stdout", "text": f"line {n}", "ts": float(n)} for n in range(1, 6)])
    page = gw.get(f"/api/v1/alice/versions/{vid}/logs?since=1&limit=3").json()
    assert [line["text"] for line in page["lines"]] == ["line 2", "line 3", "line 4"]
    assert (page["next_since"], page["has_more"], page["total"], page["status"]) == (4, True, 5, "pending")
    _error(gw.get(f"/api/v1/alice/versions/{vid}/logs?limit=0"), 422, "validation_error", "limit")


def test_badge_of_a_public_service(gw: Gateway) -> None:
    sid = gw.create_service(public=True)["service_id"]
    vid = gw.post("/api/v1/alice/versions", {"service_id": sid, "name": "v1"}).json()["version_id"]
    gw.store.versions.update_one({"_id": vid}, {"$set": {"status": "failed"}})
    resp = gw.client.get("/badges/alice/shop.svg")
    assert resp.status_code == 200 and "failing" in resp.text
