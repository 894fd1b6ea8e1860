"""Blocking docker SDK calls wrapped for the event loop: create/start, live log lines, stop, remove."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import shlex
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound, NotFound

from shared.logwriter import MASK_SLACK, MAX_LINE, LineSplitter

from .errors import StageFailed

MARK = "\x1efornax-cmd "  # printed by the generated script before each command
STOP_GRACE = 3  # seconds between SIGTERM and SIGKILL
TAIL_CHARS = 500  # of each line quoted in a stage error
PUMP_CHUNKS = 64  # output chunks (each at most ~16 KiB from the daemon) queued per container


def step_script(commands: list[str]) -> str:
    """One `sh -e` script: a marker line before each command so the log can echo `$ cmd`."""
    lines = ["exec 2>&1", "set -e"]  # one pipe: output keeps its order in the log
    for i, cmd in enumerate(commands):
        lines.append(f"printf '%s\\n' {shlex.quote(MARK + str(i))}")
        lines.append(cmd)
    return "\n".join(lines) + "\n"


def service_script(commands: list[str]) -> str:
    return "set -e\n" + "\n".join(commands) + "\n"


def ensure_image(client: docker.DockerClient, image: str, auth: dict[str, str] | None) -> None:
    """The image must be on the build host; it is pulled only with explicit credentials (`auth`: the
    user's own namespace of the managed registry), never with a login stored on the host."""
    try:
        client.images.get(image)
        return
    except ImageNotFound:
        pass
    if auth is not None:
        try:
            client.images.pull(image, auth_config=auth)
            return
        except APIError as exc:
            raise StageFailed(f"image {image} could not be pulled: {exc.explanation or exc}") from None
    raise StageFailed(f"image {image} is not available on the build host")


def create(client: docker.DockerClient, name: str, **kwargs: Any):
    """Create a container, replacing a leftover of the same name (a resumed or repeated attempt)."""
    try:
        return client.containers.create(name=name, **kwargs)
    except APIError as exc:
        if exc.status_code != 409:
            raise
    with contextlib.suppress(NotFound):
        client.containers.get(name).remove(force=True)
    return client.containers.create(name=name, **kwargs)


def stop_and_remove(container, graceful: bool = False) -> None:
    """Remove the container; graceful: SIGTERM first (via the init process), SIGKILL after STOP_GRACE."""
    if graceful:
        with contextlib.suppress(NotFound, APIError):
            container.stop(timeout=STOP_GRACE)
    with contextlib.suppress(NotFound):
        try:
            container.remove(force=True)
        except APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise


async def blocking(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking docker call in its own daemon thread (not the shared default pool, which
    long log-follow and wait calls of concurrent versions could exhaust)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            future.set_result(value) if ok else future.set_exception(value)

    def run() -> None:
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, False, exc)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, True, result)

    threading.Thread(target=run, daemon=True, name=f"fornax-{getattr(fn, '__name__', 'docker')}").start()
    return await future


async def pump_lines(
    container,
    on_line: Callable[[str], Awaitable[None]],
    limit: int = MAX_LINE + MASK_SLACK,
    split_before: bytes | None = None,
) -> None:
    """Follow the container's output (stdout+stderr) and call on_line per line, as produced; a line
    longer than `limit` bytes is cut (LineSplitter). The reading thread waits while PUMP_CHUNKS
    chunks are queued, so a step that prints faster than the log is written holds no more memory."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(PUMP_CHUNKS)
    stopped = threading.Event()

    def put(item: bytes | None) -> bool:
        try:
            future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        except RuntimeError:  # the loop is gone (interpreter shutdown)
            return False
        while True:
            try:
                future.result(timeout=1.0)
                return True
            except concurrent.futures.TimeoutError:
                if stopped.is_set():  # nobody reads any more (the pump was cancelled)
                    future.cancel()
                    return False
            except (concurrent.futures.CancelledError, RuntimeError):
                return False

    def follow() -> None:
        try:
            for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                if not put(chunk):
                    return
        except Exception:  # noqa: BLE001 - the container went away: the stream just ends
            pass
        finally:
            put(None)

    # The follow thread ends by itself once the container stops or is removed (or the pump ends).
    threading.Thread(target=follow, daemon=True, name="fornax-logs").start()
    splitter = LineSplitter(limit, split_before)
    try:
        while True:
            chunk = await queue.get()
            if chunk is None:
                break
            for line in splitter.feed(chunk):
                await on_line(line)
        for line in splitter.close():
            await on_line(line)
    finally:
        stopped.set()


class Tail:
    """The last lines of a step's output, for the stage error."""

    def __init__(self, size: int = 10) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=size)

    def add(self, line: str) -> None:
        # The stage error travels in events: a few short lines, not ten 16 KiB ones.
        self.lines.append(line if len(line) <= TAIL_CHARS else line[:TAIL_CHARS] + "…")

    def text(self) -> str:
        return "\n".join(self.lines)
