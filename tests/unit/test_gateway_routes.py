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
