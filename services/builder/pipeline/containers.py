"""What the stage runner's containers have in common whatever the backend: the generated scripts,
the output read line by line, the tail quoted in a stage error; and `blocking`, a docker-py call off
the event loop."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import shlex
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from shared.logwriter import MASK_SLACK, MAX_LINE, LineSplitter

from .backend import Container, ContainerBackend

MARK = "\x1efornax-cmd "  # printed by the generated script before each command
TAIL_CHARS = 500  # of each line quoted in a stage error


def step_script(commands: list[str]) -> str:
    """One `sh -e` script: a marker line before each command so the log can echo `$ cmd`."""
    lines = ["exec 2>&1", "set -e"]  # one pipe: output keeps its order in the log
    for i, cmd in enumerate(commands):
        lines.append(f"printf '%s\\n' {shlex.quote(MARK + str(i))}")
        lines.append(cmd)
    return "\n".join(lines) + "\n"


def service_script(commands: list[str]) -> str:
    return "set -e\n" + "\n".join(commands) + "\n"


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
    backend: ContainerBackend,
    container: Container,
    on_line: Callable[[str], Awaitable[None]],
    limit: int = MAX_LINE + MASK_SLACK,
    split_before: bytes | None = None,
) -> None:
    """Follow the container's output (stdout+stderr) and call on_line per line, as produced; a line
    longer than `limit` bytes is cut (LineSplitter)."""
    splitter = LineSplitter(limit, split_before)
    async with contextlib.aclosing(backend.output(container)) as chunks:
        async for chunk in chunks:
            for line in splitter.feed(chunk):
                await on_line(line)
    for line in splitter.close():
        await on_line(line)


class Tail:
    """The last lines of a step's output, for the stage error."""

    def __init__(self, size: int = 10) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=size)

    def add(self, line: str) -> None:
        # The stage error travels in events: a few short lines, not ten 16 KiB ones.
        self.lines.append(line if len(line) <= TAIL_CHARS else line[:TAIL_CHARS] + "…")

    def text(self) -> str:
        return "\n".join(self.lines)
