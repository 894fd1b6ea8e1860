"""The deploy route refuses, early and with 422 naming `namespace`, a namespace the Kubernetes target's
allow-list does not give the user (the same rule the target applies: shared/namespaces.py). The gateway
runs in-process (ASGI) on the session's real nx-27017; nothing reaches the broker."""

from __future__ import annotations

import uuid

import httpx
import pytest

from services.gateway.app import create_app
from shared.auth import create_user
from shared.settings import KubernetesCluster

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(settings, store):
    cluster = KubernetesCluster(
        api_url="https://127.0.0.1:1", namespaces=["fornax-{user}"], user_namespaces={"alice-ns": ["team-*"]}
    )
    cfg = settings.model_copy(update={"kubernetes_clusters": {"prod": cluster}})
    user = f"ns-{uuid.uuid4().hex[:6]}"
    token = create_user(store, user)
    sid = uuid.uuid4().hex
    store.services.insert_one({"_id": sid, "user_id": user, "name": "shop", "deleted": False})
    app = create_app(cfg)
    app.state.store = store
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", headers=headers) as http:
            yield http, user, sid
    finally:
        store.services.delete_one({"_id": sid})  # read-model only (no event): a rebuild could not make it


async def _deploy(http, user: str, sid: str, **body):
    return await http.post(f"/api/v1/{user}/services/{sid}/deploy", json={"version_id": "v-missing", **body})


async def test_namespace_outside_the_allow_list_is_422(client) -> None:
    http, user, sid = client
    for ns in ("kube-system", "team-blue", None):
        resp = await _deploy(http, user, sid, target="prod", **({"namespace": ns} if ns else {}))
        assert resp.status_code == 422, resp.text
        err = resp.json()["error"]
        assert err["field"] == "namespace" and err["code"] == "namespace_not_allowed"
        assert err["message"] == (
            f"namespace {ns or 'default'!r} is not allowed on cluster 'prod' (allowed: fornax-{user})"
        )


async def test_allowed_namespace_and_other_targets_pass_the_check(client) -> None:
    http, user, sid = client
    # Past the namespace check: the (missing) version is what is refused now.
    assert (await _deploy(http, user, sid, target="prod", namespace=f"fornax-{user}")).status_code == 404
    assert (await _deploy(http, user, sid, target="local", namespace="anything")).status_code == 404
