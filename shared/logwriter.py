"""Writes a version's log lines as LogLine events, masked, with a per-version sequence, in batches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from .bus import EventBus
from .events import LogLine, LogLinePayload

MAX_LINE = 64 * 1024
MASK = "****"


def mask(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value (longest first, so overlapping secrets mask fully) with ****."""
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def split_long(text: str, limit: int = MAX_LINE) -> list[str]:
    """A line over `limit` characters becomes several lines; none is dropped."""
    return [text[i : i + limit] for i in range(0, len(text), limit)] or [""]


class LogWriter:
    """One per running version; `start_seq` lets a resumed build continue after earlier lines."""

    def __init__(
        self,
        bus: EventBus,
        version_id: str,
        *,
        secrets: Iterable[str] = (),
        start_seq: int = 1,
        flush_every: float = 0.01,
        correlation_id: str | None = None,
    ) -> None:
        self.bus = bus
        self.version_id = version_id
        self.secrets = [s for s in secrets if s]
        self.seq = start_seq
        self.flush_every = flush_every
        self.correlation_id = correlation_id or version_id
        self._pending: list[LogLine] = []
        self._lock = asyncio.Lock()
        self._last_flush = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Flush in the background every `flush_every` seconds, so a quiet step's last line is not held."""
        if self._task is None:
            self._task = asyncio.create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_every)
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - the next write or close() reports it
                pass

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self.flush()

    def add_secret(self, value: str | None) -> None:
        if value:
            self.secrets.append(value)

    async def write(self, stage: str, text: str, stream: str = "stdout") -> None:
        """Queue one (possibly multi-line) text; flushed at least every `flush_every` seconds."""
        text = mask(text, self.secrets)
        for line in text.splitlines() or [""]:
            for part in split_long(line):
                payload = LogLinePayload(
                    version_id=self.version_id, seq=self.seq, stage=stage, stream=stream,  # type: ignore[arg-type]
                    text=part, ts=time.time(),
                )
                self._pending.append(
                    LogLine.make(self.version_id, payload, correlation_id=self.correlation_id)
                )
                self.seq += 1
        if time.monotonic() - self._last_flush >= self.flush_every or len(self._pending) >= 500:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            batch, self._pending = self._pending, []
            self._last_flush = time.monotonic()
            if batch:
                await self.bus.publish(*batch)
