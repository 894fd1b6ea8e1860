"""What the builder reads and the little it writes itself: read models, secrets, heartbeats (claims).

`builder_heartbeats` {_id: version_id, worker, at (epoch seconds), takeovers}: the worker building a
version refreshes `at` every few seconds while it works on it (build → push → tag run as one chain).
Another worker may take a version over only when its heartbeat is older than `lost_after` seconds
(its owner died); the reaper then resumes it, and fails it ("worker lost") after repeated takeovers.
Claiming is one guarded upsert: atomic across builder processes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from shared.secretbox import SecretBox

from .vcs import RepoSpec

TERMINAL = ("success", "failed", "cancelled")
ACTIVE = ("pending", "queued", "running")


def age_of(iso: str | None) -> float | None:
    """Seconds since an ISO-8601 read-model time (None if absent or unparsable)."""
    if not iso:
        return None
    try:
        at = datetime.fromisoformat(str(iso))
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (datetime.now(UTC) - at).total_seconds()


@dataclass
class BuilderState:
    store: Any
    worker: str
    lost_after: float = 30.0

    # -- read models -------------------------------------------------------------------------------
    async def version(self, version_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.store.versions.find_one, {"_id": version_id})

    async def wait_version(
        self, version_id: str, timeout: float = 10.0, until: Any = None
    ) -> dict[str, Any] | None:
        """The version doc, polling while the projector catches up (and until `until(doc)` holds)."""
        deadline = time.monotonic() + timeout
        doc = None
        while True:
            doc = await self.version(version_id)
            if doc is not None and (until is None or until(doc)):
                return doc
            if time.monotonic() >= deadline:
                return doc
            await asyncio.sleep(0.1)

    async def service(self, service_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.store.services.find_one, {"_id": service_id})

    async def secrets(self, service_id: str) -> dict[str, Any]:
        """The service's secrets document, decrypted."""
        doc = await asyncio.to_thread(self.store.secrets.find_one, {"_id": service_id})
        return SecretBox.of(self.store.settings).open_doc(doc) or {}

    async def repo_spec(self, service: dict[str, Any], repository: dict[str, Any] | None = None) -> RepoSpec:
        repo = repository or service.get("repository") or {}
        sec = await self.secrets(service["_id"])
        return RepoSpec(
            url=str(repo.get("url", "")),
            vcs=str(repo.get("vcs", "git")),
            username=repo.get("username"),
            password=sec.get("repo_password"),
            token=sec.get("repo_token"),
        )

    async def secret_values(self, service_id: str) -> list[str]:
        sec = await self.secrets(service_id)
        return [
            v
            for v in (sec.get("repo_password"), sec.get("repo_token"), *(sec.get("values") or {}).values())
            if isinstance(v, str) and v
        ]

    async def next_log_seq(self, version_id: str) -> int:
        def read() -> int:
            doc = self.store.logs.find_one({"version_id": version_id}, {"seq": 1}, sort=[("seq", -1)])
            return int(doc["seq"]) + 1 if doc else 1

        return await asyncio.to_thread(read)

    # -- heartbeats / claims -------------------------------------------------------------------------
    def _claim(self, version_id: str) -> bool:
        now = time.time()
        query = {
            "_id": version_id,
            "$or": [{"worker": self.worker}, {"worker": None}, {"at": {"$lt": now - self.lost_after}}],
        }
        try:
            self.store.builder_heartbeats.update_one(
                query, {"$set": {"worker": self.worker, "at": now}}, upsert=True
            )
            return True
        except DuplicateKeyError:
            return False

    async def claim(self, version_id: str) -> bool:
        """Own the version unless another live worker does (atomic)."""
        return await asyncio.to_thread(self._claim, version_id)

    async def beat(self, version_ids: list[str]) -> None:
        if version_ids:
            await asyncio.to_thread(
                self.store.builder_heartbeats.update_many,
                {"_id": {"$in": version_ids}, "worker": self.worker},
                {"$set": {"at": time.time()}},
            )

    async def count_takeover(self, version_id: str) -> int:
        """Count one more takeover of the version (after claiming it); returns the new count."""
        doc = await asyncio.to_thread(
            self.store.builder_heartbeats.find_one_and_update,
            {"_id": version_id},
            {"$inc": {"takeovers": 1}},
            return_document=True,
        )
        return int((doc or {}).get("takeovers", 1))

    async def forget(self, version_id: str) -> None:
        await asyncio.to_thread(self.store.builder_heartbeats.delete_one, {"_id": version_id})

    async def heartbeat(self, version_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.store.builder_heartbeats.find_one, {"_id": version_id})
