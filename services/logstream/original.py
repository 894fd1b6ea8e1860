"""The original protocol on ws://host:port/ws (DESIGN §5), kept frame for frame:

client  {"action":"watch_log","api":"create_version","user_id","service_id","version_id",
         "operation":"start"|"stop","id", "token"?, "since"?}
        {"action":"heart_beat","id"}
server  {"action":"response","response":<action>,"id_ack":<id>,"error_code":0|n,"error_msg":""}
        {"action":"push_log","api","user_id","service_id","version_id","log":<lines joined by \\n>,
         "id":"<version_id>:<last seq>","seq":<last seq>}
        after the version's last line: a push_log with "log":"", "final":true, "status":<outcome>

Error codes (non-zero means refused; the session stays usable): 1001 invalid JSON, 1002 missing
action, 1003 unknown action, 1004 bad or missing field, 1401 missing/invalid token, 1403 someone
else's version, 1404 unknown version. A session without any client frame for settings.idle_timeout
seconds is closed (1000, "idle timeout"); a watcher too slow for its buffer is closed with 4008.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from shared.query import MAX_POSITION, parse_int

from .endpoint import TOO_SLOW, authorize, close_later
from .feed import Context, Feed, TooSlow
from .hub import Direct, Line, Subscriber

log = logging.getLogger(__name__)

INVALID_JSON, MISSING_ACTION, UNKNOWN_ACTION, BAD_FIELD = 1001, 1002, 1003, 1004
AUTH_CODES = {4401: 1401, 4403: 1403, 4404: 1404}


def response(action: str, id_ack: Any, code: int = 0, msg: str = "") -> str:
    return json.dumps(
        {"action": "response", "response": action, "id_ack": id_ack, "error_code": code, "error_msg": msg}
    )


class Session:
    def __init__(self, ctx: Context, conn: ServerConnection, token: str | None) -> None:
        self.ctx = ctx
        self.conn = conn
        self.token = token
        self.watches: dict[str, asyncio.Task[None]] = {}

    async def reply(self, action: str, id_ack: Any, code: int = 0, msg: str = "") -> None:
        await self.conn.send(response(action, id_ack, code, msg))

    async def run(self) -> None:
        idle = self.ctx.settings.idle_timeout
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(self.conn.recv(), idle)
                except TimeoutError:
                    await self.conn.close(1000, "idle timeout")
                    return
                await self.handle(raw)
        except ConnectionClosed:
            return
        finally:
            for task in self.watches.values():
                task.cancel()
            await asyncio.gather(*self.watches.values(), return_exceptions=True)

    async def handle(self, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            await self.reply("", None, INVALID_JSON, "invalid JSON")
            return
        if not isinstance(msg, dict):
            await self.reply("", None, INVALID_JSON, "a frame must be a JSON object")
            return
        action, id_ack = msg.get("action"), msg.get("id")
        if not action:
            await self.reply("", id_ack, MISSING_ACTION, "missing action")
        elif action == "heart_beat":
            await self.reply("heart_beat", id_ack)
        elif action == "watch_log":
            await self.watch_log(msg, id_ack)
        else:
            await self.reply(str(action), id_ack, UNKNOWN_ACTION, f"unknown action {action!r}")

    async def watch_log(self, msg: dict[str, Any], id_ack: Any) -> None:
        version_id, operation = msg.get("version_id"), msg.get("operation")
        if not isinstance(version_id, str) or not version_id:
            await self.reply("watch_log", id_ack, BAD_FIELD, "version_id is required")
            return
        if operation not in ("start", "stop"):
            await self.reply("watch_log", id_ack, BAD_FIELD, "operation must be start or stop")
            return
        token = msg.get("token") if isinstance(msg.get("token"), str) else self.token
        code, reason, info = await authorize(self.ctx, version_id, token)
        if code or info is None:
            await self.reply("watch_log", id_ack, AUTH_CODES.get(code, 1403), reason)
            return
        if msg.get("user_id") and msg["user_id"] != info.get("user_id"):
            await self.reply("watch_log", id_ack, 1403, "user_id does not match the token's user")
            return
        if operation == "stop":
            task = self.watches.pop(version_id, None)
            if task is not None:
                task.cancel()
            await self.reply("watch_log", id_ack)
            return
        raw = msg.get("since") or 0
        try:
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise ValueError("must be an integer")
            since = parse_int(str(raw), 0, MAX_POSITION)
        except ValueError as exc:
            await self.reply("watch_log", id_ack, BAD_FIELD, f"since {exc}")
            return
        await self.reply("watch_log", id_ack)
        if version_id not in self.watches or self.watches[version_id].done():
            head = {
                "action": "push_log",
                "api": msg.get("api") or "create_version",
                "user_id": info.get("user_id"),
                "service_id": info.get("service_id"),
                "version_id": version_id,
            }
            self.watches[version_id] = asyncio.create_task(self.watch(version_id, since, info, head))

    async def watch(self, version_id: str, since: int, info: dict[str, Any], head: dict[str, Any]) -> None:
        def render(lines: list[Line]) -> str:
            last = lines[-1].seq
            return json.dumps(
                {
                    **head,
                    "log": "\n".join(ln.data["text"] for ln in lines),
                    "id": f"{version_id}:{last}",
                    "seq": last,
                }
            )

        async def send(lines: list[Line]) -> None:
            await self.conn.send(render(lines))

        def overflow(sub: Subscriber) -> None:
            close_later(
                self.conn, TOO_SLOW, f"too slow watching {version_id}: resume with since={sub.last_sent}"
            )

        try:
            # Watchers with the same head get the same push_log frame: the hub renders it once.
            direct = Direct(
                self.conn, render, json.dumps(head, sort_keys=True), self.ctx.settings.logstream_buffer_bytes
            )
            feed = Feed(self.ctx, version_id, since, send, on_overflow=overflow, direct=direct)
            status = await feed.run(info.get("status"))
            await self.conn.send(
                json.dumps({**head, "log": "", "id": f"{version_id}:final", "final": True, "status": status})
            )
        except TooSlow as exc:
            with contextlib.suppress(ConnectionClosed):
                await self.conn.close(TOO_SLOW, f"too slow: resume with since={exc.last_sent}")
        except (ConnectionClosed, asyncio.CancelledError):
            return
        except Exception:
            log.exception("original-protocol watch of %s failed", version_id)
        finally:
            if self.watches.get(version_id) is asyncio.current_task():
                self.watches.pop(version_id, None)


async def session(ctx: Context, conn: ServerConnection, token: str | None) -> None:
    await Session(ctx, conn, token).run()
