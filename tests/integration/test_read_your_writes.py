"""Read-your-writes on the real stack (broker, Mongo-wire server, projector, gateway, logstream): what a
create answers is readable at once — by a GET, a webhook and a log subscription — and a log subscription
to a version requested a moment ago (not projected yet) waits for it instead of 4404. Also `fornax logs`
without -f: the archive so far, then exit."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from logstream_helpers import Watcher, end_version, new_user, write_lines, ws_url
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from shared.bus import EventBus
from shared.events import VersionRequested
from shared.events.versions import VersionRequestedPayload
from tests.integration.gateway_helpers import auth, github_push
from tests.waits import wait_until, wait_until_async

pytestmark = pytest.mark.integration

SERVICES = ("projector", "logstream", "gateway")


@pytest.fixture(scope="module")
def services(stack, no_build_workers, store):
    for name in SERVICES:
        stack.start_service(name)
    # A projector that just started may still be joining its group and catching up with the topics (then
    # creates answer 202 past the wait): these tests are about the steady state, so wait for that first.
    user, token = new_user(store, "warm")
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.gateway_port}", headers=auth(token)) as api:
        sid = _create_service(api, user)[0].json()["service_id"]
        wait_until(lambda: api.get(f"/api/v1/{user}/services/{sid}").status_code == 200, 120, "the projector")
    yield stack
    for name in SERVICES:
        stack.stop(name)


@pytest.fixture
async def bus(settings):
    async with EventBus(settings) as b:
        yield b


@pytest.fixture
def alice(store):
    return new_user(store, "alice")


@pytest.fixture
def api(services, alice):
    user, token = alice
    with httpx.Client(base_url=f"http://127.0.0.1:{services.gateway_port}", headers=auth(token), timeout=30) as client:
        yield client


def _create_service(api: httpx.Client, user: str) -> tuple[httpx.Response, str]:
    url = f"https://git.example.test/{user}/{uuid.uuid4().hex}.git"
    resp = api.post(f"/api/v1/{user}/services", json={"name": "s-" + uuid.uuid4().hex[:8], "repository": {"url": url}})
    return resp, url


def test_service_and_version_are_readable_right_after_create(api, alice):
    user, _ = alice
    for _ in range(3):
        resp, _ = _create_service(api, user)
        assert resp.status_code == 201, resp.text
        sid = resp.json()["service_id"]
        assert resp.headers["Location"] == f"/api/v1/{user}/services/{sid}"
        assert "Retry-After" not in resp.headers
        got = api.get(resp.headers["Location"])
        assert got.status_code == 200, got.text
        assert got.json()["service_id"] == sid
        # A version of the service just created, at once; then the version itself, at once.
        version = api.post(f"/api/v1/{user}/versions", json={"service_id": sid, "name": "v1"})
        assert version.status_code == 201, version.text
        vid = version.json()["version_id"]
        assert version.headers["Location"] == f"/api/v1/{user}/versions/{vid}"
        doc = api.get(version.headers["Location"])
        assert doc.status_code == 200 and doc.json()["status"] in ("pending", "queued"), doc.text
        listing = api.get(f"/api/v1/{user}/services/{sid}/versions").json()
        assert [v["version_id"] for v in listing["versions"]] == [vid]


def test_webhook_right_after_create_is_accepted(api, alice):
    user, _ = alice
    for _ in range(3):
        resp, url = _create_service(api, user)
        assert resp.is_success, resp.text
        headers, body = github_push(url, resp.json()["webhook_secret"])
        hook = api.post("/webhooks/github", content=body, headers=headers)
        assert hook.status_code == 202, hook.text  # not 404 "no service is registered for this repository"
        assert hook.json()["services"] == 1
        assert resp.status_code == 201


async def test_log_subscription_right_after_version_create(services, api, alice, bus):
    user, token = alice
    resp, _ = _create_service(api, user)
    sid = resp.json()["service_id"]
    version = api.post(f"/api/v1/{user}/versions", json={"service_id": sid, "name": "v1"})
    assert version.status_code == 201, version.text
    vid = version.json()["version_id"]
    watcher = Watcher(ws_url(services.logstream_port, vid), token)
    task = asyncio.create_task(watcher.run())
    await write_lines(bus, vid, 3)
    await end_version(bus, vid, "success")
    await asyncio.wait_for(task, 60)
    assert watcher.close_code == 1000, (watcher.close_code, watcher.close_reason)
    assert watcher.seqs == [1, 2, 3] and watcher.final["status"] == "success"


async def _request_unprojected(bus: EventBus, user: str) -> str:
    """Publish a VersionRequested and return at once: the projector has not folded it yet."""
    vid = uuid.uuid4().hex
    payload = VersionRequestedPayload(service_id=uuid.uuid4().hex, user_id=user, name=f"v-{vid[:6]}")
    await bus.publish(VersionRequested.make(vid, payload, actor=user))
    return vid


async def test_log_subscription_waits_for_a_version_not_yet_projected(services, store, bus, alice):
    user, token = alice
    vid = await _request_unprojected(bus, user)
    assert store.versions.find_one({"_id": vid}) is None  # (what the subscription below meets first)
    watcher = Watcher(ws_url(services.logstream_port, vid), token)
    task = asyncio.create_task(watcher.run())
    await write_lines(bus, vid, 4)
    await end_version(bus, vid, "success")
    await asyncio.wait_for(task, 60)
    assert watcher.close_code == 1000, (watcher.close_code, watcher.close_reason)
    assert watcher.seqs == [1, 2, 3, 4]

    # The original protocol's watch_log waits the same way.
    vid2 = await _request_unprojected(bus, user)
    async with connect(f"ws://127.0.0.1:{services.logstream_port}/ws") as ws:
        watch = {"action": "watch_log", "version_id": vid2, "operation": "start", "id": "w", "token": token}
        await ws.send(json.dumps(watch))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert reply["response"] == "watch_log" and reply["error_code"] == 0, reply


async def test_unknown_version_is_still_4404_after_the_wait(services, settings, alice):
    _, token = alice
    unknown = uuid.uuid4().hex
    started = time.monotonic()
    async with connect(ws_url(services.logstream_port, unknown, token=token)) as ws:
        try:
            async for _ in ws:
                pass
        except ConnectionClosed:
            pass
        assert ws.close_code == 4404, (ws.close_code, ws.close_reason)
    assert time.monotonic() - started >= settings.logstream_version_wait * 0.9  # it did wait
    async with connect(f"ws://127.0.0.1:{services.logstream_port}/ws") as ws:
        watch = {"action": "watch_log", "version_id": unknown, "operation": "start", "id": "w", "token": token}
        await ws.send(json.dumps(watch))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert reply["error_code"] == 1404, reply


async def test_deploy_is_listed_right_after_the_request(services, api, alice, bus, store):
    user, _ = alice
    resp, _ = _create_service(api, user)
    sid = resp.json()["service_id"]
    version = api.post(f"/api/v1/{user}/versions", json={"service_id": sid, "name": "v1"})
    vid = version.json()["version_id"]
    await end_version(bus, vid, "success")
    await wait_until_async(lambda: (store.versions.find_one({"_id": vid}) or {}).get("status") == "success")
    deploy = api.post(f"/api/v1/{user}/services/{sid}/deploy", json={"version_id": vid, "target": "local"})
    assert deploy.status_code == 202, deploy.text  # (the deploy itself goes on: accepted, not done)
    assert deploy.headers["Location"] == f"/api/v1/{user}/services/{sid}/deployments"
    assert "Retry-After" not in deploy.headers
    listed = api.get(deploy.headers["Location"]).json()["deployments"]
    assert [(d["deployment_id"], d["status"]) for d in listed] == [(deploy.json()["deployment_id"], "requested")]


def _cli_logs(services, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    server = f"ws://127.0.0.1:{services.logstream_port}"
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "logs", *args, "--token", token, "--server", server],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_logs_without_follow_prints_the_archive_and_exits(services, store, bus, alice):
    user, token = alice
    vid = await _request_unprojected(bus, user)
    await write_lines(bus, vid, 5)
    await wait_until_async(lambda: store.logs.count_documents({"version_id": vid}) == 5, 60, "5 archived lines")
    # Still running: the five lines, then exit 0 (without -f nothing waits for the end).
    out = await asyncio.to_thread(_cli_logs, services, token, vid)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"line {i}" for i in range(1, 6)]
    assert "pending" in out.stderr and "-f" in out.stderr
    out = await asyncio.to_thread(_cli_logs, services, token, vid, "--since", "3", "--json")
    assert [json.loads(ln)["seq"] for ln in out.stdout.splitlines()] == [4, 5]
    async with connect(ws_url(services.logstream_port, vid, token=token) + "&follow=sometimes") as ws:
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4400 and "follow" in ws.close_reason
    # Ended: the whole log and the outcome's exit status, with or without -f.
    await write_lines(bus, vid, 2, start=6)
    await end_version(bus, vid, "failed")
    await wait_until_async(lambda: (store.versions.find_one({"_id": vid}) or {}).get("status") == "failed")
    for args in ((vid,), ("-f", vid)):
        out = await asyncio.to_thread(_cli_logs, services, token, *args)
        assert out.returncode == 1, out.stderr
        assert out.stdout.splitlines() == [f"line {i}" for i in range(1, 8)]
