"""Blocking docker SDK calls wrapped for the event loop: create/start, live log lines, stop, remove."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import shlex
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound, NotFound

from .errors import StageFailed

MARK = "\x1efornax-cmd "  # printed by the generated script before each command
STOP_GRACE = 3  # seconds between SIGTERM and SIGKILL


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


async def pump_lines(container, on_line: Callable[[str], Awaitable[None]]) -> None:
    """Follow the container's output (stdout+stderr) and call on_line per line, as produced."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def put(item: bytes | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop may be gone at interpreter shutdown
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def follow() -> None:
        try:
            for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                put(chunk)
        except Exception:  # noqa: BLE001 - the container went away: the stream just ends
            pass
        finally:
            put(None)

    # The follow thread ends by itself once the container stops or is removed.
    threading.Thread(target=follow, daemon=True, name="fornax-logs").start()
    buf = b""
    while True:
        chunk = await queue.get()
        if chunk is None:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            await on_line(raw.rstrip(b"\r").decode("utf-8", "replace"))
    if buf:
        await on_line(buf.decode("utf-8", "replace"))


class Tail:
    """The last lines of a step's output, for the stage error."""

    def __init__(self, size: int = 10) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=size)

    def add(self, line: str) -> None:
        self.lines.append(line)

    def text(self) -> str:
        return "\n".join(self.lines)
