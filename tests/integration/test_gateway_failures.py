"""The gateway when its dependencies fail: broker down -> 503 and nothing half-written;
Mongo down -> reads 503.

Runs on its own small stack (broker + Mongo + gateway) so that stopping parts of it disturbs no other test.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from infra.local.stack import Stack
from shared.auth import create_user
from shared.secretbox import SecretBox
from shared.settings import Settings
from shared.store import Store
from tests.integration.gateway_helpers import assert_error, auth, github_push
from tests.waits import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own():
    base = Path(tempfile.mkdtemp(prefix="fornax-gw-fail-"))
    st = Stack.on_free_ports(base)
    try:
        st.start_kafka()
        st.start_mongo()
        # No projector runs here: a create waits this long for its projection, then answers 202.
        st.start_service("gateway", env={"FORNAX_READ_YOUR_WRITES_WAIT": "0.3"})
        settings = Settings(**{k.removeprefix("FORNAX_").lower(): v for k, v in st.env().items()})
        store = Store(settings)
        store.ensure_indexes()
        with httpx.Client(base_url=f"http://127.0.0.1:{st.gateway_port}", timeout=60) as client:
            yield st, store, client
        store.close()
    finally:
        st.stop_all()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def seeded(own):
    """A user and a service already in the read model (as the projector would have left them)."""
    st, store, api = own
    user = "carol-" + uuid.uuid4().hex[:6]
    token = create_user(store, user)
    sid, name, url = uuid.uuid4().hex, "seeded", "https://git.example.test/carol/seeded.git"
    now = datetime.now(UTC)
    store.services.insert_one(
        {
            "_id": sid,
            "user_id": user,
            "name": name,
            "description": "",
            "repository": {"url": url, "vcs": "git", "username": None},
            "status": "healthy",
            "deleted": False,
            "created_at": now,
            "updated_at": now,
        }
    )
    store.secrets.insert_one({"_id": sid, "webhook_secret": "seeded-secret", "values": {}})
    store.reservations.insert_one({"_id": f"service:{user}/{name}", "ref": sid})
    return user, token, sid, url


def test_broker_down_answers_503_and_writes_nothing(own, seeded):
    st, store, api = own
    user, token, sid, url = seeded
    ok = api.post(
        f"/api/v1/{user}/services",
        headers=auth(token),
        json={"name": "before-outage", "repository": {"url": "https://x/before.git"}},
    )
    assert ok.status_code == 202, ok.text  # (not projected: no projector runs here)
    assert ok.headers["Retry-After"] == "1" and ok.headers["Location"].endswith(ok.json()["service_id"])
    reservations_before = store.reservations.count_documents({})
    secrets_before = store.secrets.count_documents({})

    st.stop("kafka")
    try:
        resp = api.post(
            f"/api/v1/{user}/services",
            headers=auth(token),
            json={"name": "during-outage", "repository": {"url": "https://x/y.git"}, "secrets": {"K": "v"}},
        )
        err = assert_error(resp, 503, "event_bus_unavailable")
        assert "broker" in err["message"]
        assert store.reservations.find_one({"_id": f"service:{user}/during-outage"}) is None

        assert_error(
            api.post(f"/api/v1/{user}/versions", headers=auth(token), json={"service_id": sid, "name": "v1"}),
            503,
            "event_bus_unavailable",
        )
        assert store.reservations.find_one({"_id": f"version:{sid}/v1"}) is None

        assert_error(
            api.put(
                f"/api/v1/{user}/services/{sid}",
                headers=auth(token),
                json={"webhook_secret": "not-applied-secret"},
            ),
            503,
            "event_bus_unavailable",
        )
        stored = SecretBox.of(store.settings).open_doc(store.secrets.find_one({"_id": sid}))
        assert stored["webhook_secret"] == "seeded-secret"  # (maybe encrypted meanwhile: not replaced)

        assert_error(
            api.delete(f"/api/v1/{user}/services/{sid}", headers=auth(token)), 503, "event_bus_unavailable"
        )
        assert store.reservations.find_one({"_id": f"service:{user}/seeded"}) is not None

        headers, body = github_push(url, "seeded-secret")
        assert_error(
            api.post("/webhooks/github", content=body, headers=headers), 503, "event_bus_unavailable"
        )

        assert store.reservations.count_documents({}) == reservations_before
        assert store.secrets.count_documents({}) == secrets_before
        ready = api.get("/readyz")
        assert ready.status_code == 503 and "broker" in ready.json()["error"]["message"]
        # Reads do not need the broker.
        assert api.get(f"/api/v1/{user}/services/{sid}", headers=auth(token)).status_code == 200
        assert api.get("/healthz").status_code == 200
    finally:
        st.start_kafka()

    # The broker is back: the gateway recovers without a restart.
    def created() -> bool:
        r = api.post(
            f"/api/v1/{user}/services",
            headers=auth(token),
            json={"name": "after-outage", "repository": {"url": "https://x/after.git"}},
        )
        return r.status_code in (202, 409)

    wait_until(created, timeout=60, what="publishing after the broker came back")
    wait_until(lambda: api.get("/readyz").status_code == 200, timeout=30, what="readyz after the outage")


def test_mongo_down_reads_answer_503(own, seeded):
    st, store, api = own
    user, token, sid, _ = seeded
    assert api.get(f"/api/v1/{user}/services", headers=auth(token)).status_code == 200
    st.stop("mongo")
    try:
        for path in (
            f"/api/v1/{user}/services",
            f"/api/v1/{user}/services/{sid}",
            f"/api/v1/{user}/services/{sid}/versions",
            f"/api/v1/{user}/versions/whatever",
        ):
            err = assert_error(api.get(path, headers=auth(token)), 503, "store_unavailable")
            assert "MongoDB" in err["message"]
        ready = api.get("/readyz")
        assert ready.status_code == 503 and "MongoDB" in ready.json()["error"]["message"]
        assert api.get("/healthz").status_code == 200
    finally:
        st.start_mongo()
    wait_until(
        lambda: api.get(f"/api/v1/{user}/services", headers=auth(token)).status_code == 200,
        timeout=60,
        what="reads after Mongo came back",
    )
