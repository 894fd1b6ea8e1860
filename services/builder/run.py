"""One run of a version (`Run`), from the step the coordinator started it at to the version's end.

A Run emits stage events, writes the version's log, races each long step against the version's
cancel flag and deadline, and on the way out (failure, cancel, success) removes everything the
version created — containers and network by label, workspace, quota reservation, heartbeat —
before it emits the terminal event.

A Run works under its claim (`Active.epoch`): its events carry the epoch, and before each one it
checks that the claim is still its own. A run whose claim was taken over (it stalled past
builder_lost_after) stops as `Lost`: it emits nothing more and removes only the containers labelled
with its own epoch, leaving the workspace, quota and heartbeat to the worker that took over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from shared.events import (
    Event,
    StageFinished,
    StageStarted,
    VersionFailed,
)
from shared.events.envelope import Payload
from shared.events.versions import StageFinishedPayload, StageStartedPayload, VersionFailedPayload
from shared.logwriter import LogWriter, mask
from shared.status import VERSION_TERMINAL_STATUSES

from . import pipeline
from .core import Active, Builder, Cancelled, Failed, Lost
from .state import age_of

log = logging.getLogger(__name__)
MILESTONES = frozenset({"ImageBuilt", "ImagePushed", "VersionTagged"})  # published once per version
ENDS = frozenset({"VersionSucceeded", "VersionFailed"})  # the builder's end of a version (also one id each)
_MILESTONE_IDS = uuid.UUID("6b1f6c1e-5a8e-4c1b-9a57-0f0e2f4d6a11")


def milestone_id(version_id: str, event_type: str) -> str:
    """The one event id of a version's milestone (built, pushed, tagged), whichever run publishes it."""
    return uuid.uuid5(_MILESTONE_IDS, f"{version_id}/{event_type}").hex


class Run:
    """One worker's work on one version under one claim: the steps the coordinator runs share it."""

    def __init__(self, b: Builder, cause: Event, version: dict[str, Any], active: Active) -> None:
        self.b = b
        self.cause = cause
        self.version = version
        self.vid: str = version["_id"]
        self.active = active
        self.service: dict[str, Any] = {}
        self.log: LogWriter | None = None
        self.host: str | None = version.get("host")
        self.current: str | None = None
        elapsed = age_of(version.get("created_at")) or 0.0
        self.deadline = time.monotonic() + max(1.0, b.settings.version_timeout - elapsed)

    # -- events and log ------------------------------------------------------------------------------
    def make(self, cls: type[Event], payload: Payload) -> Event:
        if self.active.epoch is not None and "epoch" in type(payload).model_fields:
            payload = payload.model_copy(update={"epoch": self.active.epoch})
        event = cls.make(
            self.vid, payload, cause=self.cause, correlation_id=self.vid, actor=self.version.get("user_id")
        )
        if event.type in MILESTONES or event.type in ENDS:
            # A crash after the broker acknowledged a milestone but before publish_once noted it leaves
            # a gap: the resumed run publishes it again. Its id is the same in every run, so that is the
            # same event delivered twice (the archive keeps one; every consumer takes events at least once).
            event = event.model_copy(update={"event_id": milestone_id(self.vid, event.type)})
        return event

    def log_seq(self) -> int | None:
        """The seq of the last log line this run's writer gave out (None without a writer)."""
        return self.log.seq - 1 if self.log is not None else None

    def with_log_seq(self, event: Event) -> Event:
        """The version's end event carrying its last log seq (see VersionSucceededPayload.log_seq)."""
        seq = self.log_seq()
        if seq is None or "log_seq" not in type(event.payload).model_fields:
            return event
        return event.model_copy(update={"payload": event.payload.model_copy(update={"log_seq": seq})})

    async def emit(self, cls: type[Event], payload: Payload) -> None:
        await self.publish(self.make(cls, payload))

    async def publish(self, *events: Event) -> None:
        """Emit, if this run still holds its claim (Lost otherwise)."""
        await self.check_claim()
        await self.b.emit(*events)

    async def publish_once(self, event: Event) -> None:
        """Publish one of the version's milestones (built, pushed, tagged) once. A run resumed after a crash
        that came after the publish redoes the step (the same image, digest or tag: nothing changes) but does
        not publish it again, although the read model may not show it yet."""
        if await self.b.state.emitted(self.vid, event.type):
            log.info("version %s: %s was published before this run; not again", self.vid, event.type)
            return
        await self.publish(event)
        await self.b.state.record_emitted(self.vid, event.type)

    async def check_claim(self) -> None:
        if await self.claim_gone():
            raise Lost()

    async def claim_gone(self) -> bool:
        """True (and the run marked lost) once another worker took the version over."""
        epoch = self.active.epoch
        if self.active.released or self.active.lost or epoch is None:
            return self.active.lost
        if not await self.b.state.holds(self.vid, epoch):
            hb = await self.b.state.heartbeat(self.vid) or {}
            log.info("version %s: claim now %s epoch %s", self.vid, hb.get("worker"), hb.get("epoch"))
            self.lost()
        return self.active.lost

    def lost(self) -> None:
        if not self.active.lost:
            log.warning("version %s: claim epoch %s was taken over; stopping here", self.vid, self.active.epoch)
        self.active.lost = True
        self.active.cancelled.set()

    async def open_log(self) -> LogWriter:
        if self.log is None:
            self.log = await self.b.log_for(self.vid, self.version.get("service_id"))
        return self.log

    async def write(self, stage: str, text: str, stream: str = "stdout") -> None:
        await (await self.open_log()).write(stage, text, stream)

    def line_writer(self, stage: str) -> Callable[[str], Awaitable[None]]:
        async def on_line(text: str) -> None:
            await self.write(stage, text)

        return on_line

    def masked(self, text: str) -> str:
        secrets = [self.b.registry_secret] + (self.log.secrets if self.log else [])
        return mask(text, secrets)

    # -- steps ---------------------------------------------------------------------------------------
    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    async def guard(self, coro: Awaitable[Any], stage: str, timeout: float | None = None) -> Any:
        """Await `coro` unless the version is cancelled (Cancelled) or runs out of time (Failed)."""
        limit = min(timeout or float("inf"), self.remaining())
        task = asyncio.ensure_future(coro)
        waiter = asyncio.ensure_future(self.active.cancelled.wait())
        try:
            done, _ = await asyncio.wait(
                {task, waiter}, timeout=max(limit, 0.01), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        if task in done:
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if self.active.cancelled.is_set():
            raise Cancelled()
        raise Failed(f"{stage} timed out after {limit:.0f}s", stage)

    async def stage(
        self,
        name: str,
        work: Callable[[], Awaitable[Any]],
        timeout: float | None = None,
        errors: tuple[type[BaseException], ...] = (),
    ) -> Any:
        """StageStarted, the work (guarded), StageFinished(success|failed|cancelled)."""
        if self.active.cancelled.is_set():
            raise Cancelled()
        self.current = name
        await self.emit(StageStarted, StageStartedPayload(stage=name))  # type: ignore[arg-type]
        began = time.monotonic()
        try:
            result = await self.guard(work(), name, timeout)
        except Cancelled:
            await self.finish(name, "cancelled")
            raise
        except pipeline.StageFailed as exc:
            if exc.kind == "cancelled" or self.active.cancelled.is_set():
                await self.finish(name, "cancelled")
                raise Cancelled() from None
            await self.finish(name, "failed", self.masked(exc.message))
            raise Failed(self.masked(exc.message), name) from None
        except Failed as exc:
            exc.stage = exc.stage or name
            await self.finish(name, "failed", exc.reason)
            raise
        except errors as exc:
            reason = self.masked(str(exc))
            await self.finish(name, "failed", reason)
            raise Failed(reason, name) from None
        log.info("version %s: %s done in %.3fs", self.vid, name, time.monotonic() - began)
        await self.finish(name, "success")
        return result

    async def finish(self, stage: str, status: str, error: str | None = None) -> None:
        self.current = None
        if error:
            await self.write(stage, error, "system")
        await self.emit(StageFinished, StageFinishedPayload(stage=stage, status=status, error=error))  # type: ignore[arg-type]

    # -- endings -------------------------------------------------------------------------------------
    async def teardown(self, end: Callable[[], Event] | None = None) -> Event | None:
        """Remove everything of the version and give back its quota, heartbeat and log writer. With
        `end` (made once the log is closed, so it knows the last line's seq): the version's end event,
        noted on the claim as it is marked done, so that a crash before it is published leaves it to the
        reaper to publish (the same event: its id is the version's) instead of nobody. Returns it."""
        if await self.claim_gone():
            await self.teardown_lost()
            return None
        await self.b.remove_leftovers(self.vid, self.host)
        user = self.version.get("user_id")
        if user:
            with contextlib.suppress(Exception):
                await self.b.quotas.release(user, self.vid)
        await self.b.close_log(self.vid)
        event = end() if end is not None else None
        await self.b.state.finish_claim(self.vid, event.to_doc() if event is not None else None)
        self.active.released = True  # held until here; the claim is marked done now
        self.b.hosts.release(self.vid)
        return event

    async def teardown_lost(self) -> None:
        """After a takeover: only what this claim alone owns (its containers, the local log writer)."""
        if self.active.epoch is not None:
            await self.b.remove_own_containers(self.vid, self.active.epoch, self.host)
        await self.b.close_log(self.vid)
        self.b.hosts.release(self.vid)

    async def still_wanted(self) -> bool:
        doc = await self.b.state.version(self.vid)
        return not (doc and doc.get("status") in VERSION_TERMINAL_STATUSES)

    async def fail(self, reason: str, stage: str | None) -> None:
        """Tear down, then VersionFailed — unless the version was cancelled meanwhile."""
        reason = self.masked(reason)
        if await self.claim_gone():
            await self.teardown_lost()
            return
        if self.log is not None or self.version.get("service_id"):
            with contextlib.suppress(Exception):
                await self.write(stage or "build", f"version failed: {reason}", "system")
        end = await self.teardown(
            lambda: self.make(VersionFailed, VersionFailedPayload(reason=reason, stage=stage, log_seq=self.log_seq()))
        )
        if end is None or self.active.cancelled.is_set() or not await self.still_wanted():
            return
        await self.publish(end)

    async def cancelled(self) -> None:
        if not self.active.lost:
            with contextlib.suppress(Exception):
                await self.write(self.current or "build", "cancelled: stopped and cleaned up", "system")
        await self.teardown()


async def run_guarded(b: Builder, run: Run, body: Callable[[Run], Awaitable[None]]) -> None:
    """Run a step body, turning Failed into VersionFailed and Cancelled into a quiet teardown."""
    try:
        await body(run)
    except Cancelled:
        await run.cancelled()
    except Failed as exc:
        await run.fail(exc.reason, exc.stage)
    except Exception as exc:  # a bug or an unexpected outage must not leave it running
        log.exception("version %s: unexpected error", run.vid)
        await run.fail(f"internal builder error: {type(exc).__name__}: {exc}", run.current)
