"""Gateway I/O helpers: blocking pymongo calls off the event loop, publishing with 503 on failure."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from shared.bus import BusUnavailable, EventBus, EventTooLarge
from shared.events import Event
from shared.store import ReadModelStore

from .errors import ApiError

T = TypeVar("T")

# After a dependency failed, fail fast for a moment instead of making every request wait out the full
# timeout (and pile up threads) while it is down; the first call after the window tries again.
FAIL_FAST_SECONDS = 1.0


class _Breaker:
    def __init__(self) -> None:
        self.open_until = 0.0

    def is_open(self) -> bool:
        return time.monotonic() < self.open_until

    def trip(self) -> None:
        self.open_until = time.monotonic() + FAIL_FAST_SECONDS


_mongo = _Breaker()
_broker = _Breaker()


def store_of(request: Request) -> ReadModelStore:
    return request.app.state.store  # type: ignore[no-any-return]


def bus_of(request: Request) -> EventBus:
    return request.app.state.bus  # type: ignore[no-any-return]


def store_unavailable(exc: BaseException | None = None) -> ApiError:
    detail = f" ({type(exc).__name__})" if exc else ""
    return ApiError(
        503, "store_unavailable", f"the read-model store (MongoDB) is unavailable{detail}; retry later"
    )


async def db_call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking pymongo call in the thread pool; a lost database becomes a 503 ApiError.

    DuplicateKeyError (and other OperationFailures) are passed through for the caller to map."""
    if _mongo.is_open():
        raise store_unavailable()
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except OperationFailure:
        raise
    except (ConnectionFailure, PyMongoError) as exc:
        _mongo.trip()
        raise store_unavailable(exc) from exc


async def publish(request: Request, *events: Event) -> None:
    """Publish and wait for the broker's acknowledgement; a 503 ApiError when it did not come."""
    await publish_on(bus_of(request), *events)


async def publish_on(bus: EventBus, *events: Any) -> None:
    """`publish` for callers that hold the bus rather than a Request (events: Event or anything with
    its TOPIC, key() and encode(), e.g. an already encoded event)."""
    if _broker.is_open():
        raise bus_unavailable()
    try:
        await bus.publish(*events)
    except EventTooLarge as exc:
        raise ApiError(413, "payload_too_large", f"the request makes an event too large to record: {exc}") from None
    except BusUnavailable as exc:
        _broker.trip()
        raise bus_unavailable() from exc


def bus_unavailable() -> ApiError:
    return ApiError(
        503, "event_bus_unavailable", "the event broker is unavailable: nothing was recorded, retry later"
    )
