"""Deploy handlers: plain async functions of a `Deployer`, called by the thin Faust agents.

Flow per request: resolve the exact image (version's digest, or for a rollback the earlier
deployment's digest) -> DeployStarted -> target adapter -> DeploySucceeded | DeployFailed.
- One runner per (service, target): deploys to one target never overlap; a request still waiting
  when a newer one arrives is skipped as superseded.
- Automatic deploys (config `deploy` section) skip a pinned target; a rollback pins its target; an
  explicit deploy (or POST .../unpin) unpins it.
- Idempotent: a request whose deployment already finished, or is queued/running here, is ignored.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from shared.bus import BusUnavailable
from shared.events import (
    DeployFailed,
    DeployRequested,
    DeploySkipped,
    DeployStarted,
    DeploySucceeded,
    Event,
    RollbackRequested,
    TargetPinChanged,
    VersionSucceeded,
    utcnow,
)
from shared.events.deploys import (
    DeployFailedPayload,
    DeployRequestedPayload,
    DeploySkippedPayload,
    DeployStartedPayload,
    DeploySucceededPayload,
    TargetPinChangedPayload,
)
from shared.rollback import rollback_target
from shared.routing import Router

from .resolve import Resolution, Resolver
from .state import MemoryState
from .targets import DeployResult, Target

log = logging.getLogger(__name__)
Publish = Callable[..., Awaitable[None]]


@dataclass
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: Event | None = None
    runner: asyncio.Task[None] | None = None


def auto_deployment_id(version_id: str, cluster: str, partition: str | None, application: str) -> str:
    """Stable id: a redelivered VersionSucceeded asks for the same deployment again (then ignored)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"fornax-auto:{version_id}:{cluster}:{partition}:{application}").hex


class Deployer:
    def __init__(
        self,
        state: MemoryState,
        targets: dict[str, Target],
        publish: Publish,
        timeout: float = 120.0,
        projection_wait: float = 30.0,
    ) -> None:
        self.state = state
        self.targets = targets
        self._publish = publish
        self.timeout = timeout
        self.projection_wait = projection_wait
        self.resolver = Resolver(state, timeout, projection_wait)
        self.slots: dict[tuple[str, str], _Slot] = {}
        self.active: set[str] = set()
        # What the deployer does with each event it consumes (fornax.deploys and fornax.versions).
        self.routes: Router[Callable[[Any], Awaitable[None]]] = Router("deployer")
        self.routes.add(self.request_deploy, DeployRequested)
        self.routes.add(self.request_rollback, RollbackRequested)
        self.routes.add(self.fold, DeployStarted, DeploySucceeded, DeployFailed, DeploySkipped, TargetPinChanged)
        self.routes.add(self.on_version_succeeded, VersionSucceeded)

    async def emit(self, *events: Event) -> None:
        """Publish (retrying a lost broker for a while: an outcome must not be dropped), then fold."""
        for attempt in range(8):
            try:
                await self._publish(*events)
                break
            except BusUnavailable:
                if attempt == 7:
                    raise
                log.warning("broker unavailable; retrying %s", ", ".join(e.type for e in events))
                await asyncio.sleep(min(0.5 * 2**attempt, 10))
        for e in events:
            self.state.fold(e)

    # -- entry points ------------------------------------------------------------------------------
    async def handle(self, event: Event) -> None:
        """Any consumed event, through `routes`: requests are queued, facts are folded, a succeeded
        version asks for its automatic deploys; other types are ignored."""
        await self.routes.adispatch(event)

    async def on_deploy_event(self, event: Event) -> None:
        """Everything on fornax.deploys (`handle`)."""
        await self.handle(event)

    async def fold(self, event: Event) -> None:
        """A deploy fact (started, finished, skipped, pin changed): remembered at once."""
        self.state.fold(event)

    async def on_version_succeeded(self, event: Event) -> None:
        """A version with deploy specs: one automatic DeployRequested per spec, on fornax.deploys."""
        p: Any = event.payload
        if not p.deploy:
            return
        version = await self.resolver.wait_for(lambda: self.state.version(event.aggregate_id), "service_id")
        if version is None:
            log.error(
                "VersionSucceeded for unknown version %s: automatic deploys dropped", event.aggregate_id
            )
            return
        for spec in p.deploy:
            deployment_id = auto_deployment_id(
                event.aggregate_id, spec.cluster, spec.partition, spec.application
            )
            if await self._seen(deployment_id):
                continue  # a redelivered VersionSucceeded: that deploy already ran (or runs)
            payload = DeployRequestedPayload(
                deployment_id=deployment_id,
                service_id=version["service_id"],
                user_id=version.get("user_id") or event.actor or "",
                version_id=event.aggregate_id,
                target=spec.cluster,
                namespace=spec.partition,
                application=spec.application,
                kind="auto",
                image=p.image or version.get("image"),
                digest=p.digest or version.get("digest"),
            )
            await self._publish(
                DeployRequested.make(
                    version["service_id"], payload, cause=event, actor=version.get("user_id") or event.actor
                )
            )

    async def request_deploy(self, event: DeployRequested) -> None:
        p = event.payload
        log.info(
            "deploy %s requested: %s of version %s to %s (%.3fs after the request)",
            p.deployment_id,
            p.kind,
            p.version_id,
            p.target,
            (utcnow() - event.occurred_at).total_seconds(),
        )
        if await self._seen(p.deployment_id):
            return
        if p.target not in self.targets:
            await self._fail(
                event, p.service_id, f"unknown target {p.target!r}: not configured on the server"
            )
            return
        if p.kind == "auto" and await self.state.pinned(p.service_id, p.target):
            await self.emit(
                DeploySkipped.make(
                    p.service_id,
                    DeploySkippedPayload(
                        deployment_id=p.deployment_id,
                        service_id=p.service_id,
                        version_id=p.version_id,
                        target=p.target,
                        reason=f"target {p.target!r} is pinned after a rollback; deploy explicitly or unpin",
                    ),
                    cause=event,
                )
            )
            return
        if p.kind == "deploy" and await self.state.pinned(p.service_id, p.target):
            await self.emit(
                TargetPinChanged.make(
                    p.service_id,
                    TargetPinChangedPayload(
                        service_id=p.service_id,
                        target=p.target,
                        pinned=False,
                        reason=f"explicit deploy {p.deployment_id}",
                    ),
                    cause=event,
                )
            )
        await self._enqueue((p.service_id, p.target), event)

    async def request_rollback(self, event: RollbackRequested) -> None:
        p = event.payload
        if await self._seen(p.deployment_id):
            return
        target = p.target
        if target is None:
            target = rollback_target(await self.state.successes(p.service_id))
            if target is None:
                await self._fail(
                    event, p.service_id, "nothing to roll back: the service has no successful deployment"
                )
                return
        if target not in self.targets:
            await self._fail(event, p.service_id, f"unknown target {target!r}: not configured on the server")
            return
        await self.emit(
            TargetPinChanged.make(
                p.service_id,
                TargetPinChangedPayload(
                    service_id=p.service_id,
                    target=target,
                    pinned=True,
                    reason=f"rolled back by deployment {p.deployment_id}",
                ),
                cause=event,
            )
        )
        await self._enqueue((p.service_id, target), event, target)

    # -- queueing ----------------------------------------------------------------------------------
    async def _seen(self, deployment_id: str) -> bool:
        return deployment_id in self.active or await self.state.finished(deployment_id)

    async def _enqueue(self, key: tuple[str, str], event: Event, target: str | None = None) -> None:
        slot = self.slots.setdefault(key, _Slot())
        older = slot.pending
        slot.pending = event if target is None else _with_target(event, target)
        self.active.add(event.payload.deployment_id)
        if older is not None:
            self.active.discard(older.payload.deployment_id)
            op: Any = older.payload
            await self.emit(
                DeploySkipped.make(
                    op.service_id,
                    DeploySkippedPayload(
                        deployment_id=op.deployment_id,
                        service_id=op.service_id,
                        version_id=getattr(op, "version_id", None)
                        or getattr(op, "to_version_id", None)
                        or "",
                        target=key[1],
                        reason=f"superseded by deployment {event.payload.deployment_id}",
                    ),
                    cause=older,
                )
            )
        if slot.runner is None or slot.runner.done():
            slot.runner = asyncio.create_task(self._drain(key, slot))

    async def _drain(self, key: tuple[str, str], slot: _Slot) -> None:
        async with slot.lock:
            while slot.pending is not None:
                event, slot.pending = slot.pending, None
                try:
                    await self.run(event, key[1])
                except Exception:  # one failed deploy must not stop the target's queue
                    log.exception("deploy %s failed unexpectedly", event.payload.deployment_id)
                finally:
                    self.active.discard(event.payload.deployment_id)

    async def idle(self) -> None:
        """Wait until every queued deploy finished (tests, shutdown)."""
        while any(s.runner and not s.runner.done() for s in self.slots.values()):
            await asyncio.gather(*(s.runner for s in self.slots.values() if s.runner), return_exceptions=True)

    async def sweep_lost(self) -> list[str]:
        """Fail deployments nobody finished (a deployer died mid-deploy): never `running` forever.

        A live deploy ends within its timeout (+30 s guard), after at most one queued predecessor."""
        horizon = 2 * (self.timeout + 30) + 30
        before = utcnow() - timedelta(seconds=horizon)
        failed = []
        for doc in await self.state.unfinished(before):
            if doc["_id"] in self.active or not doc.get("service_id"):
                continue
            await self.emit(
                DeployFailed.make(
                    doc["service_id"],
                    DeployFailedPayload(
                        deployment_id=doc["_id"],
                        service_id=doc["service_id"],
                        reason=f"deployer lost: no outcome within {horizon:.0f}s; check the target's state",
                    ),
                    actor=doc.get("actor"),
                )
            )
            failed.append(doc["_id"])
        return failed

    # -- one deploy --------------------------------------------------------------------------------
    async def run(self, event: Event, target_name: str) -> None:
        p: Any = event.payload
        try:
            req, kind = await self.resolver.resolve(event, target_name)
        except Resolution as exc:
            await self._fail(event, p.service_id, str(exc))
            return
        await self.emit(
            DeployStarted.make(
                p.service_id,
                DeployStartedPayload(
                    deployment_id=req.deployment_id,
                    service_id=req.service_id,
                    version_id=req.version_id,
                    target=target_name,
                    namespace=req.namespace,
                    application=req.application,
                    image=req.image,
                    digest=req.digest,
                    kind=kind,
                ),
                cause=event,
            )
        )
        log.info("deploy %s started: %s on %s", req.deployment_id, req.reference, target_name)
        target = self.targets[target_name]
        try:
            result = await asyncio.wait_for(target.deploy(req), req.timeout + 30)
        except TimeoutError:
            result = DeployResult.failure(
                f"timeout: target {target_name!r} did not answer within {req.timeout:g}s"
            )
        except Exception as exc:  # an adapter bug becomes a failed deploy, not a stuck one
            log.exception("target %s raised", target_name)
            result = DeployResult.failure(
                f"internal error in the {target_name!r} adapter: {type(exc).__name__}"
            )
        log.info(
            "deploy %s %s: %s",
            req.deployment_id,
            "succeeded" if result.ok else "failed",
            result.detail or result.reason,
        )
        if result.ok:
            await self.emit(
                DeploySucceeded.make(
                    p.service_id,
                    DeploySucceededPayload(
                        deployment_id=req.deployment_id, service_id=req.service_id, detail=result.detail
                    ),
                    cause=event,
                )
            )
        else:
            await self._fail(event, p.service_id, result.reason)

    async def _fail(self, cause: Event, service_id: str, reason: str) -> None:
        await self.emit(
            DeployFailed.make(
                service_id,
                DeployFailedPayload(
                    deployment_id=cause.payload.deployment_id, service_id=service_id, reason=reason
                ),
                cause=cause,
            )
        )


def _with_target(event: Event, target: str) -> Event:
    """A rollback request whose target was resolved (history's latest) before queueing."""
    return event.model_copy(update={"payload": event.payload.model_copy(update={"target": target})})
