"""Writes a version's log lines as LogLine events, masked, with a per-version sequence, in batches.

Output is bounded on its way in: `LineSplitter` turns a byte stream into lines holding at most
`limit` bytes each (a 300 MB line without a newline costs one pass over it and a 16 KiB buffer, not
a 300 MB one re-copied per chunk), and the writer keeps at most `max_bytes` of a version's output
(system lines, such as the failure reason, always pass), saying so in the log.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable

from .bus import EventBus
from .events import LogLine, LogLinePayload

MAX_LINE = 16 * 1024
MASK = "****"
MASK_SLACK = 1024  # bytes a splitter keeps past the line limit, so a secret across the cut is masked whole
log = logging.getLogger(__name__)
_TRUNCATED = re.compile(r"…\[(\d+) bytes truncated\]\Z")


def truncated(n: int) -> str:
    return f"…[{n} bytes truncated]"


class LineSplitter:
    """Bytes, in chunks of any size → complete lines (str), each cut after `limit` bytes with
    "…[N bytes truncated]". Memory: `limit` bytes plus the chunk; time: linear in the input."""

    def __init__(self, limit: int = MAX_LINE, split_before: bytes | None = None) -> None:
        self.limit = limit
        self.split_before = split_before  # one byte that also starts a new line (kept at its start)
        self._buf = bytearray()
        self._dropped = 0

    def feed(self, data: bytes) -> list[str]:
        lines: list[str] = []
        view = memoryview(data)
        start, n = 0, len(data)
        while start < n:
            nl = data.find(b"\n", start)
            end = n if nl < 0 else nl
            brk = -1
            if self.split_before is not None:
                # At the start of a line the byte begins this line, not a new one.
                brk = data.find(self.split_before, start if (self._buf or self._dropped) else start + 1, end)
                if brk >= 0:
                    end = brk
            take = max(0, min(self.limit - len(self._buf), end - start))
            if take:
                self._buf += view[start : start + take]
            self._dropped += end - start - take
            if brk >= 0:
                lines.append(self._line())
                start = brk
                continue
            if nl < 0:
                break
            lines.append(self._line())
            start = nl + 1
        return lines

    def close(self) -> list[str]:
        """The last line if the input did not end with a newline."""
        return [self._line()] if self._buf or self._dropped else []

    def _line(self) -> str:
        raw = bytes(self._buf)
        self._buf.clear()
        if raw.endswith(b"\r") and not self._dropped:
            raw = raw[:-1]
        text = raw.decode("utf-8", "replace")
        if self._dropped:
            text += truncated(self._dropped)
            self._dropped = 0
        return text


def cap_line(line: str, limit: int = MAX_LINE) -> str:
    """`line` cut after `limit` bytes (UTF-8) with "…[N bytes truncated]"; a count an earlier cut
    left at its end (a LineSplitter's) is added to this one."""
    earlier = 0
    if line.endswith(" bytes truncated]") and (m := _TRUNCATED.search(line)):
        earlier, line = int(m.group(1)), line[: m.start()]
    elif len(line) * 4 <= limit:  # fits whatever the characters
        return line
    raw = line.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return line + truncated(earlier) if earlier else line
    kept = raw[:limit].decode("utf-8", "ignore")
    return kept + truncated(len(raw) - limit + earlier)


def mask(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value (longest first, so overlapping secrets mask fully) with ****."""
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


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
        max_line: int = MAX_LINE,
        max_bytes: int | None = None,
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
        self.max_line = max_line
        self.max_bytes = max_bytes
        self.kept_bytes = 0  # of output (not system) lines
        self.dropped_bytes = 0
        self.dropped_lines = 0
        self._dropped_stage = "build"
        self.max_pending = 500
        self._failing = False

    def start(self) -> None:
        """Flush in the background every `flush_every` seconds, so a quiet step's last line is not held."""
        if self._task is None:
            self._task = asyncio.create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while True:
            # On one clock grid for every writer of the process: the versions' lines leave together, one
            # record batch per partition per tick instead of one per version (Tansu stores each batch as
            # an object and lists them all on every fetch: 100 versions logging made 10x the objects).
            await asyncio.sleep(self.flush_every - time.monotonic() % self.flush_every)
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - kept queued: the next flush, a full queue or close() retries
                if not self._failing:
                    log.warning("log lines of %s not published yet (%d queued): %s", self.version_id,
                                len(self._pending), exc)
                self._failing = True
            else:
                self._failing = False

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.dropped_lines:
            self._queue(self._dropped_stage, f"…[{self.dropped_lines} lines ({self.dropped_bytes} bytes) of "
                        f"output not kept: over the log limit of {self.max_bytes} bytes]", "system")
            self.dropped_lines = self.dropped_bytes = 0
        await self.flush()

    async def write(self, stage: str, text: str, stream: str = "stdout") -> None:
        """Queue one (possibly multi-line) text; flushed at least every `flush_every` seconds."""
        text = mask(text, self.secrets)
        for line in text.splitlines() or [""]:
            line = cap_line(line, self.max_line)
            if stream != "system" and self.max_bytes is not None:
                size = len(line.encode("utf-8", "surrogatepass"))
                if self.kept_bytes + size > self.max_bytes:
                    if not self.dropped_lines:
                        self._queue(stage, f"…[log limit of {self.max_bytes} bytes reached: further output "
                                    "of this version is not kept; the step goes on]", "system")
                    self.dropped_lines += 1
                    self.dropped_bytes += size
                    self._dropped_stage = stage
                    continue
                self.kept_bytes += size
            self._queue(stage, line, stream)
        # The background loop publishes; a writer waits for the broker only when this many lines are
        # queued (backpressure), so a step's output is never paced by the broker's acknowledgements.
        if len(self._pending) >= self.max_pending or (self._task is None and self._due()):
            await self.flush()

    def _due(self) -> bool:
        return time.monotonic() - self._last_flush >= self.flush_every

    def _queue(self, stage: str, text: str, stream: str) -> None:
        payload = LogLinePayload(
            version_id=self.version_id, seq=self.seq, stage=stage, stream=stream,  # type: ignore[arg-type]
            text=text, ts=time.time(),
        )
        self._pending.append(LogLine.make(self.version_id, payload, correlation_id=self.correlation_id))
        self.seq += 1

    async def flush(self) -> None:
        """Publish what is queued; if the broker refuses, the lines go back to the front of the queue
        (the next flush sends them again, and the archive keeps one line per seq)."""
        async with self._lock:
            batch, self._pending = self._pending, []
            self._last_flush = time.monotonic()
            if batch:
                try:
                    await self.bus.publish(*batch)
                except BaseException:
                    self._pending[:0] = batch
                    raise
