"""Which services a webhook's repository URLs belong to, with their webhook secrets.

The webhook hot path must not hit Mongo on every delivery: a snapshot of every live service's
normalized repository URL (and secret) is kept for `ttl` seconds. A URL missing from the snapshot is
looked up directly (so a just-created service is found at once), and a secret that fails to verify is
re-read before giving up (so a rotated secret works at once).
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


def _variants(urls: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for url in urls:
        for base in {url.strip(), normalize_url(url)}:
            for v in (base, base + ".git", base + "/", base + ".git/"):
                if v not in out:
                    out.append(v)
    return out


class RepoIndex:
    def __init__(self, store: Any, ttl: float = 2.0) -> None:
        self.store = store
        self.ttl = ttl
        self._built = -1e9
        self._by_url: dict[str, list[HookTarget]] = {}
        self._lock = asyncio.Lock()

    def _read(self, query: dict[str, Any]) -> list[HookTarget]:
        services = list(self.store.services.find(query, {"repository.url": 1, "user_id": 1}))
        ids = [s["_id"] for s in services]
        secrets = {d["_id"]: d.get("webhook_secret") for d in
                   self.store.secrets.find({"_id": {"$in": ids}}, {"webhook_secret": 1})} if ids else {}
        return [
            HookTarget(s["_id"], str(s.get("user_id", "")), str((s.get("repository") or {}).get("url", "")),
                       secrets.get(s["_id"]))
            for s in services
            if (s.get("repository") or {}).get("url")
        ]

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._built < self.ttl:
                return  # another request refreshed it meanwhile
            targets = await db_call(self._read, {"deleted": {"$ne": True}})
            by_url: dict[str, list[HookTarget]] = {}
            for t in targets:
                by_url.setdefault(normalize_url(t.repo_url), []).append(t)
            self._by_url, self._built = by_url, time.monotonic()

    async def lookup(self, urls: tuple[str, ...]) -> list[HookTarget]:
        """The live services whose repository URL matches one of `urls` (normalized)."""
        if time.monotonic() - self._built >= self.ttl:
            await self._refresh()
        found: dict[str, HookTarget] = {}
        for url in urls:
            for t in self._by_url.get(normalize_url(url), ()):
                found.setdefault(t.service_id, t)
        if not found:
            direct = await db_call(self._read, {"repository.url": {"$in": _variants(urls)},
                                                "deleted": {"$ne": True}})
            found = {t.service_id: t for t in direct}
        return list(found.values())

    async def fresh_secrets(self, targets: list[HookTarget]) -> list[HookTarget]:
        """The same targets with their secrets re-read from the store (bypassing the snapshot)."""
        ids = [t.service_id for t in targets]

        def read() -> dict[str, Any]:
            return {d["_id"]: d.get("webhook_secret")
                    for d in self.store.secrets.find({"_id": {"$in": ids}}, {"webhook_secret": 1})}

        secrets = await db_call(read)
        return [HookTarget(t.service_id, t.user_id, t.repo_url, secrets.get(t.service_id)) for t in targets]
