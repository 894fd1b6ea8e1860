"""In-process fan-out: the Kafka tail hands each line to the subscribers of its version without ever
waiting for them.

A subscriber is in one of two modes:
- queued (joining, catching up on history, filling a gap, or a plain in-process consumer): lines go into
  its bounded buffer and its feed task sends them; past the bound it is marked overflowed (its
  connection is then closed with a reason and it resumes with `since`);
- live (caught up, with a `Direct` connection): the hub batches the version's new lines for one window
  and writes one frame, encoded once, to every live connection of the version (websockets' `broadcast`:
  a synchronous write, no task switch per viewer). Its bound is then the connection's write buffer in
  bytes. A subscriber whose next line is not the batch's first (a gap) drops back to queued mode.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import broadcast


class Line:
    """One log line, JSON-encoded once for every subscriber."""

    __slots__ = ("seq", "data", "text_json")

    def __init__(self, data: dict[str, Any]) -> None:
        self.seq: int = int(data["seq"])
        self.data = data
        self.text_json = json.dumps(data, separators=(",", ":"))


@dataclass(eq=False)
class Direct:
    """A WebSocket connection the hub may write a live subscriber's frames to itself.

    `render` turns lines into one frame; subscribers whose `key`s are equal get the same frame for the
    same lines (it is rendered once). `limit`: bytes the connection may have buffered before the
    subscriber counts as too slow."""

    conn: Any
    render: Callable[[list[Line]], str]
    key: Hashable
    limit: int

    def buffered(self) -> int:
        transport = getattr(self.conn, "transport", None)
        return transport.get_write_buffer_size() if transport is not None else 0


class Subscriber:
    """A bounded buffer of one connection's pending lines plus the version's end, when known."""

    def __init__(
        self,
        version_id: str,
        limit: int,
        on_overflow: Callable[[Subscriber], None] | None = None,
        direct: Direct | None = None,
    ) -> None:
        self.version_id = version_id
        self.limit = limit
        self.pending: deque[Line] = deque()
        self.wakeup = asyncio.Event()
        self.overflowed = False
        self.final_status: str | None = None
        self.final_seq: int | None = None
        self.last_sent = 0  # the last seq written to the connection: where a cut-off subscriber resumes
        self.direct = direct
        self.live = False
        self._on_overflow = on_overflow

    def offer(self, line: Line) -> None:
        if self.overflowed:
            return
        if len(self.pending) >= self.limit:
            self.overflow()
            return
        self.pending.append(line)
        self.wakeup.set()

    def overflow(self) -> None:
        if self.overflowed:
            return
        self.overflowed = True
        self.pending.clear()
        self.wakeup.set()
        if self._on_overflow is not None:
            self._on_overflow(self)

    def finish(self, status: str, log_seq: int | None = None) -> None:
        """The version ended; `log_seq`, when its end event said, is the seq of its last build log line."""
        if log_seq is not None and self.final_seq is None:
            self.final_seq = log_seq
        if self.final_status is None:
            self.final_status = status
            self.wakeup.set()

    def take(self) -> list[Line]:
        lines = list(self.pending)
        self.pending.clear()
        self.wakeup.clear()
        return lines


class _Channel:
    """The live subscribers of one version and the lines waiting for the next frame."""

    __slots__ = ("live", "batch", "timer", "last_flush")

    def __init__(self) -> None:
        self.live: set[Subscriber] = set()
        self.batch: list[Line] = []
        self.timer: asyncio.Handle | None = None
        self.last_flush = 0.0


class Hub:
    """version id -> its subscribers on this instance."""

    def __init__(self, window: float = 0.01) -> None:
        self.window = window
        self.subscribers: dict[str, set[Subscriber]] = {}
        self._queued: dict[str, set[Subscriber]] = {}
        self._channels: dict[str, _Channel] = {}

    def add(self, sub: Subscriber) -> None:
        self.subscribers.setdefault(sub.version_id, set()).add(sub)
        self._queued.setdefault(sub.version_id, set()).add(sub)

    def remove(self, sub: Subscriber) -> None:
        vid = sub.version_id
        self.go_queued(sub)
        for index in (self.subscribers, self._queued):
            subs = index.get(vid)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del index[vid]

    def watched(self) -> list[str]:
        return list(self.subscribers)

    def stats(self) -> dict[str, int]:
        """How many viewers of how many versions this instance feeds, and how many are caught up."""
        return {
            "versions": len(self.subscribers),
            "subscribers": sum(map(len, self.subscribers.values())),
            "live": sum(len(c.live) for c in self._channels.values()),
        }

    def publish(self, version_id: str, data: dict[str, Any]) -> None:
        if version_id not in self.subscribers:
            return
        line = Line(data)
        for sub in list(self._queued.get(version_id, ())):
            sub.offer(line)
        channel = self._channels.get(version_id)
        if channel is not None:
            channel.batch.append(line)
            if channel.timer is None:
                loop = asyncio.get_running_loop()
                delay = channel.last_flush + self.window - time.monotonic()
                if delay > 0:
                    channel.timer = loop.call_later(delay, self._flush, version_id)
                else:
                    # After the tail has handed over the rest of this fetch.
                    channel.timer = loop.call_soon(self._flush, version_id)

    def finish(self, version_id: str, status: str, log_seq: int | None = None) -> None:
        for sub in list(self.subscribers.get(version_id, ())):
            sub.finish(status, log_seq)

    # -- live mode --------------------------------------------------------------------------------
    def go_live(self, sub: Subscriber) -> None:
        """The subscriber's feed has sent everything it had: the hub writes its next lines itself."""
        if sub.direct is None or sub.live or sub.overflowed or sub.pending:
            return
        queued = self._queued.get(sub.version_id)
        if queued is None or sub not in queued:
            return  # not (or no longer) subscribed
        queued.discard(sub)
        channel = self._channels.get(sub.version_id)
        if channel is None:
            channel = self._channels[sub.version_id] = _Channel()
        channel.live.add(sub)
        sub.live = True

    def go_queued(self, sub: Subscriber) -> None:
        """Back to the feed's own buffer, with the lines of the unsent batch it has not had yet."""
        if not sub.live:
            return
        sub.live = False
        channel = self._channels.get(sub.version_id)
        if channel is not None:
            channel.live.discard(sub)
            for line in channel.batch:
                if line.seq > sub.last_sent:
                    sub.offer(line)
            if not channel.live:
                if channel.timer is not None:
                    channel.timer.cancel()
                del self._channels[sub.version_id]
        if sub.version_id in self.subscribers and sub in self.subscribers[sub.version_id]:
            self._queued.setdefault(sub.version_id, set()).add(sub)

    def _flush(self, version_id: str) -> None:
        channel = self._channels.get(version_id)
        if channel is None:
            return
        lines, channel.batch, channel.timer = channel.batch, [], None
        channel.last_flush = time.monotonic()
        if not lines:
            return
        first, last = lines[0].seq, lines[-1].seq
        in_order = last - first + 1 == len(lines) and all(
            b.seq == a.seq + 1 for a, b in zip(lines, lines[1:], strict=False)
        )
        groups: dict[Hashable, tuple[Callable[[list[Line]], str], list[Any]]] = {}
        for sub in list(channel.live):
            direct = sub.direct
            assert direct is not None
            if not in_order or sub.last_sent + 1 != first:
                fresh = [ln for ln in lines if ln.seq > sub.last_sent]
                if not fresh:
                    continue
                # A gap, a duplicate or a partly sent batch: the feed sorts it out (history fills gaps).
                self.go_queued(sub)
                for line in fresh:
                    sub.offer(line)
                continue
            if direct.buffered() > direct.limit:
                self.go_queued(sub)
                sub.overflow()
                continue
            groups.setdefault(direct.key, (direct.render, []))[1].append(direct.conn)
            sub.last_sent = last
        for render, conns in groups.values():
            broadcast(conns, render(lines))
