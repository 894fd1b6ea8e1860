"""The logstream on the real broker and Mongo-wire server, with versions made by the real projector:
live lines, late joiners, resume with `since`, terminal versions, two instances, authorisation, a
stalled subscriber, and the archive."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
from logstream_helpers import Watcher, end_version, lines_of, new_user, request_version, write_lines, ws_url
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from infra.local.procs import free_port
from services.logstream.endpoint import TOO_SLOW
from shared.bus import EventBus
from tests.waits import wait_until_async

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def services(stack, no_build_workers):
    stack.start_service("projector")
    stack.start_service("logstream")
    yield stack
    stack.stop("logstream")
    stack.stop("projector")


@pytest.fixture(scope="module")
def second(services):
    """A second logstream instance: short idle timeout and a small subscriber buffer."""
    port = free_port()
    services.start_service(
        "logstream",
        instance="logstream2",
        env={
            "FORNAX_LOGSTREAM_PORT": str(port),
            "FORNAX_IDLE_TIMEOUT": "3",
            "FORNAX_LOGSTREAM_QUEUE_LINES": "200",
            "FORNAX_LOGSTREAM_BUFFER_BYTES": str(256 * 1024),
        },
    )
    yield port
    services.stop("logstream2")


@pytest.fixture
async def bus(settings):
    async with EventBus(settings) as b:
        yield b


@pytest.fixture
def alice(store):
    return new_user(store, "alice")


async def test_live_lines_arrive_before_the_version_ends(services, store, bus, alice):
    user, token = alice
    vid = await request_version(bus, store, user)
    watcher = Watcher(ws_url(services.logstream_port, vid), token)
    task = asyncio.create_task(watcher.run())
    await asyncio.sleep(0.5)
    await write_lines(bus, vid, 5)
    await asyncio.wait_for(watcher.got_line.wait(), 30)
    # The version is still running: nothing ended it yet, and the lines are already here.
    assert store.versions.find_one({"_id": vid})["status"] == "pending"
    await wait_until_async(lambda: len(watcher.lines) == 5, 30, "5 live lines")
    assert watcher.final is None
    await end_version(bus, vid, "success")
    await asyncio.wait_for(task, 30)
    assert watcher.seqs == [1, 2, 3, 4, 5]
    assert [ln["text"] for ln in watcher.lines] == [f"line {i}" for i in range(1, 6)]
    assert set(watcher.lines[0]) == {"seq", "stage", "stream", "text", "ts"}
    assert watcher.final == {"final": True, "status": "success", "version_id": vid}
    assert watcher.close_code == 1000


async def test_joining_mid_stream_gets_every_line_once_in_order(services, store, bus, alice):
    user, token = alice
    vid = await request_version(bus, store, user)
    producer = asyncio.create_task(write_lines(bus, vid, 1500, pause_every=50, pause=0.02))
    # Join once part of the log is archived: history, then the seam, then live lines.
    await wait_until_async(lambda: store.logs.count_documents({"version_id": vid}) >= 300, 30, "300 archived lines")
    watchers = [Watcher(ws_url(services.logstream_port, vid), token) for _ in range(3)]
    tasks = [asyncio.create_task(w.run()) for w in watchers]
    await producer
    await end_version(bus, vid, "failed")
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    for w in watchers:
        assert w.seqs == list(range(1, 1501))
        assert w.final == {"final": True, "status": "failed", "version_id": vid}


async def test_reconnect_with_since_continues_exactly(services, store, bus, alice):
    user, token = alice
    vid = await request_version(bus, store, user)
    await write_lines(bus, vid, 100)
    first = await asyncio.wait_for(
        Watcher(ws_url(services.logstream_port, vid), token).run(stop_after=40), 60
    )
    last = first.seqs[-1]
    assert first.seqs == list(range(1, last + 1))
    producer = asyncio.create_task(write_lines(bus, vid, 200, start=101, pause_every=20, pause=0.02))
    second = Watcher(ws_url(services.logstream_port, vid, since=last, token=token))
    task = asyncio.create_task(second.run())
    await producer
    await end_version(bus, vid, "cancelled")
    await asyncio.wait_for(task, 60)
    assert second.seqs == list(range(last + 1, 301))
    assert second.final["status"] == "cancelled"


def _status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        return json.loads(resp.read())


async def test_a_viewer_who_leaves_is_dropped_at_once(services, store, bus, alice):
    """A caught-up viewer is fed by the hub; when it disconnects, its subscription ends there and then,
    not at the version's next line or its end."""
    user, token = alice
    port = services.logstream_port
    vid = await request_version(bus, store, user)
    before = _status(port)["subscribers"]
    async with connect(ws_url(port, vid, token=token)) as ws:
        await write_lines(bus, vid, 3)
        got: list = []
        while len(got) < 3:
            got += lines_of(await asyncio.wait_for(ws.recv(), 30))[0]
        status = await wait_until_async(lambda: (s := _status(port))["live"] >= 1 and s, 30, "the viewer caught up")
        assert status["subscribers"] == before + 1
    await wait_until_async(lambda: _status(port)["subscribers"] == before, 10, "the viewer dropped")
    await end_version(bus, vid, "success")


async def test_ended_version_sends_history_then_final(services, store, bus, alice):
    user, token = alice
    vid = await request_version(bus, store, user)
    await write_lines(bus, vid, 2500)
    await end_version(bus, vid, "success")
    await wait_until_async(
        lambda: store.versions.find_one({"_id": vid, "status": "success"}), 30, "success projected"
    )
    w = await asyncio.wait_for(Watcher(ws_url(services.logstream_port, vid), token).run(), 60)
    assert w.seqs == list(range(1, 2501))
    assert w.final["status"] == "success"
    assert w.close_code == 1000
    # And the archive holds each line once, under its documented id.
    doc = store.logs.find_one({"_id": f"{vid}:{7:012d}"})
    assert doc["version_id"] == vid and doc["seq"] == 7 and doc["text"] == "line 7"
    assert store.logs.count_documents({"version_id": vid}) == 2500


async def test_two_instances_each_serve_any_version(services, second, store, bus, alice):
    user, token = alice
    vids = [await request_version(bus, store, user) for _ in range(4)]  # spread over partitions
    watchers = [
        Watcher(ws_url(port, vid), token) for vid in vids for port in (services.logstream_port, second)
    ]
    tasks = [asyncio.create_task(w.run()) for w in watchers]
    await asyncio.sleep(0.5)
    await asyncio.gather(*(write_lines(bus, vid, 50) for vid in vids))
    for vid in vids:
        await end_version(bus, vid, "success")
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    for w in watchers:
        assert w.seqs == list(range(1, 51))
        assert w.final["status"] == "success"


async def test_authorisation(services, store, bus, alice):
    user, token = alice
    _, mallory = new_user(store, "mallory")
    vid = await request_version(bus, store, user)
    await write_lines(bus, vid, 3, text="secret build line {seq}")

    async def close_code(url, headers=None):
        async with connect(url, additional_headers=headers or {}) as ws:
            frames = []
            try:
                async for frame in ws:
                    frames.append(frame)
            except ConnectionClosed:
                pass
            return ws.close_code, frames

    port = services.logstream_port
    assert await close_code(ws_url(port, vid), {"Authorization": f"Bearer {mallory}"}) == (4403, [])
    assert await close_code(ws_url(port, vid, token=mallory)) == (4403, [])
    assert await close_code(ws_url(port, vid)) == (4401, [])
    assert await close_code(ws_url(port, vid, token="fx_nonsense")) == (4401, [])
    assert await close_code(ws_url(port, "0" * 32, token=token)) == (4404, [])
    assert await close_code(ws_url(port, vid, token=token) + "&since=-3") == (4400, [])


async def test_stalled_subscriber_is_cut_off_while_others_keep_up(services, second, store, bus, alice):
    user, token = alice
    vid = await request_version(bus, store, user)
    fast = Watcher(ws_url(second, vid), token)
    fast_task = asyncio.create_task(fast.run())
    # The stalled client never reads: its socket buffers fill, then the 256 KiB its connection may
    # buffer (or, while it is not caught up, its 200-line buffer) overflows.
    stalled = await connect(ws_url(second, vid, token=token), max_queue=1, max_size=None)
    await asyncio.sleep(0.5)
    await write_lines(bus, vid, 3000, text="{seq} " + "x" * 4000, pause_every=100, pause=0.01)
    await end_version(bus, vid, "success")
    await asyncio.wait_for(fast_task, 90)
    assert fast.seqs == list(range(1, 3001))
    assert fast.final["status"] == "success"
    # A client that reads nothing cannot even see its connection end; give the server time to cut it
    # off (its send times out after 10 s, its close after 2 s more), then read what did arrive.
    await asyncio.sleep(15)
    # What it did receive is an exact prefix; it resumes after its last line and misses nothing.
    got = []

    async def drain():
        try:
            async for frame in stalled:
                lines, final = lines_of(frame)
                assert final is None  # it was cut off before the end
                got.extend(lines)
        except ConnectionClosed:
            pass

    await asyncio.wait_for(drain(), 60)
    assert stalled.close_code in (TOO_SLOW, 1006)
    since = got[-1]["seq"] if got else 0
    assert [ln["seq"] for ln in got] == list(range(1, since + 1))
    assert since < 3000
    resumed = await asyncio.wait_for(Watcher(ws_url(second, vid, since=since), token).run(), 60)
    assert resumed.seqs == list(range(since + 1, 3001))
    assert resumed.final["status"] == "success"


async def _reply(ws, frame):
    await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if msg.get("action") == "response":
            return msg


async def test_original_protocol_session(services, store, bus, alice):
    user, token = alice
    _, mallory = new_user(store, "mallory")
    vid = await request_version(bus, store, user, service_id="svc-1")
    async with connect(f"ws://127.0.0.1:{services.logstream_port}/ws") as ws:
        assert await _reply(ws, {"action": "heart_beat", "id": "h1"}) == {
            "action": "response",
            "response": "heart_beat",
            "id_ack": "h1",
            "error_code": 0,
            "error_msg": "",
        }
        # Bad frames get an error reply; the session stays usable.
        assert (await _reply(ws, "{not json"))["error_code"] == 1001
        assert (await _reply(ws, "[1, 2]"))["error_code"] == 1001
        assert (await _reply(ws, {"id": "x"}))["error_code"] == 1002
        bad = await _reply(ws, {"action": "dance", "id": "d1"})
        assert bad["error_code"] == 1003 and bad["id_ack"] == "d1"
        watch = {
            "action": "watch_log",
            "api": "create_version",
            "user_id": user,
            "service_id": "svc-1",
            "version_id": vid,
            "operation": "start",
            "id": "w1",
        }
        # No token at connect and none in the frame: refused.
        assert (await _reply(ws, watch))["error_code"] == 1401
        assert (await _reply(ws, {**watch, "token": mallory}))["error_code"] == 1403
        assert (await _reply(ws, {**watch, "version_id": "f" * 32, "token": token}))["error_code"] == 1404
        assert (await _reply(ws, {**watch, "operation": "pause", "token": token}))["error_code"] == 1004
        ok = await _reply(ws, {**watch, "token": token})
        assert ok == {
            "action": "response",
            "response": "watch_log",
            "id_ack": "w1",
            "error_code": 0,
            "error_msg": "",
        }
        await write_lines(bus, vid, 30)
        await end_version(bus, vid, "success")
        texts, final = [], None
        while final is None:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert msg["action"] == "push_log"
            assert (msg["api"], msg["user_id"], msg["service_id"], msg["version_id"]) == (
                "create_version",
                user,
                "svc-1",
                vid,
            )
            if msg.get("final"):
                final = msg
            else:
                texts += msg["log"].split("\n")
        assert texts == [f"line {i}" for i in range(1, 31)]
        assert final["status"] == "success"
        # Still usable after the watch ended; stop is acknowledged.
        assert (await _reply(ws, {**watch, "operation": "stop", "id": "w2", "token": token}))[
            "error_code"
        ] == 0
        assert (await _reply(ws, {"action": "heart_beat", "id": "h2"}))["id_ack"] == "h2"


async def test_original_protocol_idle_close_and_heartbeat(second):
    url = f"ws://127.0.0.1:{second}/ws"
    async with connect(url) as kept:
        # Heartbeats every second keep the session past the 3 s idle timeout.
        for i in range(6):
            assert (await _reply(kept, {"action": "heart_beat", "id": i}))["error_code"] == 0
            await asyncio.sleep(1)
        assert kept.close_code is None
        async with connect(url) as idle:
            await asyncio.wait_for(idle.wait_closed(), 30)
            assert idle.close_code == 1000 and idle.close_reason == "idle timeout"
