"""Bounded polling for tests: wait until a check holds, and name what was awaited when it does not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


def _timed_out(timeout: float, what: str, error: BaseException | None) -> AssertionError:
    last = f" (last error: {error!r})" if error is not None else ""
    return AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{last}")


def wait_until(
    check: Callable[[], Any],
    timeout: float = 60.0,
    what: str = "condition",
    every: float = 0.2,
    retry: tuple[type[BaseException], ...] = (),
) -> Any:
    """Call `check` every `every` seconds until it returns a truthy value, and return that value.
    Exceptions of the types in `retry` count as "not yet"; after `timeout` seconds: AssertionError."""
    deadline = time.monotonic() + timeout
    error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except retry as exc:
            value, error = None, exc
        if value:
            return value
        time.sleep(every)
    raise _timed_out(timeout, what, error)


async def wait_until_async(
    check: Callable[[], Any], timeout: float = 60.0, what: str = "condition", every: float = 0.1
) -> Any:
    """`wait_until` for async tests: `check` runs in a worker thread, the event loop keeps running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(check)
        if value:
            return value
        await asyncio.sleep(every)
    raise _timed_out(timeout, what, None)
