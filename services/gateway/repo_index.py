"""Which services a webhook's repository URLs belong to, with their webhook secrets.

Each service's normalized repository URL (`repo_key`), owner and URL are kept beside its webhook secret
in the gateway's `secrets` document, with an index on `repo_key`: a delivery costs an indexed equality
query per distinct URL key of its payload, never a scan of every service, also for a repository nobody
registered. Found answers are kept for `ttl` seconds (the same few repositories push again and
again); a miss is never cached (a just-created service is found at once) and concurrent lookups of the
same URLs share one query. A secret that fails to verify is re-read before giving up (rotated secrets
work at once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from shared.secretbox import SecretBox
from shared.store import ReadModelStore

from .io import db_call
from .webhooks import normalize_url

log = logging.getLogger(__name__)

_FIELDS = {"webhook_secret": 1, "user_id": 1, "repo_url": 1}


@dataclass(frozen=True)
class HookTarget:
    service_id: str
    user_id: str
    repo_url: str
    secret: str | None


def hook_fields(user_id: str, url: str) -> dict[str, str]:
    """What the secrets document holds for the webhook lookup of a service at `url`."""
    return {"user_id": user_id, "repo_url": url, "repo_key": normalize_url(url)}


def lookup_queries(keys: list[str]) -> list[dict[str, Any]]:
    """The queries a lookup makes: one equality match on the indexed `repo_key` per distinct key (a
    payload names the repository by 1-3 distinct URLs). Equality, not `$in`: nx-27017 answers `$in`
    on a secondary index with a full scan (its explain says so), equality with an index search."""
    return [{"repo_key": key} for key in keys]


class RepoIndex:
    def __init__(self, store: ReadModelStore, ttl: float = 2.0, max_cached: int = 10_000) -> None:
        self.store = store
        self.ttl = ttl
        self.max_cached = max_cached
        self.box = SecretBox.of(store.settings)
        self._hits: dict[tuple[str, ...], tuple[float, list[HookTarget]]] = {}
        self._running: dict[tuple[str, ...], asyncio.Future[list[HookTarget]]] = {}
        self._normal: dict[str, str] = {}
        self._backfilled = False

    def _target(self, doc: dict[str, Any]) -> HookTarget:
        return HookTarget(
            doc["_id"],
            str(doc.get("user_id", "")),
            str(doc.get("repo_url", "")),
            self.box.open(doc.get("webhook_secret")),
        )

    def _read(self, keys: list[str]) -> list[HookTarget]:
        if not self._backfilled:
            backfill(self.store)
            self._backfilled = True
        found = {d["_id"]: d for q in lookup_queries(keys) for d in self.store.secrets.find(q, _FIELDS)}
        return [self._target(d) for d in found.values()]

    def _normalized(self, url: str) -> str:
        key = self._normal.get(url)
        if key is None:  # (the same few URLs arrive with every push: remember their keys)
            if len(self._normal) >= 10_000:
                self._normal.clear()
            key = self._normal[url] = normalize_url(url)
        return key

    async def lookup(self, urls: tuple[str, ...]) -> list[HookTarget]:
        """The live services whose repository URL matches one of `urls` (normalized)."""
        keys = tuple(sorted({self._normalized(u) for u in urls}))
        if not keys:
            return []
        hit = self._hits.get(keys)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        running = self._running.get(keys)
        if running is not None:
            return await asyncio.shield(running)
        fut: asyncio.Future[list[HookTarget]] = asyncio.get_running_loop().create_future()
        self._running[keys] = fut
        try:
            found = await db_call(self._read, list(keys))
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # (retrieved: the waiters, if any, get it too)
            raise
        finally:
            self._running.pop(keys, None)
        fut.set_result(found)
        if found:
            if len(self._hits) >= self.max_cached:
                self._hits.clear()
            self._hits[keys] = (time.monotonic() + self.ttl, found)
        return found

    async def fresh_secrets(self, targets: list[HookTarget]) -> list[HookTarget]:
        """The same targets with their secrets re-read from the store (bypassing the cache)."""
        ids = [t.service_id for t in targets]

        def read() -> dict[str, Any]:
            return {d["_id"]: d.get("webhook_secret") for d in self.store.secrets.find({"_id": {"$in": ids}}, _FIELDS)}

        secrets = await db_call(read)
        return [
            HookTarget(t.service_id, t.user_id, t.repo_url, self.box.open(secrets.get(t.service_id))) for t in targets
        ]


def backfill(store: ReadModelStore) -> int:
    """Give older secrets documents (written before `repo_key`) their lookup fields, from the services
    read model; deleted services' documents are left alone. Runs once per gateway process."""
    done = 0
    for sec in store.secrets.find({"repo_key": {"$exists": False}}, {"_id": 1}):
        service = store.services.find_one({"_id": sec["_id"], "deleted": {"$ne": True}})
        url = ((service or {}).get("repository") or {}).get("url")
        if url:
            store.secrets.update_one(
                {"_id": sec["_id"], "repo_key": {"$exists": False}},
                {"$set": hook_fields(str(service.get("user_id", "")), str(url))},  # type: ignore[union-attr]
            )
            done += 1
    if done:
        log.info("secrets: added the webhook lookup fields to %d older documents", done)
    return done
