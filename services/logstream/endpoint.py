"""ws://host:port/ws/versions/{version_id}/logs?since=<seq>: frames {seq, stage, stream, text, ts} (a JSON
array of them when several lines are ready within the batch window), then {"final": true, "status",
"version_id"} after the version's last line, then close 1000.

Close codes: 4400 bad query, 4401 missing/invalid token, 4403 someone else's version, 4404 unknown
version, 4008 the subscriber fell too far behind (reason says `since=<seq>` to resume from), 1011 a
server-side failure."""

from __future__ import annotations

import asyncio
import json
import logging

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from shared.auth import user_for_token

from .feed import Context, Feed, TooSlow
from .history import version_info
from .hub import Line, Subscriber

log = logging.getLogger(__name__)

TOO_SLOW = 4008


def frame(lines: list[Line]) -> str:
    if len(lines) == 1:
        return lines[0].text_json
    return "[" + ",".join(ln.text_json for ln in lines) + "]"


async def authorize(ctx: Context, version_id: str, token: str | None) -> tuple[int, str, dict | None]:
    """(0, "", version) when `token` belongs to the version's owner, else (close code, reason, None)."""
    user = await asyncio.to_thread(user_for_token, ctx.store, token) if token else None
    if user is None:
        return 4401, "missing or invalid token", None
    info = await asyncio.to_thread(version_info, ctx.store, version_id)
    if info is None:
        return 4404, f"version {version_id} not found", None
    if info.get("user_id") != user:
        return 4403, f"version {version_id} belongs to another user", None
    return 0, "", info


def close_later(conn: ServerConnection, code: int, reason: str) -> None:
    asyncio.get_running_loop().create_task(conn.close(code, reason[:120]))


async def version_logs(
    ctx: Context, conn: ServerConnection, version_id: str, query: dict[str, list[str]], token: str | None
) -> None:
    try:
        since = int(query.get("since", ["0"])[0] or 0)
        if since < 0:
            raise ValueError
    except ValueError:
        await conn.close(4400, "since must be a non-negative integer")
        return
    code, reason, info = await authorize(ctx, version_id, token)
    if code or info is None:
        await conn.close(code, reason)
        return

    async def send(lines: list[Line]) -> None:
        await conn.send(frame(lines))

    def overflow(sub: Subscriber) -> None:
        close_later(conn, TOO_SLOW, f"too slow: resume with since={sub.last_sent}")

    feed = Feed(ctx, version_id, since, send, on_overflow=overflow)
    try:
        status = await feed.run(info.get("status"))
        await conn.send(json.dumps({"final": True, "status": status, "version_id": version_id}))
        await conn.close(1000, "version ended")
    except TooSlow as exc:
        await conn.close(TOO_SLOW, f"too slow: resume with since={exc.last_sent}")
    except ConnectionClosed:
        return
    except Exception:
        log.exception("log stream of %s failed", version_id)
        await conn.close(1011, "internal error")
