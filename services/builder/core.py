"""The builder's adapters and per-process state (`Builder`), the outcomes of a run (`Failed`,
`Cancelled`, `Lost`) and the claim it works under (`Active`); one run of a version is `run.Run`,
driven by `coordinator.handle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from shared.bus import EventBus, publish_retrying
from shared.events import (
    Event,
)
from shared.logwriter import LogWriter
from shared.repo_url import RepoUrlRefused, check_repo_url
from shared.settings import Settings
from shared.store import Store

from . import pipeline
from .engine import DockerImageBuilder, DockerRegistry, ImageBuilder, Registry
from .hosts import HostPool
from .ports import Publisher, Quota, State
from .state import BuilderState
from .vcs import RepoSpec, Vcs
from .vcs.clients import GitSvn
from .vcs.git import git_dir

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
class StoreQuota:
    """The quota port over the `quotas` collection (pipeline.quota: atomic across builder processes)."""

    store: Any

    async def acquire(
        self,
        user_id: str,
        version_id: str,
        memory_mb: int,
        cpu: int,
        *,
        on_wait: Callable[[str], Awaitable[None]] | None = None,
        cancelled: asyncio.Event | None = None,
        deadline: float | None = None,
    ) -> bool:
        return await pipeline.acquire(
            self.store, user_id, version_id, memory_mb, cpu, on_wait=on_wait, cancelled=cancelled, deadline=deadline
        )

    async def release(self, user_id: str, version_id: str) -> bool:
        return await pipeline.release(self.store, user_id, version_id)


@dataclass
class Builder:
    """The ports a run works through, and what this process is working on."""

    settings: Settings
    store: Any
    bus: Publisher
    vcs: Vcs
    images: ImageBuilder
    registry: Registry
    hosts: HostPool
    state: State
    worker: str = field(default_factory=worker_id)
    active: dict[str, Active] = field(default_factory=dict)
    logs: dict[str, LogWriter] = field(default_factory=dict)
    resuming: set[str] = field(default_factory=set)  # versions the reaper is resuming here
    finished: OrderedDict[str, None] = field(default_factory=OrderedDict)  # runs that ended here (recent)
    quota: Quota | None = None  # None: StoreQuota(store)
    # Docker-side calls on a host's client: remove a version's containers and network (with an epoch:
    # only that claim's containers), create the version's network.
    cleanup: Callable[..., None] = pipeline.cleanup_version
    network: Callable[[Any, str], Any] = pipeline.ensure_network

    def __post_init__(self) -> None:
        if self.quota is None:
            self.quota = StoreQuota(self.store)

    @property
    def quotas(self) -> Quota:
        assert self.quota is not None
        return self.quota

    async def emit(self, *events: Event) -> None:
        """Publish; through a broker restart it retries for publish_retry_for seconds before the
        BusUnavailable fails the version."""
        await publish_retrying(self.bus, *events, give_up_after=self.settings.publish_retry_for)

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
                cast(EventBus, self.bus),  # it only calls `publish`
                version_id, secrets=secrets, start_seq=await self.state.next_log_seq(version_id),
                max_line=self.settings.log_max_line, max_bytes=self.settings.log_max_bytes,
                flush_every=self.settings.log_flush_ms / 1000,
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
                await asyncio.to_thread(self.cleanup, self.hosts.client(h), version_id, epoch)
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
