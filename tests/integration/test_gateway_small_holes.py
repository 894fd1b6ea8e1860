"""Small holes, replayed against the real gateway, logstream, broker and Mongo-wire server: absurd paging
and log positions, oversized secrets and deploy targets, secrets at rest, the webhook's repository
lookup by an indexed key."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace

import httpx
import pytest
from logstream_helpers import end_version, new_user, request_version, write_lines
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from services.builder.state import BuilderState
from services.builder.vcs import VcsError
from services.builder.vcs.clients import GitSvn
from services.gateway.repo_index import backfill, lookup_queries
from shared.bus import EventBus
from shared.query import MAX_POSITION
from shared.secretbox import PREFIX, SecretBox, seal_stored
from tests.fixtures.git_http import git_http_server
from tests.integration.builder_helpers import GitRepo
from tests.integration.gateway_helpers import assert_error, auth, github_push
from tests.waits import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SERVICES = ("projector", "gateway", "logstream")
HUGE = [str(2**63), str(2**64), "9" * 30, str(MAX_POSITION + 1)]


@pytest.fixture(scope="module")
def services(stack, no_build_workers):
    for name in SERVICES:
        stack.start_service(name)  # (left running for the next modules, as test_gateway.py does)
    return stack


@pytest.fixture(scope="module")
def api(services):
    with httpx.Client(base_url=f"http://127.0.0.1:{services.gateway_port}", timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def alice(store):
    return new_user(store, "alice")


def create_service(api, user, token, **extra):
    body = {
        "name": "svc-" + uuid.uuid4().hex[:8],
        "repository": {"url": f"https://git.example.test/{user}/{uuid.uuid4().hex}.git", "vcs": "git"},
        **extra,
    }
    resp = api.post(f"/api/v1/{user}/services", json=body, headers=auth(token))
    assert resp.status_code in (201, 202), resp.text  # 201 once the read model shows it (read-your-writes)
    return resp.json()["service_id"], resp.json()["webhook_secret"], body


def projected(api, user, token, sid):
    wait_until(
        lambda: api.get(f"/api/v1/{user}/services/{sid}", headers=auth(token)).status_code == 200,
        timeout=30,
        what="the service projection",
    )


# -- absurd offsets, pages and log positions ------------------------------------------------------


def test_absurd_paging_and_log_positions_are_422_naming_the_parameter(api, store, alice):
    user, token = alice
    sid, _, _ = create_service(api, user, token)
    projected(api, user, token, sid)

    async def a_version() -> str:
        async with EventBus(store.settings) as bus:
            vid = await request_version(bus, store, user, sid)
            await write_lines(bus, vid, 3)
            await end_version(bus, vid, "success")
            return vid

    vid = asyncio.run(a_version())
    lists = (
        f"/api/v1/{user}/services",
        f"/api/v1/{user}/services/{sid}/versions",
        f"/api/v1/{user}/services/{sid}/deployments",
    )
    for path in lists:
        for name in ("offset", "page"):
            for value in [*HUGE, "-1", "1e3", "1.5", "0x10"]:
                if name == "page" and value == "-1":
                    continue  # (covered by the unit test; page counts from 1)
                assert_error(api.get(path, params={name: value}, headers=auth(token)), 422, field=name)
        at_the_end = api.get(path, params={"offset": MAX_POSITION}, headers=auth(token))
        assert at_the_end.status_code == 200, at_the_end.text  # the largest offset is an empty page
    logs = f"/api/v1/{user}/versions/{vid}/logs"
    for value in [*HUGE, "-1", "x"]:
        assert_error(api.get(logs, params={"since": value}, headers=auth(token)), 422, field="since")
        streamed = api.get(logs, params={"since": value, "follow": "true"}, headers=auth(token))
        assert_error(streamed, 422, field="since")  # refused before the stream starts, not a broken 200
    for params, field in (
        ({"follow": "maybe"}, "follow"),
        ({"follow": "true", "limit": "0"}, "limit"),
        ({"follow": "true", "limit": "10001"}, "limit"),
        ({"follow": "true", "since": str(2**64)}, "since"),
    ):
        assert_error(api.get(logs, params=params, headers=auth(token)), 422, field=field)
    end = api.get(logs, params={"since": MAX_POSITION}, headers=auth(token)).json()
    assert end["lines"] == [] and end["next_since"] == MAX_POSITION


def test_absurd_since_closes_the_log_socket_with_4400(services, store, alice):
    user, token = alice

    async def run() -> list[tuple[int | None, str]]:
        async with EventBus(store.settings) as bus:
            vid = await request_version(bus, store, user)
        # The original protocol's watch_log answers a bad `since` with a field error.
        async with connect(f"ws://127.0.0.1:{services.logstream_port}/ws") as ws:
            watch = {"action": "watch_log", "version_id": vid, "operation": "start", "token": token}
            for value in (2**64, str(2**64), 1e300, True, [1]):
                await ws.send(json.dumps({**watch, "id": "w", "since": value}))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
                assert reply["error_code"] == 1004 and reply["error_msg"].startswith("since "), reply
        out = []
        for value in (str(2**64), "9" * 30, "-1"):
            url = f"ws://127.0.0.1:{services.logstream_port}/ws/versions/{vid}/logs?since={value}&token={token}"
            async with connect(url) as ws:
                try:
                    async for _ in ws:
                        pass
                except ConnectionClosed:
                    pass
                out.append((ws.close_code, ws.close_reason))
        return out

    for code, reason in asyncio.run(run()):
        assert code == 4400 and reason.startswith("since "), (code, reason)


# -- oversized secrets and deploy targets ---------------------------------------------------------


def test_oversized_secrets_and_deploy_targets_are_refused_naming_the_field(api, alice):
    user, token = alice
    base = {"repository": {"url": "https://git.example.test/x/y.git"}}
    cases = [
        ({"secrets": {"BIG": "x" * (64 * 1024 + 1)}}, "secrets.BIG"),
        ({"secrets": {f"S{i}": "v" for i in range(101)}}, "secrets"),
        ({"deploy_targets": [{"cluster": "c"}] * 51}, "deploy_targets"),
        ({"deploy_targets": [{"k": "x" * 2001}]}, "deploy_targets.0.k"),
        ({"deploy_targets": [{f"k{i}": "x" * 1900 for i in range(20)}] * 2}, "deploy_targets"),
    ]
    sid, _, _ = create_service(api, user, token)
    projected(api, user, token, sid)
    for extra, field in cases:
        created = api.post(
            f"/api/v1/{user}/services",
            json={"name": "big-" + uuid.uuid4().hex[:6], **base, **extra},
            headers=auth(token),
        )
        assert_error(created, 422, field=field)
        updated = api.put(f"/api/v1/{user}/services/{sid}", json=extra, headers=auth(token))
        assert_error(updated, 422, field=field)
    # At the bounds it is accepted.
    fine = {"secrets": {f"S{i}": "v" * 1000 for i in range(100)}, "deploy_targets": [{"cluster": "c"}] * 50}
    assert api.put(f"/api/v1/{user}/services/{sid}", json=fine, headers=auth(token)).status_code == 202


# -- secrets at rest ------------------------------------------------------------------------------


def test_stored_secrets_are_encrypted_and_read_back_by_the_builder_and_the_webhook(api, store, alice):
    user, token = alice
    plain = {
        "webhook_secret": "hook-" + uuid.uuid4().hex,
        "password": "pw-" + uuid.uuid4().hex,
        "token": "tok-" + uuid.uuid4().hex,
        "value": "val-" + uuid.uuid4().hex,
    }
    sid, _, body = create_service(
        api,
        user,
        token,
        webhook_secret=plain["webhook_secret"],
        secrets={"API_KEY": plain["value"]},
        repository={
            "url": f"https://git.example.test/{user}/{uuid.uuid4().hex}.git",
            "username": "bot",
            "password": plain["password"],
            "token": plain["token"],
        },
    )
    raw = store.secrets.find_one({"_id": sid})
    for value in plain.values():
        assert value not in str(raw)
    for field in ("webhook_secret", "repo_password", "repo_token"):
        assert raw[field].startswith(PREFIX)
    assert raw["values"]["API_KEY"].startswith(PREFIX)
    projected(api, user, token, sid)
    service = store.services.find_one({"_id": sid})
    state = BuilderState(store, "test-worker")
    spec = asyncio.run(state.repo_spec(service))
    assert (spec.username, spec.password, spec.token) == ("bot", plain["password"], plain["token"])
    assert sorted(asyncio.run(state.secret_values(sid))) == sorted([plain["password"], plain["token"], plain["value"]])
    headers, payload = github_push(body["repository"]["url"], plain["webhook_secret"])
    assert api.post("/webhooks/github", content=payload, headers=headers).status_code == 202


def test_the_builder_clones_a_password_protected_repository_with_the_stored_password(api, store, alice, tmp_path):
    user, token = alice
    repo = GitRepo(tmp_path)  # (its bare origin.git is served over HTTP with Basic authentication)
    sha = repo.commit({"README": "protected\n"})
    password = "pw-" + uuid.uuid4().hex

    async def quiet(line: str) -> None:
        pass

    with git_http_server(tmp_path, "bob", password) as base:
        url = f"{base}/origin.git"
        sid, _, _ = create_service(api, user, token, repository={"url": url, "username": "bob", "password": password})
        assert password not in str(store.secrets.find_one({"_id": sid}))
        projected(api, user, token, sid)
        spec = asyncio.run(BuilderState(store, "test-worker").repo_spec(store.services.find_one({"_id": sid})))
        assert asyncio.run(GitSvn().clone(spec, tmp_path / "clone", None, "main", quiet)) == sha
        assert (tmp_path / "clone" / "README").read_text() == "protected\n"
        with pytest.raises(VcsError):  # (the server does refuse a wrong password)
            asyncio.run(GitSvn().clone(replace(spec, password="wrong"), tmp_path / "no", None, "main", quiet))


def test_older_plaintext_secrets_are_still_read_then_sealed_in_place(api, store, settings, alice):
    user, token = alice
    sid, _, body = create_service(api, user, token)
    projected(api, user, token, sid)
    # As written before encryption and before the lookup key: plaintext, no repo_key.
    old = {"webhook_secret": "old-plain-secret", "repo_password": "old-pw", "values": {"K": "old-v", "a.b": "x"}}
    store.secrets.replace_one({"_id": sid}, {"_id": sid, **old})
    state = BuilderState(store, "test-worker")
    spec = asyncio.run(state.repo_spec(store.services.find_one({"_id": sid})))
    assert spec.password == "old-pw"
    assert backfill(store) >= 1  # (what a gateway does once when it starts on older data)
    headers, payload = github_push(body["repository"]["url"], "old-plain-secret")
    assert api.post("/webhooks/github", content=payload, headers=headers).status_code == 202
    # What each gateway runs as it starts: the plaintext values are encrypted where they are.
    assert seal_stored(store, SecretBox.of(settings)) >= 1
    raw = store.secrets.find_one({"_id": sid})
    assert "old-pw" not in str(raw) and "old-plain-secret" not in str(raw) and "old-v" not in str(raw)
    assert SecretBox.of(settings).open_doc(raw)["values"] == {"K": "old-v", "a.b": "x"}
    assert asyncio.run(state.secret_values(sid)).count("old-pw") == 1
    headers, payload = github_push(body["repository"]["url"], "old-plain-secret")
    assert api.post("/webhooks/github", content=payload, headers=headers).status_code == 202


# -- the webhook's repository lookup --------------------------------------------------------------


def test_webhook_lookup_is_an_indexed_equality_query(api, store, alice):
    user, token = alice
    assert any(spec["key"] == [("repo_key", 1)] for spec in store.secrets.index_information().values())
    for query in lookup_queries(["https://git.example.test/nobody/" + uuid.uuid4().hex]):
        plan = str(store.secrets.find(query).explain().get("queryPlanner", {}).get("winningPlan"))
        assert "USING INDEX" in plan or "IXSCAN" in plan, plan  # (nx-27017's SQLite plan / MongoDB's)
    # Unknown repository: 404; a just-created service is found at once (no snapshot to wait for); its
    # new URL after an update; nothing after its deletion.
    secret = "s3cret-" + uuid.uuid4().hex
    url = f"https://git.example.test/{user}/{uuid.uuid4().hex}.git"
    headers, payload = github_push(url, secret)
    assert_error(api.post("/webhooks/github", content=payload, headers=headers), 404, "repository_not_found")
    sid, _, _ = create_service(api, user, token, webhook_secret=secret, repository={"url": url})
    headers, payload = github_push(url.replace("https://git.", "HTTPS://GIT.").removesuffix(".git") + "/", secret)
    assert api.post("/webhooks/github", content=payload, headers=headers).status_code == 202
    projected(api, user, token, sid)
    moved = f"https://git.example.test/{user}/{uuid.uuid4().hex}"
    assert (
        api.put(f"/api/v1/{user}/services/{sid}", json={"repository": {"url": moved}}, headers=auth(token)).status_code
        == 202
    )
    headers, payload = github_push(moved + ".git", secret)
    wait_until(
        lambda: api.post("/webhooks/github", content=payload, headers=headers).status_code == 202, 10, "the new URL"
    )
    assert api.delete(f"/api/v1/{user}/services/{sid}", headers=auth(token)).status_code == 202
    wait_until(
        lambda: api.post("/webhooks/github", content=payload, headers=headers).status_code == 404, 10, "the deletion"
    )
