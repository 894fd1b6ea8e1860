"""Read-your-writes for creates: answer once the read model (the projector's Mongo documents) shows what
was just published, so a GET, a webhook or a log subscription sent right after the answer finds it.

The wait is bounded by `settings.read_your_writes_wait` (default 2 s). The document is looked up by its
`_id` (one indexed read, only `_id` returned) with a growing pause between looks — 5, 10, 20, 40 ms,
then every 50 ms — so a request costs a handful of reads, not a tight loop. Past the bound the create
still succeeded (the event is in the log and will be projected): it answers 202 with `Retry-After`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from .errors import ApiError
from .io import db_call, store_of

FIRST_PAUSE = 0.005
MAX_PAUSE = 0.05
RETRY_AFTER_SECONDS = 1


def pauses(first: float = FIRST_PAUSE, cap: float = MAX_PAUSE) -> Iterator[float]:
    """5, 10, 20, 40, 50, 50, ... ms."""
    pause = first
    while True:
        yield min(pause, cap)
        pause *= 2


async def until_projected(request: Request, collection: str, doc_id: str) -> bool:
    """Whether `collection` shows the document `doc_id` within the configured wait."""
    wait = float(request.app.state.settings.read_your_writes_wait)
    if wait <= 0:
        return False
    coll = getattr(store_of(request), collection)
    deadline = time.monotonic() + wait
    for pause in pauses():
        remaining = deadline - time.monotonic()
        await asyncio.sleep(max(0.0, min(pause, remaining)))
        try:
            if await db_call(coll.find_one, {"_id": doc_id}, {"_id": 1}) is not None:
                return True
        except ApiError:
            return False  # the store is failing: the write is recorded all the same, answer 202
        if time.monotonic() >= deadline:
            return False
    return False  # pragma: no cover - pauses() never ends


def accepted(body: dict[str, Any], location: str, visible: bool, *, created: bool = True) -> JSONResponse:
    """201 + Location when the new resource is readable (`created`; an operation that goes on running,
    such as a deploy, answers 202 all the same), else 202 + Location + Retry-After."""
    headers = {"Location": location}
    if not visible:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    status = 201 if visible and created else 202
    return JSONResponse(body, status_code=status, headers=headers)
