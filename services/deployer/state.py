"""What the deployer knows: versions and services (read models), deployments, pins.

Facts this process emitted or consumed on fornax.deploys are folded into memory at once, so a pin or
a finished deployment counts immediately, before the projector catches up; the Mongo read models
(`deployments`, `targets`, `versions`, `services`) supply everything older (e.g. after a restart).
`MemoryState` alone is the fake used by handler tests.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.events import (
    DeployFailed,
    DeployRequested,
    DeploySkipped,
    DeployStarted,
    DeploySucceeded,
    Event,
    RollbackRequested,
    TargetPinChanged,
)
from shared.routing import Router
from shared.status import DEPLOY_TERMINAL_STATUSES
from shared.store import ReadModelStore

# Started deploys are lost after the sweep horizon; never-started ones may sit in a backlog while the
# deployer is down, so they get much longer.
QUEUED_GRACE = timedelta(hours=1)
_ORDER = itertools.count(1)  # ties in finished_at (coarse clocks) are broken by the order we saw them


class MemoryState:
    def __init__(self) -> None:
        self.versions: dict[str, dict[str, Any]] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.deployments: dict[str, dict[str, Any]] = {}
        self.pins: dict[tuple[str, str], bool] = {}

    # -- folding ---------------------------------------------------------------------------------
    def fold(self, event: Event) -> None:
        """Remember a deploy fact at once (other event types are ignored)."""
        _FOLDS.dispatch(event, self)

    def _doc(self, deployment_id: str) -> dict[str, Any]:
        return self.deployments.setdefault(deployment_id, {"_id": deployment_id, "status": "requested"})

    # -- queries (async: the Mongo subclass reads in a thread) -------------------------------------
    async def version(self, version_id: str) -> dict[str, Any] | None:
        return self.versions.get(version_id)

    async def service(self, service_id: str) -> dict[str, Any] | None:
        return self.services.get(service_id)

    async def finished(self, deployment_id: str) -> bool:
        return self.deployments.get(deployment_id, {}).get("status") in DEPLOY_TERMINAL_STATUSES

    async def pinned(self, service_id: str, target: str) -> bool:
        return self.pins.get((service_id, target), False)

    async def successes(self, service_id: str, target: str | None = None) -> list[dict[str, Any]]:
        """Successful deployments of the service (on `target`), newest first."""
        return _newest_first(self._memory_successes(service_id, target))

    async def unfinished(self, before: datetime) -> list[dict[str, Any]]:
        """Deployments requested before `before` that never finished (their deployer was lost)."""
        return [d for d in self.deployments.values() if _lost(d, before)]

    def _memory_successes(self, service_id: str, target: str | None) -> list[dict[str, Any]]:
        return [
            d
            for d in self.deployments.values()
            if d.get("service_id") == service_id
            and d.get("status") == "success"
            and d.get("digest")
            and (target is None or d.get("target") == target)
        ]


_FOLDS: Router[Callable[[MemoryState, Any], None]] = Router("deployer-state")


@_FOLDS.on(TargetPinChanged)
def _pin_changed(state: MemoryState, event: TargetPinChanged) -> None:
    p = event.payload
    state.pins[(p.service_id, p.target)] = p.pinned


@_FOLDS.on(DeployRequested, RollbackRequested)
def _requested(state: MemoryState, event: Event) -> None:
    state._doc(event.payload.deployment_id)


@_FOLDS.on(DeployStarted)
def _started(state: MemoryState, event: DeployStarted) -> None:
    p = event.payload
    doc = state._doc(p.deployment_id)
    doc.update(
        service_id=p.service_id,
        version_id=p.version_id,
        target=p.target,
        image=p.image,
        digest=p.digest,
        namespace=p.namespace,
        application=p.application,
        kind=p.kind,
    )
    if doc["status"] not in DEPLOY_TERMINAL_STATUSES:
        doc["status"] = "running"


@_FOLDS.on(DeploySucceeded, DeployFailed, DeploySkipped)
def _finished(state: MemoryState, event: Event) -> None:
    p: Any = event.payload
    doc = state._doc(p.deployment_id)
    if doc["status"] in DEPLOY_TERMINAL_STATUSES:
        return
    doc["service_id"] = p.service_id
    doc["status"] = {"DeploySucceeded": "success", "DeployFailed": "failed"}.get(event.type, "skipped")
    doc["finished_at"] = event.occurred_at
    doc["_order"] = next(_ORDER)


class MongoState(MemoryState):
    """Memory first, then the projector's read models."""

    def __init__(self, store: ReadModelStore) -> None:
        super().__init__()
        self.store = store

    async def version(self, version_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.store.versions.find_one, {"_id": version_id})

    async def service(self, service_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.store.services.find_one, {"_id": service_id})

    async def finished(self, deployment_id: str) -> bool:
        if await super().finished(deployment_id):
            return True
        doc = await asyncio.to_thread(self.store.deployments.find_one, {"_id": deployment_id}, {"status": 1})
        return bool(doc and doc.get("status") in DEPLOY_TERMINAL_STATUSES)

    async def pinned(self, service_id: str, target: str) -> bool:
        if (service_id, target) in self.pins:
            return self.pins[(service_id, target)]
        doc = await asyncio.to_thread(self.store.targets.find_one, {"_id": f"{service_id}/{target}"})
        return bool(doc and doc.get("pinned"))

    async def unfinished(self, before: datetime) -> list[dict[str, Any]]:
        query = {
            "$or": [
                {"status": "running", "requested_at": {"$lt": before}},
                {"status": "requested", "requested_at": {"$lt": before - QUEUED_GRACE}},
            ]
        }
        docs = await asyncio.to_thread(lambda: list(self.store.deployments.find(query).limit(100)))
        return [d for d in docs if self.deployments.get(d["_id"], {}).get("status") not in DEPLOY_TERMINAL_STATUSES]

    async def successes(self, service_id: str, target: str | None = None) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"service_id": service_id, "status": "success"}
        if target is not None:
            query["target"] = target
        docs = await asyncio.to_thread(lambda: list(self.store.deployments.find(query).limit(200)))
        merged = {d["_id"]: d for d in docs if d.get("digest")}
        merged.update({d["_id"]: d for d in self._memory_successes(service_id, target)})
        return _newest_first(list(merged.values()))


def _lost(d: dict[str, Any], before: datetime) -> bool:
    at = d.get("requested_at")
    if at is None:
        return False
    return (d.get("status") == "running" and at < before) or (
        d.get("status") == "requested" and at < before - QUEUED_GRACE
    )


def _newest_first(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    epoch = datetime.min.replace(tzinfo=UTC)

    def when(d: dict[str, Any]) -> tuple[datetime, int]:
        t = d.get("finished_at") or epoch
        return (t if t.tzinfo else t.replace(tzinfo=UTC)), int(d.get("_order") or 0)

    return sorted(docs, key=when, reverse=True)
