"""A version's log over REST: `GET /api/v1/{user_id}/versions/{version_id}/logs`.

    ?since=<seq>&limit=<n>   one page: {"lines": [{seq, stage, stream, text, ts}], "next_since", "total",
                             "has_more", "status"}; default limit 1000, at most 10000
    ?follow=true             NDJSON (one JSON object per line) from `since` until the version ends, then
                             {"final": true, "status", "version_id"} as the last line (follow: true/false,
                             1/0, yes/no, on/off; anything else is a 422, as are bad since/limit, all
                             checked before the stream starts)

Lines come from the Mongo `logs` archive (written by the logstream's archiver). Before the final line,
the stream waits until the archiver has stored everything written to fornax.logs, so no line is missing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from shared.logs_read import count_lines, read_lines, settle_archive, version_info
from shared.query import MAX_POSITION, parse_int
from shared.settings import Settings
from shared.status import VERSION_TERMINAL_STATUSES
from shared.store import ReadModelStore

from ..auth import authorize
from ..errors import ApiError
from ..io import db_call, store_of
from ..ownership import owned_version

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000
FOLLOW_POLL = 0.25


def _int_param(request: Request, name: str, default: int, low: int, high: int = MAX_POSITION) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse_int(raw, low, high)
    except ValueError as exc:
        raise ApiError(422, "validation_error", f"{name} {exc}", field=name) from None


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def _bool_param(request: Request, name: str) -> bool:
    raw = (request.query_params.get(name) or "").lower()
    if raw in TRUE_WORDS:
        return True
    if raw == "" or raw in FALSE_WORDS:
        return False
    raise ApiError(422, "validation_error", f"{name} must be true or false", field=name)


def _ndjson(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


async def follow_lines(store: ReadModelStore, settings: Settings, version_id: str, since: int) -> AsyncIterator[bytes]:
    """Every line after `since` as NDJSON until the version ends, then the final status object."""
    last = since
    while True:
        page = await db_call(read_lines, store, version_id, last, MAX_LIMIT)
        for line in page:
            yield _ndjson(line)
        if page:
            last = page[-1]["seq"]
            continue
        info = await db_call(version_info, store, version_id)
        status = (info or {}).get("status")
        if status in VERSION_TERMINAL_STATUSES:
            await settle_archive(settings)
            while True:
                rest = await db_call(read_lines, store, version_id, last, MAX_LIMIT)
                if not rest:
                    break
                for line in rest:
                    yield _ndjson(line)
                last = rest[-1]["seq"]
            yield _ndjson({"final": True, "status": status, "version_id": version_id})
            return
        await asyncio.sleep(FOLLOW_POLL)


async def version_logs(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    version_id = request.path_params["version_id"]
    await authorize(request, user_id)
    version = await owned_version(request, user_id, version_id)
    # Every parameter is checked before a stream starts (a 422 cannot follow a 200).
    since = _int_param(request, "since", 0, 0)
    limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    follow = _bool_param(request, "follow")
    store = store_of(request)
    if follow:
        return StreamingResponse(
            follow_lines(store, request.app.state.settings, version_id, since),
            media_type="application/x-ndjson",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    lines = await db_call(read_lines, store, version_id, since, limit + 1)
    has_more = len(lines) > limit
    lines = lines[:limit]
    total = await db_call(count_lines, store, version_id)
    return JSONResponse(
        {
            "version_id": version_id,
            "status": version.get("status"),
            "lines": lines,
            "next_since": lines[-1]["seq"] if lines else since,
            "has_more": has_more,
            "total": total,
        }
    )


routes: list[BaseRoute] = [
    Route("/api/v1/{user_id}/versions/{version_id}/logs", version_logs, methods=["GET"]),
]
