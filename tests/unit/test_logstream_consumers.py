"""The logstream's consumers without Kafka or Mongo: the archiver turns LogLine records into `logs`
documents and inserts each line once (in-memory store); the tail hands lines to the hub and closes a
version's streams when it ends. Both decode through shared/events and route with a Router."""

from __future__ import annotations

import json
from typing import Any

from services.logstream.archiver import ARCHIVE, insert_lines, log_doc
from services.logstream.tail import Tail
from shared.events import LogLine, LogLinePayload, VersionFailed, VersionRequested, VersionSucceeded
from shared.events.versions import VersionFailedPayload, VersionRequestedPayload, VersionSucceededPayload
from shared.settings import Settings
from tests.fakes.store import MemoryStore


def line(seq: int, version: str = "v1", text: str = "hello") -> LogLine:
    return LogLine.make(version, LogLinePayload(version_id=version, seq=seq, stage="build", stream="stderr",
                                                text=text, ts=1.5 + seq))


def test_the_archiver_routes_log_lines_only() -> None:
    assert ARCHIVE.types == {"LogLine"}
    assert log_doc(line(3).encode()) == {"_id": "v1:000000000003", "version_id": "v1", "seq": 3, "stage": "build",
                                         "stream": "stderr", "text": "hello", "ts": 4.5}
    other = VersionSucceeded.make("v1", VersionSucceededPayload())
    assert log_doc(other.encode()) is None
    assert log_doc(None) is None and log_doc(b"\xff") is None
    assert log_doc(json.dumps({"type": "LogLine", "payload": {"seq": 1}}).encode()) is None


def test_each_line_is_archived_once() -> None:
    store = MemoryStore()
    docs = [d for d in (log_doc(line(n).encode()) for n in (1, 2, 3)) if d]
    assert insert_lines(store, docs) == 3
    again = [d for d in (log_doc(line(n).encode()) for n in (2, 3, 4)) if d]  # a replay, and one new line
    assert insert_lines(store, again) == 1
    assert insert_lines(store, []) == 0
    stored = list(store.logs.find({"version_id": "v1"}).sort("seq", 1))
    assert [d["seq"] for d in stored] == [1, 2, 3, 4]


class RecordingHub:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []
        self.finished: list[tuple[str, str, int | None]] = []

    def publish(self, version_id: str, data: dict[str, Any]) -> None:
        self.lines.append((version_id, data))

    def finish(self, version_id: str, status: str, log_seq: int | None = None) -> None:
        self.finished.append((version_id, status, log_seq))


def test_the_tail_hands_lines_to_the_hub_and_ends_finished_versions() -> None:
    hub = RecordingHub()
    tail = Tail(Settings(), hub)  # type: ignore[arg-type]
    assert tail.routes.types == {"LogLine", "VersionSucceeded", "VersionFailed", "VersionCancelled"}
    tail._dispatch_line(line(7, text="compiling").encode())
    tail._dispatch_line(b"{broken")
    tail._dispatch_version(VersionRequested.make("v1", VersionRequestedPayload(service_id="s", user_id="a",
                                                                              name="v1")).encode())
    tail._dispatch_version(VersionFailed.make("v1", VersionFailedPayload(reason="x", log_seq=7)).encode())
    tail._dispatch_version(b"not json")
    assert hub.lines == [("v1", {"seq": 7, "stage": "build", "stream": "stderr", "text": "compiling", "ts": 8.5})]
    assert list(hub.lines[0][1]) == ["seq", "stage", "stream", "text", "ts"]
    assert hub.finished == [("v1", "failed", 7)]  # with the seq of its last log line
