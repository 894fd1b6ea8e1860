"""The REST log routes of the gateway and `fornax logs -f`, on the real stack: paging, follow as NDJSON,
refusals, the CLI reconnecting across a logstream restart, and the whole log after every process
restarted (the archive lives in nx-27017)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest
from logstream_helpers import end_version, new_user, request_version, write_lines

from shared.bus import EventBus
from tests.waits import wait_until_async

pytestmark = pytest.mark.integration

SERVICES = ("projector", "logstream", "gateway")


@pytest.fixture(scope="module")
def services(stack, no_build_workers):
    for name in SERVICES:
        stack.start_service(name)
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


def client(stack, token: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.gateway_port}", headers=headers, timeout=60)


async def test_paged_log_and_refusals(services, store, bus, alice):
    user, token = alice
    mallory, mtoken = new_user(store, "mallory")
    vid = await request_version(bus, store, user)
    await write_lines(bus, vid, 2500)
    await end_version(bus, vid, "success")
    await wait_until_async(lambda: store.logs.count_documents({"version_id": vid}) == 2500, 60, "2500 archived lines")
    path = f"/api/v1/{user}/versions/{vid}/logs"
    async with client(services, token) as http:
        first = (await http.get(path)).json()
        assert [ln["seq"] for ln in first["lines"]] == list(range(1, 1001))
        assert first["next_since"] == 1000 and first["has_more"] and first["total"] == 2500
        assert set(first["lines"][0]) == {"seq", "stage", "stream", "text", "ts"}
        page = (await http.get(path, params={"since": 2000, "limit": 10000})).json()
        assert [ln["seq"] for ln in page["lines"]] == list(range(2001, 2501))
        assert page["next_since"] == 2500 and not page["has_more"]
        empty = (await http.get(path, params={"since": 2500})).json()
        assert empty["lines"] == [] and empty["next_since"] == 2500
        for params, field in (
            ({"limit": 10001}, "limit"),
            ({"limit": 0}, "limit"),
            ({"since": "x"}, "since"),
            ({"since": -1}, "since"),
        ):
            resp = await http.get(path, params=params)
            assert resp.status_code == 422 and resp.json()["error"]["field"] == field
        unknown = await http.get(f"/api/v1/{user}/versions/{'0' * 32}/logs")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "version_not_found"
    async with client(services, mtoken) as http:
        assert (await http.get(path)).status_code == 403
        foreign = await http.get(f"/api/v1/{mallory}/versions/{vid}/logs")
        assert foreign.status_code == 404 and "lines" not in foreign.json()
    async with client(services, None) as http:
        assert (await http.get(path)).status_code == 401


async def test_follow_streams_ndjson_until_the_end(services, store, bus, alice):
    user, token = alice
    vid = await request_version(bus, store, user)
    await write_lines(bus, vid, 50)
    got: list[dict] = []

    async def follow() -> None:
        async with client(services, token) as http:
            async with http.stream(
                "GET", f"/api/v1/{user}/versions/{vid}/logs", params={"follow": "true", "since": 10}
            ) as resp:
                assert resp.status_code == 200
                assert resp.headers["content-type"].startswith("application/x-ndjson")
                async for line in resp.aiter_lines():
                    if line:
                        got.append(json.loads(line))

    task = asyncio.create_task(follow())
    await wait_until_async(lambda: len(got) >= 40, 30, "the archived lines")
    assert not task.done()  # still streaming: the version has not ended
    await write_lines(bus, vid, 150, start=51, pause_every=25, pause=0.05)
    await end_version(bus, vid, "failed")
    await asyncio.wait_for(task, 60)
    assert [ln["seq"] for ln in got[:-1]] == list(range(11, 201))
    assert got[-1] == {"final": True, "status": "failed", "version_id": vid}


async def test_cli_follows_across_a_logstream_restart_then_every_process_restarts(
    services, store, bus, alice
):
    user, token = alice
    vid = await request_version(bus, store, user)
    await write_lines(bus, vid, 100)
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "logs",
            "-f",
            vid,
            "--token",
            token,
            "--server",
            f"ws://127.0.0.1:{services.logstream_port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await asyncio.sleep(3)
        await asyncio.to_thread(services.stop, "logstream")  # the CLI's connection drops
        await write_lines(bus, vid, 100, start=101)
        await asyncio.to_thread(services.start_service, "logstream")
        await write_lines(bus, vid, 100, start=201, pause_every=10, pause=0.02)
        await end_version(bus, vid, "cancelled")
        out, err = await asyncio.to_thread(cli.communicate, timeout=120)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 2, err
    assert out.splitlines() == [f"line {i}" for i in range(1, 301)]
    assert f"version {vid} ended: cancelled" in err

    # Every Fornax process restarts; the log is still whole (Tansu and nx-27017 keep running).
    await wait_until_async(lambda: store.logs.count_documents({"version_id": vid}) == 300, 60, "300 archived lines")
    for name in SERVICES:
        await asyncio.to_thread(services.stop, name)
    for name in SERVICES:
        await asyncio.to_thread(services.start_service, name)
    async with client(services, token) as http:
        body = (await http.get(f"/api/v1/{user}/versions/{vid}/logs", params={"limit": 10000})).json()
    assert [ln["text"] for ln in body["lines"]] == [f"line {i}" for i in range(1, 301)]
    assert body["status"] == "cancelled" and body["total"] == 300


async def test_cli_usage_and_refusal(services, store, bus, alice):
    from services.client.follow import follow, main

    user, token = alice
    _, mtoken = new_user(store, "mallory")
    vid = await request_version(bus, store, user)
    assert await asyncio.to_thread(main, []) == 64
    server = f"ws://127.0.0.1:{services.logstream_port}"
    assert await follow(server, vid, mtoken, retries=0) == 3
    assert await follow(server, vid, "fx_wrong", retries=0) == 3
