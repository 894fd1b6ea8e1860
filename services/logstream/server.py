"""The logstream process: WebSocket endpoints for live build logs, the Kafka tail that feeds them, the log
archiver and a status poll.

Why the `websockets` asyncio server rather than Starlette + uvicorn: this process serves nothing but
WebSockets, and `websockets` gives per-connection control of what matters here — write limits and
close timeouts (a stalled reader must cost a bounded buffer, then be cut off), custom close codes with
reasons (4403/4404/4008), and a small per-connection footprint (1,000 watchers in well under 300 MB) —
without an ASGI layer in between. Plain HTTP (GET /healthz; GET /status: how many viewers of how many
versions, how many of them live) is answered in `process_request`.

    ws://host:port/ws/versions/{version_id}/logs?since=<seq>   the new endpoint (endpoint.py)
    ws://host:port/ws                                          the original protocol (original.py)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import signal
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from shared.auth import bearer
from shared.logs_read import ArchiveProgress, statuses
from shared.settings import Settings, get_settings
from shared.status import VERSION_TERMINAL_STATUSES
from shared.store import Store

from . import endpoint, original
from .archiver import Archiver
from .feed import Context
from .hub import Hub
from .tail import Tail

log = logging.getLogger("fornax.logstream")

VERSION_LOGS = re.compile(r"/ws/versions/([A-Za-z0-9_.:-]{1,128})/logs")
POLL_EVERY = 1.0


def _token(conn: ServerConnection, query: dict[str, list[str]]) -> str | None:
    header = conn.request.headers.get("Authorization") if conn.request else None
    return bearer(header) or query.get("token", [None])[0]


def _route(hub: Hub, conn: ServerConnection, request: Request) -> Response | None:
    path = urlsplit(request.path).path
    if path == "/healthz":
        return conn.respond(HTTPStatus.OK, "ok\n")
    if path == "/status":
        response = conn.respond(HTTPStatus.OK, json.dumps(hub.stats()) + "\n")
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response
    if path == "/ws" or VERSION_LOGS.fullmatch(path):
        return None
    return conn.respond(HTTPStatus.NOT_FOUND, f"no WebSocket endpoint at {path}\n")


async def poll_statuses(ctx: Context) -> None:
    """Fallback for a missed terminal event: the projected status of every watched version, each second."""
    while True:
        await asyncio.sleep(POLL_EVERY)
        try:
            found = await asyncio.to_thread(statuses, ctx.store, ctx.hub.watched())
        except Exception:  # Mongo blip: try again next round
            log.warning("status poll failed", exc_info=True)
            continue
        for version_id, status in found.items():
            if status in VERSION_TERMINAL_STATUSES:
                ctx.hub.finish(version_id, status)


async def serve_logs(settings: Settings, stop: asyncio.Event) -> None:
    """Run until `stop` is set."""
    store = Store(settings)
    await asyncio.to_thread(store.ensure_indexes)
    hub = Hub()
    tail = Tail(settings, hub)
    await tail.start()
    archiver = Archiver(settings, store)
    await archiver.start()
    progress = ArchiveProgress(settings)
    await progress.start()
    ctx = Context(settings, store, hub, tail, progress)
    poller = asyncio.create_task(poll_statuses(ctx))

    async def handler(conn: ServerConnection) -> None:
        assert conn.request is not None
        url = urlsplit(conn.request.path)
        query = parse_qs(url.query)
        token = _token(conn, query)
        match = VERSION_LOGS.fullmatch(url.path)
        if match:
            await endpoint.version_logs(ctx, conn, match.group(1), query, token)
        else:
            await original.session(ctx, conn, token)

    try:
        async with serve(
            handler,
            settings.logstream_host,
            settings.logstream_port,
            process_request=functools.partial(_route, hub),
            close_timeout=2,
            max_size=64 * 1024,
            write_limit=64 * 1024,
            # Per-message deflate costs a zlib stream per connection and CPU per frame per subscriber;
            # for the fan-out of small lines that CPU is better spent on latency.
            compression=None,
        ) as server:
            log.info("logstream on ws://%s:%d", settings.logstream_host, settings.logstream_port)
            await stop.wait()
            server.close()
    finally:
        poller.cancel()
        for part in (archiver, tail):
            with contextlib.suppress(Exception):
                await part.stop()
        with contextlib.suppress(Exception):
            await progress.close()
        store.close()


async def amain(settings: Settings | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve_logs(settings or get_settings(), stop)


def main(argv: Any = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(amain())
