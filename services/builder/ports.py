"""The ports the builder's coordinator and step handlers work through.

Defined elsewhere: `vcs.Vcs` (probe, clone, tag), `engine.ImageBuilder` (docker build) and
`engine.Registry` (push). Here: the event publisher, the per-user quota and the builder's state (read
models, secrets, claims). The real adapters are `shared.bus.EventBus`, `core.StoreQuota` and
`state.BuilderState`; the unit tests have in-memory fakes of each (tests/fakes/builder.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from shared.events import Event

from .vcs import RepoSpec


class Publisher(Protocol):
    async def publish(self, *events: Event) -> None:
        """Publish the events in order; returns once the broker acknowledged them."""


class Quota(Protocol):
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
        """Reserve the version's demand, waiting while the user's quota is full (`on_wait(reason)` once):
        True once reserved, False if cancelled or past the deadline first; QuotaExceeded when the demand
        exceeds the whole quota."""

    async def release(self, user_id: str, version_id: str) -> bool:
        """Give the version's reservation back (idempotent)."""


class State(Protocol):
    """Read models, secrets and the version claims (`builder_heartbeats`): see state.py."""

    worker: str

    async def version(self, version_id: str) -> dict[str, Any] | None: ...

    async def wait_version(
        self, version_id: str, timeout: float = 10.0, until: Any = None
    ) -> dict[str, Any] | None: ...

    async def service(self, service_id: str) -> dict[str, Any] | None: ...

    async def active_versions(self) -> list[dict[str, Any]]: ...

    async def cancelled(self, version_ids: list[str]) -> list[str]: ...

    async def secrets(self, service_id: str) -> dict[str, Any]: ...

    async def repo_spec(
        self, service: dict[str, Any], repository: dict[str, Any] | None = None
    ) -> RepoSpec: ...

    async def secret_values(self, service_id: str) -> list[str]: ...

    async def next_log_seq(self, version_id: str) -> int: ...

    async def claim(self, version_id: str) -> int | None: ...

    async def lost_claims(self, epochs: dict[str, int]) -> set[str]: ...

    async def holds(self, version_id: str, epoch: int) -> bool: ...

    async def beat(self, version_ids: list[str]) -> None: ...

    async def count_takeover(self, version_id: str) -> int: ...

    async def start_attempt(self, version_id: str) -> int: ...

    async def record_emitted(self, version_id: str, event_type: str) -> None: ...

    async def emitted(self, version_id: str, event_type: str) -> bool: ...

    async def finish_claim(self, version_id: str, end: dict[str, Any] | None = None) -> None: ...

    async def touch_done(self, version_id: str) -> None: ...

    async def done_claims(self) -> list[str]: ...

    async def drop_claim(self, version_id: str) -> None: ...

    async def heartbeat(self, version_id: str) -> dict[str, Any] | None: ...
