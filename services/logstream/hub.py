"""In-process fan-out: the Kafka tail hands each line to the subscribers of its version without ever
waiting for them. Each subscriber has a bounded buffer; one that falls past the bound is marked
overflowed (its connection is then closed with a reason and it resumes with `since`)."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable
from typing import Any


class Line:
    """One log line, JSON-encoded once for every subscriber."""

    __slots__ = ("seq", "data", "text_json")

    def __init__(self, data: dict[str, Any]) -> None:
        self.seq: int = int(data["seq"])
        self.data = data
        self.text_json = json.dumps(data, separators=(",", ":"))


class Subscriber:
    """A bounded buffer of one connection's pending lines plus the version's end, when known."""

    def __init__(
        self, version_id: str, limit: int, on_overflow: Callable[[Subscriber], None] | None = None
    ) -> None:
        self.version_id = version_id
        self.limit = limit
        self.pending: deque[Line] = deque()
        self.wakeup = asyncio.Event()
        self.overflowed = False
        self.final_status: str | None = None
        self.last_sent = 0  # kept by the feed: where a closed slow subscriber resumes
        self._on_overflow = on_overflow

    def offer(self, line: Line) -> None:
        if self.overflowed:
            return
        if len(self.pending) >= self.limit:
            self.overflowed = True
            self.pending.clear()
            self.wakeup.set()
            if self._on_overflow is not None:
                self._on_overflow(self)
            return
        self.pending.append(line)
        self.wakeup.set()

    def finish(self, status: str) -> None:
        if self.final_status is None:
            self.final_status = status
            self.wakeup.set()

    def take(self) -> list[Line]:
        lines = list(self.pending)
        self.pending.clear()
        self.wakeup.clear()
        return lines


class Hub:
    """version id -> its subscribers on this instance."""

    def __init__(self) -> None:
        self.subscribers: dict[str, set[Subscriber]] = {}

    def add(self, sub: Subscriber) -> None:
        self.subscribers.setdefault(sub.version_id, set()).add(sub)

    def remove(self, sub: Subscriber) -> None:
        subs = self.subscribers.get(sub.version_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.subscribers[sub.version_id]

    def watched(self) -> list[str]:
        return list(self.subscribers)

    def publish(self, version_id: str, data: dict[str, Any]) -> None:
        subs = self.subscribers.get(version_id)
        if subs:
            line = Line(data)
            for sub in list(subs):
                sub.offer(line)

    def finish(self, version_id: str, status: str) -> None:
        for sub in list(self.subscribers.get(version_id, ())):
            sub.finish(status)
