"""Helpers for the logstream tests: users, versions through the projector, log lines through LogWriter,
and WebSocket clients that collect frames."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from shared.auth import create_user
from shared.bus import EventBus
from shared.events import VersionCancelled, VersionFailed, VersionRequested, VersionSucceeded
from shared.events.versions import (
    VersionCancelledPayload,
    VersionFailedPayload,
    VersionRequestedPayload,
    VersionSucceededPayload,
)
from shared.logwriter import LogWriter
from tests.waits import wait_until_async


def new_user(store: Any, prefix: str = "u") -> tuple[str, str]:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    return name, create_user(store, name)


async def request_version(bus: EventBus, store: Any, user: str, service_id: str | None = None) -> str:
    """A version in status pending, made by the projector from a real VersionRequested event."""
    vid = uuid.uuid4().hex
    await bus.publish(
        VersionRequested.make(
            vid,
            VersionRequestedPayload(
                service_id=service_id or uuid.uuid4().hex, user_id=user, name=f"v-{vid[:6]}"
            ),
            actor=user,
        )
    )
    await wait_until_async(lambda: store.versions.find_one({"_id": vid}), what=f"version {vid} projected")
    return vid


async def end_version(bus: EventBus, vid: str, outcome: str = "success") -> None:
    if outcome == "success":
        event: Any = VersionSucceeded.make(vid, VersionSucceededPayload())
    elif outcome == "failed":
        event = VersionFailed.make(vid, VersionFailedPayload(reason="step failed", stage="integration"))
    else:
        event = VersionCancelled.make(vid, VersionCancelledPayload())
    await bus.publish(event)


async def write_lines(
    bus: EventBus,
    vid: str,
    count: int,
    start: int = 1,
    *,
    pause_every: int = 0,
    pause: float = 0.0,
    text: str = "line {seq}",
    secrets: tuple[str, ...] = (),
) -> None:
    writer = LogWriter(bus, vid, start_seq=start, secrets=secrets)
    for seq in range(start, start + count):
        await writer.write("build", text.format(seq=seq))
        if pause_every and (seq - start + 1) % pause_every == 0:
            await writer.flush()
            await asyncio.sleep(pause)
    await writer.close()


def ws_url(port: int, vid: str, since: int | None = None, token: str | None = None) -> str:
    url = f"ws://127.0.0.1:{port}/ws/versions/{vid}/logs"
    params = [f"since={since}"] if since is not None else []
    if token:
        params.append(f"token={token}")
    return url + ("?" + "&".join(params) if params else "")


def lines_of(frame: str | bytes) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    data = json.loads(frame)
    if isinstance(data, list):
        return data, None
    if data.get("final"):
        return [], data
    return [data], None


class Watcher:
    """Collects one subscription's lines, its final frame and its close code."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.lines: list[dict[str, Any]] = []
        self.final: dict[str, Any] | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.got_line = asyncio.Event()

    async def run(self, stop_after: int | None = None) -> Watcher:
        async with connect(self.url, additional_headers=self.headers, max_size=None) as ws:
            try:
                async for frame in ws:
                    lines, final = lines_of(frame)
                    self.lines += lines
                    if lines:
                        self.got_line.set()
                    if final is not None:
                        self.final = final
                    if stop_after is not None and len(self.lines) >= stop_after:
                        break
            except ConnectionClosed:
                pass
            if stop_after is None:
                await ws.wait_closed()
            self.close_code = ws.close_code
            self.close_reason = ws.close_reason or ""
        return self

    @property
    def seqs(self) -> list[int]:
        return [ln["seq"] for ln in self.lines]
