"""Resolving a queued deploy or rollback to the exact image to run: the service, the version's (or the
earlier deployment's) image and digest, read from the read model, waiting briefly for the projector."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from shared.events import Event, RollbackRequested
from shared.rollback import rollback_source

from .state import MemoryState
from .targets import DeployRequest


class Resolution(Exception):
    """The request cannot be carried out; the message is the DeployFailed reason."""


class Resolver:
    def __init__(self, state: MemoryState, timeout: float, projection_wait: float) -> None:
        self.state = state
        self.timeout = timeout
        self.projection_wait = projection_wait

    async def resolve(self, event: Event, target_name: str) -> tuple[DeployRequest, Any]:
        p: Any = event.payload
        image: Any
        digest: Any
        service = await self.wait_for(lambda: self.state.service(p.service_id), "name")
        if service is None:
            raise Resolution(f"service {p.service_id} not found")
        if isinstance(event, RollbackRequested):
            version_id, image, digest, namespace, application = await self._rollback_source(
                event, target_name
            )
            kind = "rollback"
        else:
            version_id, namespace, application, kind = p.version_id, p.namespace, p.application, p.kind
            image, digest = p.image, p.digest
            if not image or not digest:
                version = await self._version(p.service_id, version_id)
                image, digest = version.get("image"), version.get("digest")
        if not image:
            raise Resolution(f"version {version_id} has no pushed image to deploy")
        return DeployRequest(
            deployment_id=p.deployment_id,
            service_id=p.service_id,
            service_name=str(service["name"]),
            version_id=version_id,
            application=application or str(service["name"]),
            image=image,
            digest=digest,
            namespace=namespace,
            timeout=self.timeout,
            user_id=str(p.user_id or service.get("user_id") or ""),
        ), kind

    async def _rollback_source(self, event: RollbackRequested, target: str) -> tuple[str, Any, Any, Any, Any]:
        p = event.payload
        done = await self.state.successes(p.service_id, target)
        current = done[0] if done else {}
        if p.to_version_id:
            version = await self._version(p.service_id, p.to_version_id)
            return (
                p.to_version_id,
                version.get("image"),
                version.get("digest"),
                current.get("namespace"),
                current.get("application"),
            )
        earlier = rollback_source(done, target)
        if earlier is None:
            raise Resolution(
                f"nothing to roll back to: no earlier successful deployment on target {target!r}"
            )
        return (
            earlier["version_id"],
            earlier["image"],
            earlier["digest"],
            earlier.get("namespace"),
            earlier.get("application"),
        )

    async def _version(self, service_id: str, version_id: str) -> dict[str, Any]:
        version = await self.wait_for(
            lambda: self.state.version(version_id),
            "status",
            until=lambda v: v.get("status") in ("success", "failed", "cancelled"),
        )
        if version is None or version.get("service_id") != service_id:
            raise Resolution(f"version {version_id} not found for service {service_id}")
        if version.get("status") != "success":
            raise Resolution(
                f"version {version.get('name', version_id)} is {version.get('status')}, not success"
            )
        return version

    async def wait_for(
        self,
        fetch: Callable[[], Awaitable[dict[str, Any] | None]],
        key: str,
        until: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any] | None:
        """A read-model doc, waiting briefly for the projector to catch up with the event we react to."""
        deadline = asyncio.get_running_loop().time() + self.projection_wait
        doc = None
        while True:
            doc = await fetch()
            if doc is not None and doc.get(key) is not None and (until is None or until(doc)):
                return doc
            if asyncio.get_running_loop().time() > deadline:
                return doc
            await asyncio.sleep(0.2)
