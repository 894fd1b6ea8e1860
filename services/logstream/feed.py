"""One subscription to one version's log: history first, then live lines, with no gap and no duplicate
at the seam, then the version's outcome after its last line.

Order of work: register the live subscription first (lines buffer), read Mongo history (seq > since),
then drain the buffer skipping seq <= last sent; a gap between the last archived and the first live
line (the archiver lags) is re-read from Mongo. When the version ends: send what the tail has handed
over, then what it still had to read of the lines written before the end, then — once the archiver has
stored them all — anything neither brought; then finish. Lines never wait for the archive unless a
gap has to be filled from it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from shared.logs_read import ArchiveProgress, Stall, read_lines
from shared.settings import Settings
from shared.status import VERSION_TERMINAL_STATUSES
from shared.store import ReadModelStore

from .hub import Direct, Hub, Line, Subscriber
from .tail import Tail

log = logging.getLogger(__name__)

HISTORY_PAGE = 1000
# How long a missing line is waited for: while the archiver stands still at most GAP_STALL seconds (a
# broker or Mongo restart pauses it), and GAP_BOUND in all.
GAP_STALL = 60.0
GAP_BOUND = 300.0
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
    store: ReadModelStore
    hub: Hub
    tail: Tail
    progress: ArchiveProgress


class SharedReads:
    """History reads of the same lines share one Mongo query — when a build's 1,000 viewers join at
    once, or all catch up at the end — but only a query that began after the caller asked: one begun
    earlier might miss lines archived in between."""

    def __init__(self, reader: Callable[..., list[dict[str, Any]]] = read_lines) -> None:
        self._reader = reader
        self._running: dict[tuple[Any, ...], tuple[float, asyncio.Future[list[dict[str, Any]]]]] = {}

    async def read(
        self, store: ReadModelStore, version_id: str, since: int, limit: int, until: int | None
    ) -> list[dict[str, Any]]:
        asked = time.monotonic()
        key = (id(store), version_id, since, limit, until)
        while True:
            entry = self._running.get(key)
            if entry is None:
                future: asyncio.Future[list[dict[str, Any]]] = asyncio.ensure_future(
                    asyncio.to_thread(self._reader, store, version_id, since, limit, until)
                )
                self._running[key] = (time.monotonic(), future)
                future.add_done_callback(lambda done: self._forget(key, done))
                return await asyncio.shield(future)  # a viewer leaving must not cancel the others' read
            started, future = entry
            if started >= asked:
                return await asyncio.shield(future)
            await asyncio.wait([future])  # begun before we asked: wait for it, then join the next one

    def _forget(self, key: tuple[Any, ...], done: asyncio.Future[list[dict[str, Any]]]) -> None:
        entry = self._running.get(key)
        if entry is not None and entry[1] is done:
            del self._running[key]


SHARED_READS = SharedReads()


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
            docs = await SHARED_READS.read(self.ctx.store, self.version_id, self.last_sent, HISTORY_PAGE, until)
            if not docs:
                return
            await self._send([Line(d) for d in docs])
            if len(docs) < HISTORY_PAGE:
                return

    async def _fill_gap(self, first_live: int) -> None:
        """Lines last_sent+1 .. first_live-1 are older than the live ones: the archive has (or soon has) them.
        Give up on a missing seq only once the archiver has stored everything written so far, or has
        stood still for GAP_STALL seconds (GAP_BOUND in all)."""
        ends = await self.ctx.tail.end_offsets()
        began = time.monotonic()
        progress = Stall(GAP_STALL)
        while True:
            await self._history(until=first_live - 1)
            if self.last_sent >= first_live - 1:
                return
            # (The broker's end offsets only hint: Tansu reports some below what it holds, so "archived up
            # to them" is no proof that the missing line is not on its way.)
            if await self.ctx.progress.wait(ends, timeout=0):
                await self._history(until=first_live - 1)
                if self.last_sent >= first_live - 1:
                    return
            now = time.monotonic()
            if progress.stalled(await self.ctx.progress.level(list(ends)), now) or now - began > GAP_BOUND:
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

    async def _archived_now(self) -> bool:
        """True once the archive holds every line written before this call (False after CATCH_UP_WAIT)."""
        return await self.ctx.progress.wait(await self.ctx.tail.end_offsets(), timeout=CATCH_UP_WAIT)

    async def _rest_of_the_log(self, ends: dict[Any, int]) -> None:
        """When the end event said which seq is the last, wait until the archive has every line up to it
        (while the archiver advances; GAP_STALL / GAP_BOUND), then send them."""
        final = self.sub.final_seq
        if final is None or self.last_sent >= final:
            return
        began = time.monotonic()
        progress = Stall(GAP_STALL)
        while self.last_sent < final:
            await asyncio.sleep(0.1)
            await self._history()
            now = time.monotonic()
            if progress.stalled(await self.ctx.progress.level(list(ends)), now) or now - began > GAP_BOUND:
                log.warning("version %s: lines %d..%d are not in the log; ending", self.version_id,
                            self.last_sent + 1, final)
                return

    def _check(self) -> None:
        if self.sub.overflowed:
            raise TooSlow(self.last_sent)

    async def run(self, status: str | None = None) -> str:
        """Stream the log through `send`; returns the outcome. Raises TooSlow when the buffer overflowed."""
        hub = self.ctx.hub
        hub.add(self.sub)
        catch_up: asyncio.Task[bool] | None = None
        try:
            await self._history()
            if status in VERSION_TERMINAL_STATUSES:
                self.sub.finish(status)  # type: ignore[arg-type]
            # Lines written before we subscribed but not archived yet come as a gap before the first live
            # line, or at the end; for an idle version, read the archive again once it has them all.
            catch_up = asyncio.ensure_future(self._archived_now())
            catch_up.add_done_callback(lambda _: self.sub.wakeup.set())
            joined_at = self.last_sent
            last_send = 0.0
            while True:
                self._check()
                if self.sub.final_status is not None:
                    break
                if catch_up is not None and catch_up.done():
                    caught_up, catch_up = catch_up, None
                    # Once a line came after the history, the gap check before it covered the rest.
                    if self.last_sent == joined_at and not caught_up.cancelled() and caught_up.exception() is None:
                        if caught_up.result():
                            await self._history()
                    continue
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
            # The end: what the tail has handed over goes out now; then whatever it still had to read
            # (the end can overtake the last lines: other topic, other partition); then, once the
            # archive holds everything written before the end, anything neither of them brought.
            await self._deliver(self.sub.take())
            ends = await self.ctx.tail.caught_up()
            self._check()
            await self._deliver(self.sub.take())
            await self.ctx.progress.wait_advancing(ends, stall=GAP_STALL, bound=GAP_BOUND)
            await self._history()
            await self._rest_of_the_log(ends)
            self._check()
            return self.sub.final_status
        finally:
            if catch_up is not None:
                catch_up.cancel()
            hub.remove(self.sub)
