"""Per-user resource quota across builder processes: an atomic reservation in Mongo.

Collection `quotas` (written only here): {_id: user_id, memory: MiB reserved, cpu: shares reserved,
versions: {<version key>: {version_id, memory, cpu, at}}}. A reservation is one
`find_one_and_update` whose filter requires enough free room and no reservation of that version yet,
with `$inc` on the totals — atomic on one document, so concurrent builders cannot overbook.
Limits: settings.memory_for_user / cpu_for_user. Reservations of versions that already ended
(status success|failed|cancelled in the `versions` projection, e.g. a worker died before releasing)
are reclaimed when someone would otherwise have to wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from shared.status import VERSION_TERMINAL_STATUSES


class QuotaExceeded(Exception):
    """The version asks for more than the user's whole quota: it can never run."""


def _key(version_id: str) -> str:
    return version_id.replace(".", "_").replace("$", "_")


def _limits(store: Any) -> tuple[int, int]:
    return int(store.settings.memory_for_user), int(store.settings.cpu_for_user)


def check_fits(store: Any, user_id: str, memory_mb: int, cpu: int) -> None:
    """QuotaExceeded when the demand is larger than the user's total quota."""
    total_mem, total_cpu = _limits(store)
    if memory_mb > total_mem or cpu > total_cpu:
        raise QuotaExceeded(
            f"the version needs {memory_mb} MiB memory and {cpu} CPU shares, more than the quota of user "
            f"{user_id} ({total_mem} MiB, {total_cpu} shares)"
        )


def _reserve(store: Any, user_id: str, version_id: str, memory_mb: int, cpu: int) -> bool:
    check_fits(store, user_id, memory_mb, cpu)
    total_mem, total_cpu = _limits(store)
    quotas = store.quotas
    key = _key(version_id)
    try:
        quotas.update_one({"_id": user_id}, {"$setOnInsert": {"memory": 0, "cpu": 0, "versions": {}}},
                          upsert=True)
    except DuplicateKeyError:
        pass  # created concurrently
    for attempt in range(2):
        if quotas.find_one({"_id": user_id, f"versions.{key}": {"$exists": True}}, {"_id": 1}):
            return True  # already reserved (a repeated call, or a resumed build)
        doc = quotas.find_one_and_update(
            {"_id": user_id, "memory": {"$lte": total_mem - memory_mb}, "cpu": {"$lte": total_cpu - cpu},
             f"versions.{key}": {"$exists": False}},
            {"$inc": {"memory": memory_mb, "cpu": cpu},
             "$set": {f"versions.{key}": {"version_id": version_id, "memory": memory_mb, "cpu": cpu,
                                          "at": time.time()}}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            return True
        if attempt == 0 and not _reclaim_finished(store, user_id):
            return False
    return False


def _release(store: Any, user_id: str, version_id: str) -> bool:
    key = _key(version_id)
    doc = store.quotas.find_one({"_id": user_id})  # no dotted projection: nx-27017 flattens it
    entry = ((doc or {}).get("versions") or {}).get(key)
    if not entry:
        return False
    res = store.quotas.update_one(
        {"_id": user_id, f"versions.{key}": {"$exists": True}},
        {"$inc": {"memory": -int(entry["memory"]), "cpu": -int(entry["cpu"])},
         "$unset": {f"versions.{key}": ""}},
    )
    return res.modified_count == 1


def _reclaim_finished(store: Any, user_id: str) -> bool:
    """Release reservations whose version already ended; True if any was released."""
    doc = store.quotas.find_one({"_id": user_id}) or {}
    freed = False
    for entry in (doc.get("versions") or {}).values():
        vid = entry.get("version_id")
        version = store.versions.find_one({"_id": vid}, {"status": 1}) if vid else None
        if version is not None and version.get("status") in VERSION_TERMINAL_STATUSES:
            freed = _release(store, user_id, vid) or freed
    return freed


async def reserve(store: Any, user_id: str, version_id: str, memory_mb: int, cpu: int) -> bool:
    """Reserve the version's demand: True when reserved (or already), False when it must wait;
    QuotaExceeded when it is more than the user's total."""
    return await asyncio.to_thread(_reserve, store, user_id, version_id, memory_mb, cpu)


async def release(store: Any, user_id: str, version_id: str) -> bool:
    """Give the version's reservation back (idempotent; True if something was released)."""
    return await asyncio.to_thread(_release, store, user_id, version_id)


def usage(store: Any, user_id: str) -> dict[str, Any]:
    """{memory, cpu, versions} currently reserved by the user."""
    doc = store.quotas.find_one({"_id": user_id}) or {}
    return {"memory": doc.get("memory", 0), "cpu": doc.get("cpu", 0),
            "versions": sorted(e["version_id"] for e in (doc.get("versions") or {}).values())}


async def acquire(store: Any, user_id: str, version_id: str, memory_mb: int, cpu: int, *,
                  on_wait: Callable[[str], Awaitable[None]] | None = None,
                  cancelled: asyncio.Event | None = None, poll: float = 0.5,
                  deadline: float | None = None) -> bool:
    """Wait until the reservation succeeds (True); `on_wait(reason)` is awaited once, when the version
    first has to wait. False if `cancelled` is set or `deadline` (time.monotonic()) passes first.
    Raises QuotaExceeded at once when the demand exceeds the user's total."""
    waited = False
    while True:
        if await reserve(store, user_id, version_id, memory_mb, cpu):
            return True
        if not waited and on_wait is not None:
            used = await asyncio.to_thread(usage, store, user_id)
            total_mem, total_cpu = _limits(store)
            await on_wait(
                f"waiting for quota: needs {memory_mb} MiB / {cpu} CPU shares; user {user_id} has "
                f"{total_mem - used['memory']} MiB / {total_cpu - used['cpu']} shares free"
            )
        waited = True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        if cancelled is not None:
            try:
                await asyncio.wait_for(cancelled.wait(), poll)
                return False
            except TimeoutError:
                continue
        await asyncio.sleep(poll)
