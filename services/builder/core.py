"""The builder's adapters and per-process state (`Builder`), and one handler run of a version (`Run`).

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
import os
import shutil
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.bus import EventBus
from shared.events import (
    Event,
    StageFinished,
    StageStarted,
    VersionFailed,
)
from shared.events.envelope import Payload
from shared.events.versions import StageFinishedPayload, StageStartedPayload, VersionFailedPayload
from shared.logwriter import LogWriter, mask
from shared.repo_url import RepoUrlRefused, check_repo_url
from shared.settings import Settings
from shared.status import VERSION_TERMINAL_STATUSES
from shared.store import Store

from . import pipeline
from .engine import DockerImageBuilder, DockerRegistry, ImageBuilder, Registry
from .hosts import HostPool
from .state import BuilderState, age_of
from .vcs import GitSvn, RepoSpec, Vcs, git_dir

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """The version was cancelled while this step ran."""


class Lost(Cancelled):
    """Another worker took the version over (this run's claim is gone): stop without a trace."""


class Failed(Exception):
    """The version fails: `reason` is shown to the user, `stage` names where."""

    def __init__(self, reason: str, stage: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stage = stage


@dataclass
class Active:
    version_id: str
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    epoch: int | None = None  # the claim this run works under
    lost: bool = False  # the claim was taken over: `cancelled` is set too
    released: bool = False  # torn down while holding the claim: its terminal event may follow


def worker_id() -> str:
    return f"{os.environ.get('FORNAX_INSTANCE') or 'builder'}@{socket.gethostname()}:{os.getpid()}"


@dataclass
class Builder:
    settings: Settings
    store: Any
    bus: Any  # EventBus (anything with `async publish(*events)`)
    vcs: Vcs
    images: ImageBuilder
    registry: Registry
    hosts: HostPool
    state: BuilderState
    worker: str = field(default_factory=worker_id)
    active: dict[str, Active] = field(default_factory=dict)
    logs: dict[str, LogWriter] = field(default_factory=dict)
    resuming: set[str] = field(default_factory=set)  # versions the reaper is resuming here
    finished: OrderedDict[str, None] = field(default_factory=OrderedDict)  # runs that ended here (recent)
    cleanup: Callable[[Any, str], None] = pipeline.cleanup_version

    async def emit(self, *events: Event) -> None:
        await self.bus.publish(*events)

    def workspace(self, version_id: str) -> Path:
        return self.settings.workspaces / version_id

    def url_refused(self, repo: RepoSpec) -> str | None:
        """Why the URL policy refuses the repository (None: allowed). The gateway checked it already;
        this holds for services stored before the policy changed."""
        try:
            check_repo_url(
                repo.url, schemes=self.settings.repo_url_schemes, allow_local=self.settings.repo_allow_local
            )
        except RepoUrlRefused as exc:
            return f"the repository URL is not allowed: {exc}"
        return None

    @property
    def registry_secret(self) -> str:
        return self.settings.registry_password.get_secret_value()

    async def log_for(self, version_id: str, service_id: str | None) -> LogWriter:
        """The version's log writer; a process that takes a version over continues after the archive."""
        writer = self.logs.get(version_id)
        if writer is None:
            secrets = [self.registry_secret]
            if service_id:
                secrets += await self.state.secret_values(service_id)
            writer = LogWriter(
                self.bus, version_id, secrets=secrets, start_seq=await self.state.next_log_seq(version_id),
                max_line=self.settings.log_max_line, max_bytes=self.settings.log_max_bytes,
            )
            writer.start()
            self.logs[version_id] = writer
        return writer

    async def close_log(self, version_id: str) -> None:
        writer = self.logs.pop(version_id, None)
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer.close()

    def begin(self, version_id: str) -> Active | None:
        """Mark the version as being worked on here; None if it already is, or if a run here already
        took it to its end (a later step's event arriving before the read model shows that)."""
        if version_id in self.active or version_id in self.finished:
            return None
        self.active[version_id] = act = Active(version_id)
        return act

    def end(self, version_id: str, finished: bool = False) -> None:
        self.active.pop(version_id, None)
        if finished:
            self.finished[version_id] = None
            while len(self.finished) > 10000:
                self.finished.popitem(last=False)

    async def remove_leftovers(self, version_id: str, host: str | None) -> None:
        """Containers and network by label (on every pool host that may hold them), then the workspace
        and its git directory."""
        for h in [host] if host else self.hosts.hosts:
            try:
                await asyncio.to_thread(self.cleanup, self.hosts.client(h), version_id)
            except Exception as exc:  # noqa: BLE001 - the reaper retries later
                log.warning("cleanup of %s on %s failed: %s", version_id, h, exc)
        for path in (self.workspace(version_id), git_dir(self.workspace(version_id))):
            await asyncio.to_thread(shutil.rmtree, path, True)

    async def remove_own_containers(self, version_id: str, epoch: int, host: str | None) -> None:
        """Only the containers a run of this claim epoch started (after a takeover)."""
        for h in [host] if host else self.hosts.hosts:
            try:
                await asyncio.to_thread(pipeline.cleanup_version, self.hosts.client(h), version_id, epoch)
            except Exception as exc:  # noqa: BLE001 - the reaper removes them once the version ended
                log.warning("cleanup of %s epoch %s on %s failed: %s", version_id, epoch, h, exc)


def bootstrap(settings: Settings) -> Builder:
    """Adapters from settings; nothing connects until first use."""
    store = Store(settings)
    state = BuilderState(store, worker_id(), lost_after=settings.builder_lost_after)
    return Builder(
        settings=settings,
        store=store,
        bus=EventBus(settings),
        vcs=GitSvn(allow_local=settings.repo_allow_local),
        images=DockerImageBuilder(line_limit=settings.log_max_line),
        registry=DockerRegistry(
            settings.registry_location,
            settings.registry_username,
            settings.registry_password.get_secret_value(),
        ),
        hosts=HostPool(settings.docker_hosts, store, settings.docker_cert_path),
        state=state,
        worker=state.worker,
    )


class Run:
    """One handler's work on one version (build, push or tag step)."""

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
        return cls.make(
            self.vid, payload, cause=self.cause, correlation_id=self.vid, actor=self.version.get("user_id")
        )

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
    async def teardown(self) -> None:
        """Remove everything of the version and give back its quota, heartbeat and log writer."""
        if await self.claim_gone():
            await self.teardown_lost()
            return
        await self.b.remove_leftovers(self.vid, self.host)
        user = self.version.get("user_id")
        if user:
            with contextlib.suppress(Exception):
                await pipeline.release(self.b.store, user, self.vid)
        await self.b.state.finish_claim(self.vid)
        self.active.released = True  # held until here; the claim is marked done now
        await self.b.close_log(self.vid)
        self.b.hosts.release(self.vid)

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
        await self.teardown()
        if self.active.cancelled.is_set() or not await self.still_wanted():
            return
        await self.emit(VersionFailed, VersionFailedPayload(reason=reason, stage=stage))

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
