"""Pure parts of the logstream: the hub's bounded subscriber buffers, frame encoding, archive documents."""

from __future__ import annotations

import asyncio
import json

from services.logstream.archiver import log_doc
from services.logstream.endpoint import frame
from services.logstream.hub import Direct, Hub, Line, Subscriber
from services.logstream.original import response
from shared.events import LogLine, LogLinePayload


def line(seq: int) -> dict:
    return {"seq": seq, "stage": "build", "stream": "stdout", "text": f"line {seq}", "ts": 1.0}


async def test_hub_delivers_to_the_versions_subscribers_only() -> None:
    hub = Hub()
    a, b, other = Subscriber("v1", 10), Subscriber("v1", 10), Subscriber("v2", 10)
    for sub in (a, b, other):
        hub.add(sub)
    hub.publish("v1", line(1))
    hub.publish("v1", line(2))
    assert [ln.seq for ln in a.take()] == [1, 2]
    assert [ln.seq for ln in b.take()] == [1, 2]
    assert other.take() == [] and not other.wakeup.is_set()
    hub.remove(a)
    hub.publish("v1", line(3))
    assert a.take() == [] and [ln.seq for ln in b.take()] == [3]
    hub.finish("v1", "failed")
    assert b.final_status == "failed" and b.wakeup.is_set() and other.final_status is None


async def test_a_subscriber_past_its_bound_is_marked_and_reported_once() -> None:
    reported: list[Subscriber] = []
    slow = Subscriber("v1", 3, reported.append)
    fast = Subscriber("v1", 3)
    hub = Hub()
    hub.add(slow)
    hub.add(fast)
    for seq in range(1, 7):
        hub.publish("v1", line(seq))
        fast.take()  # keeps up
    assert slow.overflowed and reported == [slow]
    assert slow.pending == type(slow.pending)()  # its buffer is dropped; it resumes with since
    assert not fast.overflowed


def test_frames_are_one_object_or_an_array() -> None:
    assert json.loads(frame([Line(line(1))])) == line(1)
    assert json.loads(frame([Line(line(1)), Line(line(2))])) == [line(1), line(2)]


def test_original_protocol_response_shape() -> None:
    assert json.loads(response("heart_beat", 7)) == {
        "action": "response",
        "response": "heart_beat",
        "id_ack": 7,
        "error_code": 0,
        "error_msg": "",
    }


def test_archive_document_of_a_log_line() -> None:
    event = LogLine.make("v9", LogLinePayload(version_id="v9", seq=42, stage="build", text="hi", ts=2.5))
    assert log_doc(event.encode()) == {
        "_id": "v9:000000000042",
        "version_id": "v9",
        "seq": 42,
        "stage": "build",
        "stream": "stdout",
        "text": "hi",
        "ts": 2.5,
    }
    assert log_doc(b"{not json") is None
    assert log_doc(json.dumps({"type": "VersionSucceeded"}).encode()) is None


class _Stuck(Direct):
    """A connection whose write buffer is over its bound (the hub must not write to it)."""

    def buffered(self) -> int:
        return self.limit + 1


async def test_live_subscribers_get_one_frame_per_window_and_drop_back_on_a_gap() -> None:
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    server_side: list = []
    done = asyncio.Event()

    async def handler(conn) -> None:
        server_side.append(conn)
        await done.wait()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as c1, connect(f"ws://127.0.0.1:{port}") as c2:
            while len(server_side) < 2:
                await asyncio.sleep(0.01)
            hub = Hub(window=0.01)
            subs = [Subscriber("v1", 10, direct=Direct(conn, frame, "lines", 1 << 20)) for conn in server_side]
            for sub in subs:
                hub.add(sub)
                hub.go_live(sub)
            assert all(sub.live for sub in subs)
            for seq in range(1, 6):
                hub.publish("v1", line(seq))
            for client in (c1, c2):  # the five lines of one fetch share one frame
                assert json.loads(await asyncio.wait_for(client.recv(), 5)) == [line(s) for s in range(1, 6)]
            assert [sub.last_sent for sub in subs] == [5, 5]
            assert all(not sub.pending and not sub.wakeup.is_set() for sub in subs)

            hub.publish("v1", line(7))  # line 6 went missing: the feeds must fill the gap from history
            await asyncio.sleep(0.05)
            for sub in subs:
                assert not sub.live and sub.wakeup.is_set()
                assert [ln.seq for ln in sub.take()] == [7]
            hub.publish("v1", line(8))  # queued again: lines go to the buffers
            assert [[ln.seq for ln in sub.pending] for sub in subs] == [[8], [8]]
            done.set()


async def test_a_live_subscriber_over_its_byte_bound_is_cut_off() -> None:
    reported: list[Subscriber] = []
    hub = Hub(window=0.0)
    sub = Subscriber("v1", 10, reported.append, direct=_Stuck(object(), frame, "lines", 100))
    hub.add(sub)
    hub.go_live(sub)
    hub.publish("v1", line(1))
    await asyncio.sleep(0.01)
    assert sub.overflowed and reported == [sub] and not sub.live and sub.last_sent == 0


async def test_history_reads_are_shared_only_when_begun_after_the_caller_asked() -> None:
    import threading

    from services.logstream.feed import SharedReads

    calls: list[tuple] = []
    gate = threading.Event()

    def reader(store, version_id, since, limit, until):
        calls.append((version_id, since))
        gate.wait(5)
        return [{"seq": since + 1}]

    reads = SharedReads(reader)
    first = asyncio.create_task(reads.read("store", "v1", 0, 10, None))
    await asyncio.sleep(0.05)  # the first query is running: later callers must not take its answer
    later = [asyncio.create_task(reads.read("store", "v1", 0, 10, None)) for _ in range(5)]
    other = asyncio.create_task(reads.read("store", "v1", 7, 10, None))  # other lines: its own query
    await asyncio.sleep(0.05)
    assert calls == [("v1", 0), ("v1", 7)]
    gate.set()
    assert await first == [{"seq": 1}] and await other == [{"seq": 8}]
    assert [await t for t in later] == [[{"seq": 1}]] * 5
    assert calls == [("v1", 0), ("v1", 7), ("v1", 0)]  # the five waited for one newer query together


def test_a_missing_line_is_waited_for_while_the_archiver_advances() -> None:
    from shared.logs_read import Stall

    stall = Stall(60)
    stall.since = 0.0
    assert not stall.stalled(100, 10.0)
    assert not stall.stalled(None, 50.0)  # broker restarting: unreadable, not yet long
    assert not stall.stalled(100, 69.0)  # no progress since 10 s: 59 s
    assert stall.stalled(100, 71.0)  # 61 s standing still
    assert not stall.stalled(101, 72.0)  # it moved again
    assert not stall.stalled(101, 131.0) and stall.stalled(None, 133.0)
