"""Gateway I/O helpers: blocking pymongo calls off the event loop, publishing with 503 on failure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from shared.bus import BusUnavailable, EventBus
from shared.events import Event
from shared.store import Store

from .errors import ApiError

T = TypeVar("T")


def store_of(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def bus_of(request: Request) -> EventBus:
    return request.app.state.bus  # type: ignore[no-any-return]


def store_unavailable(exc: BaseException | None = None) -> ApiError:
    detail = f" ({type(exc).__name__})" if exc else ""
    return ApiError(503, "store_unavailable", f"the read-model store (MongoDB) is unavailable{detail}; retry later")


async def db_call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking pymongo call in the thread pool; a lost database becomes a 503 ApiError.

    DuplicateKeyError (and other OperationFailures) are passed through for the caller to map."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except OperationFailure:
        raise
    except (ConnectionFailure, PyMongoError) as exc:
        raise store_unavailable(exc) from exc


async def publish(request: Request, *events: Event) -> None:
    """Publish and wait for the broker's acknowledgement; a 503 ApiError when it did not come."""
    try:
        await bus_of(request).publish(*events)
    except BusUnavailable as exc:
        raise ApiError(
            503,
            "event_bus_unavailable",
            "the event broker is unavailable: nothing was recorded, retry later",
        ) from exc
