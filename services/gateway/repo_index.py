"""Which services a webhook's repository URLs belong to, with their webhook secrets.

The webhook hot path must not hit Mongo on every delivery: a snapshot of every live service's
normalized repository URL (and secret) is kept for `ttl` seconds. A URL missing from the snapshot makes
a new scan that starts after the request arrived (so a just-created service is found at once), and a
secret that fails to verify is re-read before giving up (so a rotated secret works at once).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from .io import db_call
from .webhooks import normalize_url


@dataclass(frozen=True)
class HookTarget:
    service_id: str
    user_id: str
    repo_url: str
    secret: str | None


class RepoIndex:
    def __init__(self, store: Any, ttl: float = 2.0) -> None:
        self.store = store
        self.ttl = ttl
        self._built = -1e9
        self._started = -1e9
        self._by_url: dict[str, list[HookTarget]] = {}
        self._lock = asyncio.Lock()
        self._normal: dict[str, str] = {}

    def _read(self, query: dict[str, Any]) -> list[HookTarget]:
        # (project the whole sub-document: nx-27017 returns dotted projections as flat keys)
        services = list(self.store.services.find(query, {"repository": 1, "user_id": 1}))
        ids = [s["_id"] for s in services]
        secrets = (
            {
                d["_id"]: d.get("webhook_secret")
                for d in self.store.secrets.find({"_id": {"$in": ids}}, {"webhook_secret": 1})
            }
            if ids
            else {}
        )
        return [
            HookTarget(
                s["_id"],
                str(s.get("user_id", "")),
                str((s.get("repository") or {}).get("url", "")),
                secrets.get(s["_id"]),
            )
            for s in services
            if (s.get("repository") or {}).get("url")
        ]

    async def _refresh(self, unless_started_after: float | None = None) -> None:
        async with self._lock:
            if unless_started_after is not None:
                if self._started >= unless_started_after:
                    return  # a scan that began after the caller arrived already ran: it saw everything
            elif time.monotonic() - self._built < self.ttl:
                return  # another request refreshed it meanwhile
            started = time.monotonic()
            targets = await db_call(self._read, {"deleted": {"$ne": True}})
            by_url: dict[str, list[HookTarget]] = {}
            for t in targets:
                by_url.setdefault(normalize_url(t.repo_url), []).append(t)
            self._by_url, self._built, self._started = by_url, time.monotonic(), started

    def _normalized(self, url: str) -> str:
        key = self._normal.get(url)
        if key is None:  # (the same few URLs arrive with every push: remember their keys)
            if len(self._normal) >= 10_000:
                self._normal.clear()
            key = self._normal[url] = normalize_url(url)
        return key

    def _match(self, urls: tuple[str, ...]) -> list[HookTarget]:
        found: dict[str, HookTarget] = {}
        for url in urls:
            for t in self._by_url.get(self._normalized(url), ()):
                found.setdefault(t.service_id, t)
        return list(found.values())

    async def lookup(self, urls: tuple[str, ...]) -> list[HookTarget]:
        """The live services whose repository URL matches one of `urls` (normalized)."""
        arrived = time.monotonic()
        if arrived - self._built >= self.ttl:
            await self._refresh()
        found = self._match(urls)
        if not found:
            # Maybe a service newer than the snapshot: rescan (concurrent misses share one scan).
            await self._refresh(unless_started_after=arrived)
            found = self._match(urls)
        return found

    async def fresh_secrets(self, targets: list[HookTarget]) -> list[HookTarget]:
        """The same targets with their secrets re-read from the store (bypassing the snapshot)."""
        ids = [t.service_id for t in targets]

        def read() -> dict[str, Any]:
            return {
                d["_id"]: d.get("webhook_secret")
                for d in self.store.secrets.find({"_id": {"$in": ids}}, {"webhook_secret": 1})
            }

        secrets = await db_call(read)
        return [HookTarget(t.service_id, t.user_id, t.repo_url, secrets.get(t.service_id)) for t in targets]
