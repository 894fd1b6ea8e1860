"""The webhook's repository lookup against an in-memory store: one indexed equality query per lookup
(never a scan of the services), misses not cached, concurrent lookups sharing one query."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

from services.gateway.repo_index import RepoIndex, backfill, hook_fields, lookup_queries
from shared.secretbox import SecretBox, new_key
from shared.settings import Settings


class _Collection:
    """Documents in a list; every find() filter is recorded (equality, $in, $ne and $exists only)."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs
        self.queries: list[dict[str, Any]] = []
        self.gate = threading.Event()
        self.gate.set()

    def _matches(self, doc: dict[str, Any], query: dict[str, Any]) -> bool:
        for field, cond in query.items():
            value = doc.get(field)
            if isinstance(cond, dict):
                if "$in" in cond and value not in cond["$in"]:
                    return False
                if "$ne" in cond and value == cond["$ne"]:
                    return False
                if "$exists" in cond and (field in doc) != cond["$exists"]:
                    return False
            elif value != cond:
                return False
        return True

    def find(self, query: dict[str, Any], projection: Any = None) -> list[dict[str, Any]]:
        self.queries.append(query)
        self.gate.wait(5)
        return [dict(d) for d in self.docs if self._matches(d, query)]

    def find_one(self, query: dict[str, Any], projection: Any = None) -> dict[str, Any] | None:
        found = self.find(query)
        return found[0] if found else None

    def update_one(self, query: dict[str, Any], update: dict[str, Any]) -> None:
        for d in self.docs:
            if self._matches(d, query):
                d.update(update["$set"])
                return


def _store(key: str | None = None) -> Any:
    box = SecretBox(key)
    secrets = [
        {"_id": f"s{i}", "webhook_secret": box.seal(f"secret-{i}"), **hook_fields("alice", f"https://git.example/a/r{i}.git")}
        for i in range(50)
    ]
    return SimpleNamespace(
        settings=Settings(secrets_key=key), secrets=_Collection(secrets), services=_Collection([])
    )


async def test_a_lookup_is_indexed_equality_queries_even_for_an_unknown_repository() -> None:
    store = _store()
    index = RepoIndex(store)
    assert await index.lookup(("https://nobody.example/x/y.git",)) == []
    assert await index.lookup(("https://nobody.example/x/y",)) == []  # a miss is asked again, not cached
    found = await index.lookup(("https://GIT.example/a/r7/", "git@git.example:a/r7.git"))
    assert [(t.service_id, t.user_id, t.secret) for t in found] == [("s7", "alice", "secret-7")]
    lookups = [q for q in store.secrets.queries if not isinstance(q.get("repo_key"), dict)]
    assert lookups == [
        *lookup_queries(["https://nobody.example/x/y"]),
        *lookup_queries(["https://nobody.example/x/y"]),
        *lookup_queries(["git@git.example:a/r7", "https://git.example/a/r7"]),
    ]
    assert all(set(q) == {"repo_key"} and isinstance(q["repo_key"], str) for q in lookups)  # equality only
    assert store.services.queries == []  # no scan of the services, for a hit or a miss


async def test_hits_are_cached_for_the_ttl_and_concurrent_lookups_share_one_query() -> None:
    store = _store(new_key())  # (secrets sealed at rest: the index opens them)
    index = RepoIndex(store, ttl=60)
    await index.lookup(("https://git.example/a/r1",))  # (the one-time back-fill happens here)
    store.secrets.queries.clear()
    store.secrets.gate.clear()
    urls = ("https://git.example/a/r2",)
    waiting = [asyncio.ensure_future(index.lookup(urls)) for _ in range(20)]
    await asyncio.sleep(0.1)
    store.secrets.gate.set()
    results = await asyncio.gather(*waiting)
    assert all(r[0].secret == "secret-2" for r in results)
    await index.lookup(urls)
    assert store.secrets.queries == lookup_queries(["https://git.example/a/r2"])


def test_backfill_gives_older_documents_their_lookup_key() -> None:
    store = SimpleNamespace(
        secrets=_Collection([{"_id": "old", "webhook_secret": "x"}, {"_id": "gone", "webhook_secret": "y"}]),
        services=_Collection(
            [
                {"_id": "old", "user_id": "bob", "repository": {"url": "https://Git.Example/b/old.git"}},
                {"_id": "gone", "user_id": "bob", "deleted": True, "repository": {"url": "https://x/y"}},
            ]
        ),
    )
    assert backfill(store) == 1
    assert store.secrets.docs[0]["repo_key"] == "https://git.example/b/old"
    assert "repo_key" not in store.secrets.docs[1]
