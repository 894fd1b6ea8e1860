"""What the builder reads and the little it writes itself: read models, secrets, heartbeats (claims).

`builder_heartbeats` {_id: version_id, worker, at (epoch seconds), takeovers, epoch, attempts}: the
worker building a version refreshes `at` every few seconds while it works on it (build → push → tag run as
one chain). Another worker may take a version over only when its heartbeat is older than `lost_after`
seconds (its owner died or stalled); the reaper then resumes it, and fails it ("worker lost") after
repeated takeovers. Claiming is one guarded upsert: atomic across builder processes.

Fencing: every claim increments the version's `epoch`, so (worker, epoch) names one claim. A worker
that stalled past `lost_after` and wakes up finds its claim gone (`holds` is false) and stops; its
events carry its epoch, so the projector and the other agents refuse them once a newer one exists.
`attempts` counts the builder processes that started work on the version (each once, by a per-process
token in `attempt_by`), before they do any of it: a version whose processing kills its worker (an
out-of-memory kill, say) shows more attempts than crashes it may cause, and is failed, not resumed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from shared import oauth
from shared.secretbox import SecretBox
from shared.status import VERSION_ACTIVE_STATUSES

from .vcs import RepoSpec


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
    # Unique per process: a restarted worker may get the same `worker` name (pid 1 in a container).
    incarnation: str = field(default_factory=lambda: uuid.uuid4().hex)

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

    async def active_versions(self) -> list[dict[str, Any]]:
        """The versions the read model shows pending, queued or running."""
        query = {"status": {"$in": list(VERSION_ACTIVE_STATUSES)}}
        return await asyncio.to_thread(lambda: list(self.store.versions.find(query)))

    async def cancelled(self, version_ids: list[str]) -> list[str]:
        """Of these versions, the ones the read model shows cancelled."""
        query = {"_id": {"$in": version_ids}, "status": "cancelled"}
        return await asyncio.to_thread(lambda: [d["_id"] for d in self.store.versions.find(query, {"_id": 1})])

    async def secrets(self, service_id: str) -> dict[str, Any]:
        """The service's secrets document, decrypted."""
        doc = await asyncio.to_thread(self.store.secrets.find_one, {"_id": service_id})
        return SecretBox.of(self.store.settings).open_doc(doc) or {}

    async def repo_spec(self, service: dict[str, Any], repository: dict[str, Any] | None = None) -> RepoSpec:
        repo = repository or service.get("repository") or {}
        sec = await self.secrets(service["_id"])
        if repo.get("oauth"):
            return RepoSpec(url=str(repo.get("url", "")), vcs=str(repo.get("vcs", "git")),
                            username=oauth.STYLES[repo["oauth"]].clone_username,
                            token=await self.oauth_token(service, repo["oauth"]))
        return RepoSpec(
            url=str(repo.get("url", "")),
            vcs=str(repo.get("vcs", "git")),
            username=repo.get("username"),
            password=sec.get("repo_password"),
            token=sec.get("repo_token"),
        )

    async def oauth_token(self, service: dict[str, Any], provider: str) -> str | None:
        """The service owner's OAuth token for `provider` (decrypted), or None (not connected)."""
        user = service.get("user_id") or ((await self.service(service["_id"])) or {}).get("user_id")
        if not user or provider not in oauth.STYLES:
            return None
        try:
            return await asyncio.to_thread(oauth.load_token, self.store, self.store.settings, user, provider)
        except oauth.TokensUnavailable:
            return None

    async def secret_values(self, service_id: str) -> list[str]:
        sec = await self.secrets(service_id)
        service = await self.service(service_id) or {}
        provider = (service.get("repository") or {}).get("oauth")
        token = await self.oauth_token(service, provider) if provider else None
        return [
            v
            for v in (sec.get("repo_password"), sec.get("repo_token"), token,
                      *(sec.get("values") or {}).values())
            if isinstance(v, str) and v
        ]

    async def next_log_seq(self, version_id: str) -> int:
        def read() -> int:
            doc = self.store.logs.find_one({"version_id": version_id}, {"seq": 1}, sort=[("seq", -1)])
            return int(doc["seq"]) + 1 if doc else 1

        return await asyncio.to_thread(read)

    # -- heartbeats / claims -------------------------------------------------------------------------
    def _claim(self, version_id: str) -> int | None:
        now = time.time()
        query = {
            "_id": version_id,
            "$or": [{"worker": self.worker}, {"worker": None}, {"at": {"$lt": now - self.lost_after}}],
            "state": {"$nin": ["done"]},  # ended: never claimed again ($nin: nx-27017 and $ne on a missing field)
        }
        try:
            self.store.builder_heartbeats.update_one(
                query, {"$set": {"worker": self.worker, "at": now}}, upsert=True
            )
        except DuplicateKeyError:  # another live worker holds it
            return None
        # Then a new epoch for this claim, read back as stored (what `holds` compares with). A takeover
        # in between would need this fresh heartbeat to be older than lost_after already.
        doc = self.store.builder_heartbeats.find_one_and_update(
            {"_id": version_id, "worker": self.worker}, {"$inc": {"epoch": 1}}, return_document=ReturnDocument.AFTER
        )
        return int(doc.get("epoch") or 1) if doc else None

    async def claim(self, version_id: str) -> int | None:
        """Own the version unless another live worker does (atomic): the claim's epoch, or None."""
        return await asyncio.to_thread(self._claim, version_id)

    async def lost_claims(self, epochs: dict[str, int]) -> set[str]:
        """Of these claims (version id -> epoch), the ones this worker no longer holds."""
        if not epochs:
            return set()
        docs = await asyncio.to_thread(
            lambda: list(self.store.builder_heartbeats.find({"_id": {"$in": list(epochs)}}))
        )
        held = {d["_id"] for d in docs if d.get("worker") == self.worker and d.get("epoch") == epochs[d["_id"]]}
        return set(epochs) - held

    async def holds(self, version_id: str, epoch: int) -> bool:
        return not await self.lost_claims({version_id: epoch})

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

    def _start_attempt(self, version_id: str) -> int:
        coll = self.store.builder_heartbeats
        doc = coll.find_one_and_update(
            # $nin, not $ne: nx-27017 does not match a missing field with $ne in find_one_and_update.
            {"_id": version_id, "attempt_by": {"$nin": [self.incarnation]}},
            {"$inc": {"attempts": 1}, "$set": {"attempt_by": self.incarnation}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:  # counted already by this process (or not claimed: nothing to count)
            doc = coll.find_one({"_id": version_id}) or {}
        return int(doc.get("attempts", 0))

    async def record_emitted(self, version_id: str, event_type: str) -> None:
        """Note on the claim that this version's `event_type` was published (acknowledged by the broker), so
        a worker that resumes the version after a crash does not publish it again while the read model
        has not shown it yet."""
        await asyncio.to_thread(
            self.store.builder_heartbeats.update_one, {"_id": version_id}, {"$set": {f"emitted_{event_type}": True}}
        )

    async def emitted(self, version_id: str, event_type: str) -> bool:
        key = f"emitted_{event_type}"
        doc = await asyncio.to_thread(self.store.builder_heartbeats.find_one, {"_id": version_id}, {key: 1})
        return bool((doc or {}).get(key))

    async def start_attempt(self, version_id: str) -> int:
        """Count this process starting work on the (claimed) version, once; returns how many
        processes did, this one included (the earlier ones died or stopped without finishing it)."""
        return await asyncio.to_thread(self._start_attempt, version_id)

    async def finish_claim(self, version_id: str, end: dict[str, Any] | None = None) -> None:
        """The version ended under this claim: its record stays, marked `state: done`, until the read model shows the
        end (the reaper drops it then). Deleting it at once let a reaper resume a version whose end was
        still on its way to the read model (the projector lagging or restarting): a second tag, a second
        result."""
        await asyncio.to_thread(
            self.store.builder_heartbeats.update_one,
            {"_id": version_id, "worker": self.worker},
            {"$set": {"state": "done", "at": time.time(), **({"end": end} if end is not None else {})}},
        )

    async def touch_done(self, version_id: str) -> None:
        """A done claim's end event was published again now (the reaper paces its retries by this)."""
        await asyncio.to_thread(
            self.store.builder_heartbeats.update_one,
            {"_id": version_id, "state": "done"},
            {"$set": {"at": time.time()}},
        )

    async def done_claims(self) -> list[str]:
        docs = await asyncio.to_thread(lambda: list(self.store.builder_heartbeats.find({"state": "done"}, {"_id": 1})))
        return [d["_id"] for d in docs]

    async def drop_claim(self, version_id: str) -> None:
        await asyncio.to_thread(self.store.builder_heartbeats.delete_one, {"_id": version_id, "state": "done"})

    async def heartbeat(self, version_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.store.builder_heartbeats.find_one, {"_id": version_id})
