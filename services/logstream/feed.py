"""One subscription to one version's log: history first, then live lines, with no gap and no duplicate
at the seam, then the version's outcome after its last line.

Order of work: register the live subscription first (lines buffer), read Mongo history (seq > since),
then drain the buffer skipping seq <= last sent; a gap between the last archived and the first live
line (the archiver lags) is re-read from Mongo. When the version ends: wait until the tail has handed
over every line written before the end and the archiver has stored them, send what is left, finish."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from shared.settings import Settings
from shared.store import Store

from .archiver import ArchiveProgress
from .history import TERMINAL, read_lines
from .hub import Direct, Hub, Line, Subscriber
from .tail import Tail

log = logging.getLogger(__name__)

HISTORY_PAGE = 1000
GAP_WAIT = 60.0
CATCH_UP_WAIT = 10.0
# A send that cannot complete for this long means the client stopped reading: cut it off.
SEND_TIMEOUT = 10.0

Send = Callable[[list[Line]], Awaitable[None]]


class TooSlow(Exception):
    """The subscriber fell more than its buffer behind; it may resume after `last_sent`."""

    def __init__(self, last_sent: int) -> None:
        super().__init__(f"subscriber too slow; resume with since={last_sent}")
        self.last_sent = last_sent


@dataclass
class Context:
    """What a subscription needs from its logstream instance."""

    settings: Settings
    store: Store
    hub: Hub
    tail: Tail
    progress: ArchiveProgress

    async def settle(self) -> None:
        """Every line written before now has reached the hub, and the archive (best effort)."""
        ends = await self.tail.caught_up()
        await self.progress.wait(ends, timeout=60.0)


class Feed:
    def __init__(
        self,
        ctx: Context,
        version_id: str,
        since: int,
        send: Send,
        *,
        window: float = 0.01,
        on_overflow: Callable[[Subscriber], None] | None = None,
        direct: Direct | None = None,
    ) -> None:
        self.ctx = ctx
        self.version_id = version_id
        self.send_lines = send
        self.window = window
        self.sub = Subscriber(version_id, ctx.settings.logstream_queue_lines, on_overflow, direct)
        self.sub.last_sent = since

    @property
    def last_sent(self) -> int:
        """The last seq written to the connection, by this feed or (live) by the hub."""
        return self.sub.last_sent

    async def _send(self, lines: list[Line]) -> None:
        if lines:
            try:
                await asyncio.wait_for(self.send_lines(lines), SEND_TIMEOUT)
            except TimeoutError:
                raise TooSlow(self.last_sent) from None
            self.sub.last_sent = lines[-1].seq

    async def _history(self, until: int | None = None) -> None:
        while True:
            docs = await asyncio.to_thread(
                read_lines, self.ctx.store, self.version_id, self.last_sent, HISTORY_PAGE, until
            )
            if not docs:
                return
            await self._send([Line(d) for d in docs])
            if len(docs) < HISTORY_PAGE:
                return

    async def _fill_gap(self, first_live: int) -> None:
        """Lines last_sent+1 .. first_live-1 are older than the live ones: the archive has (or soon has) them.
        Give up on a missing seq only once the archiver has stored everything written so far."""
        ends = await self.ctx.tail.end_offsets()
        deadline = time.monotonic() + GAP_WAIT
        while True:
            await self._history(until=first_live - 1)
            if self.last_sent >= first_live - 1:
                return
            archived = await self.ctx.progress.wait(ends, timeout=0)
            if archived:
                await self._history(until=first_live - 1)
            if archived or time.monotonic() > deadline:
                if self.last_sent < first_live - 1:
                    log.warning(
                        "version %s: lines %d..%d are not in the log; continuing",
                        self.version_id,
                        self.last_sent + 1,
                        first_live - 1,
                    )
                return
            await asyncio.sleep(0.05)

    async def _deliver(self, lines: list[Line]) -> None:
        fresh = sorted((ln for ln in lines if ln.seq > self.last_sent), key=lambda ln: ln.seq)
        if fresh and fresh[0].seq > self.last_sent + 1:
            await self._fill_gap(fresh[0].seq)
        out: list[Line] = []
        last = self.last_sent
        for ln in fresh:
            if ln.seq > last:
                out.append(ln)
                last = ln.seq
        await self._send(out)

    def _check(self) -> None:
        if self.sub.overflowed:
            raise TooSlow(self.last_sent)

    async def run(self, status: str | None = None) -> str:
        """Stream the log through `send`; returns the outcome. Raises TooSlow when the buffer overflowed."""
        hub = self.ctx.hub
        hub.add(self.sub)
        try:
            await self._history()
            # Lines written before we subscribed but not archived yet would otherwise wait for the next
            # live line (or the end) to reveal the gap: wait for the archiver to pass them, read again.
            if await self.ctx.progress.wait(await self.ctx.tail.end_offsets(), timeout=CATCH_UP_WAIT):
                await self._history()
            if status in TERMINAL:
                self.sub.finish(status)  # type: ignore[arg-type]
            last_send = 0.0
            while True:
                self._check()
                if self.sub.final_status is not None:
                    break
                if not self.sub.pending:
                    # Caught up: the hub writes the next lines itself (when it can), until a gap, the
                    # version's end (tail or status poll) or an overflow wakes this feed again.
                    hub.go_live(self.sub)
                    await self.sub.wakeup.wait()
                    hub.go_queued(self.sub)
                    self._check()
                    if self.sub.final_status is not None:
                        break
                # Batch window: at most one frame per `window`, so a fast build's lines share frames.
                pause = self.window - (time.monotonic() - last_send)
                if pause > 0:
                    await asyncio.sleep(pause)
                    self._check()
                await self._deliver(self.sub.take())
                last_send = time.monotonic()
            await self.ctx.settle()
            self._check()
            await self._deliver(self.sub.take())
            await self._history()
            self._check()
            return self.sub.final_status
        finally:
            hub.remove(self.sub)
