"""ws://host:port/ws/versions/{version_id}/logs?since=<seq>: frames {seq, stage, stream, text, ts} (a JSON
array of them when several lines are ready within the batch window), then {"final": true, "status",
"version_id"} after the version's last line, then close 1000.

With `follow=false` the subscription does not wait for live lines: a version still running gets the
archived lines after `since`, then {"end": "archive", "status", "version_id", "seq": <last seq sent>} and
close 1000; an ended version is answered as without it (its whole log, then the final frame).

A version the read model does not show yet (requested a moment ago, not projected) is waited for, up to
settings.logstream_version_wait seconds, before 4404.

Close codes: 4400 bad query, 4401 missing/invalid token, 4403 someone else's version, 4404 unknown
version, 4008 the subscriber fell too far behind (reason says `since=<seq>` to resume from), 1011 a
server-side failure."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from shared.auth import hash_token, user_for_token
from shared.logs_read import read_lines, version_info
from shared.query import MAX_POSITION, parse_int
from shared.status import VERSION_TERMINAL_STATUSES

from .feed import Context, Feed, TooSlow
from .hub import Direct, Line, Subscriber

log = logging.getLogger(__name__)

TOO_SLOW = 4008


def frame(lines: list[Line]) -> str:
    if len(lines) == 1:
        return lines[0].text_json
    return "[" + ",".join(ln.text_json for ln in lines) + "]"


class _Lookups:
    """Short-lived, shared answers to the two lookups every subscription makes: when 1,000 viewers connect
    at once, one Mongo call per token and per version, not one per viewer. Only found values are cached
    (a revoked token keeps working for at most TOKEN_TTL seconds on an instance that just saw it)."""

    TOKEN_TTL = 10.0
    VERSION_TTL = 1.0

    def __init__(self) -> None:
        self._done: dict[tuple[str, str], tuple[float, Any]] = {}
        self._running: dict[tuple[str, str], asyncio.Task[Any]] = {}

    async def get(self, kind: str, key: str, ttl: float, fn: Any, *args: Any) -> Any:
        now = time.monotonic()
        hit = self._done.get((kind, key))
        if hit is not None and hit[0] > now:
            return hit[1]
        task = self._running.get((kind, key))
        if task is None:
            task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
            self._running[(kind, key)] = task
            try:
                value = await asyncio.shield(task)  # a viewer leaving must not cancel the others' lookup
            finally:
                self._running.pop((kind, key), None)
            if value is not None:
                if len(self._done) > 10000:
                    self._done.clear()
                self._done[(kind, key)] = (time.monotonic() + ttl, value)
            return value
        return await asyncio.shield(task)


LOOKUPS = _Lookups()

ARCHIVE_PAGE = 1000
FIRST_PAUSE, MAX_PAUSE = 0.005, 0.05


async def _version(ctx: Context, version_id: str) -> dict | None:
    """The version's {user_id, service_id, status}; a version not projected yet is looked up again with
    growing pauses (5, 10, 20, 40, then 50 ms) for at most settings.logstream_version_wait seconds."""
    deadline = time.monotonic() + float(ctx.settings.logstream_version_wait)
    pause = FIRST_PAUSE
    while True:
        info = await LOOKUPS.get("version", version_id, LOOKUPS.VERSION_TTL, version_info, ctx.store, version_id)
        remaining = deadline - time.monotonic()
        if info is not None or remaining <= 0:
            return info
        await asyncio.sleep(min(pause, remaining))
        pause = min(pause * 2, MAX_PAUSE)


async def authorize(ctx: Context, version_id: str, token: str | None) -> tuple[int, str, dict | None]:
    """(0, "", version) when `token` belongs to the version's owner, else (close code, reason, None)."""
    user = None
    if token:
        user = await LOOKUPS.get(
            "token", hash_token(token), LOOKUPS.TOKEN_TTL, user_for_token, ctx.store, token
        )
    if user is None:
        return 4401, "missing or invalid token", None
    info = await _version(ctx, version_id)
    if info is None:
        return 4404, f"version {version_id} not found", None
    if info.get("user_id") != user:
        return 4403, f"version {version_id} belongs to another user", None
    return 0, "", info


async def archived_only(
    ctx: Context, conn: ServerConnection, version_id: str, since: int, info: dict[str, Any]
) -> None:
    """`follow=false` on a running version: what the archive holds after `since`, then the end frame."""
    last = since
    try:
        while True:
            docs = await asyncio.to_thread(read_lines, ctx.store, version_id, last, ARCHIVE_PAGE)
            if not docs:
                break
            await conn.send(frame([Line(d) for d in docs]))
            last = docs[-1]["seq"]
        end = {"end": "archive", "status": info.get("status"), "version_id": version_id, "seq": last}
        await conn.send(json.dumps(end))
        await conn.close(1000, "archive sent")
    except ConnectionClosed:
        return


def close_later(conn: ServerConnection, code: int, reason: str) -> None:
    asyncio.get_running_loop().create_task(conn.close(code, reason[:120]))


async def version_logs(
    ctx: Context, conn: ServerConnection, version_id: str, query: dict[str, list[str]], token: str | None
) -> None:
    try:
        since = parse_int(query.get("since", ["0"])[0] or "0", 0, MAX_POSITION)
    except ValueError as exc:
        await conn.close(4400, f"since {exc}")
        return
    follow_arg = (query.get("follow", ["true"])[0] or "true").lower()
    if follow_arg not in ("1", "true", "yes", "0", "false", "no"):
        await conn.close(4400, "follow must be true or false")
        return
    follow = follow_arg in ("1", "true", "yes")
    code, reason, info = await authorize(ctx, version_id, token)
    if code or info is None:
        await conn.close(code, reason)
        return
    if not follow:
        # (the status as it is now, not the short-lived cached one: an ended version gets its final frame)
        info = await asyncio.to_thread(version_info, ctx.store, version_id) or info
        if info.get("status") not in VERSION_TERMINAL_STATUSES:
            await archived_only(ctx, conn, version_id, since, info)
            return

    async def send(lines: list[Line]) -> None:
        await conn.send(frame(lines))

    def overflow(sub: Subscriber) -> None:
        close_later(conn, TOO_SLOW, f"too slow: resume with since={sub.last_sent}")

    direct = Direct(conn, frame, "lines", ctx.settings.logstream_buffer_bytes)
    feed = Feed(ctx, version_id, since, send, on_overflow=overflow, direct=direct)
    running = asyncio.ensure_future(feed.run(info.get("status")))
    # A caught-up viewer's feed only wakes for a gap, an overflow or the end (the hub writes its lines),
    # so a viewer who leaves must stop it from here.
    left = asyncio.ensure_future(conn.wait_closed())
    try:
        await asyncio.wait({running, left}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            return
        status = running.result()
        await conn.send(json.dumps({"final": True, "status": status, "version_id": version_id}))
        await conn.close(1000, "version ended")
    except TooSlow as exc:
        await conn.close(TOO_SLOW, f"too slow: resume with since={exc.last_sent}")
    except ConnectionClosed:
        return
    except Exception:
        log.exception("log stream of %s failed", version_id)
        await conn.close(1011, "internal error")
    finally:
        left.cancel()
