"""The archived log of a version in Mongo `logs`, and the version's owner and status (blocking pymongo calls:
run them with `asyncio.to_thread`). Shared by the logstream and the gateway's REST log routes."""

from __future__ import annotations

from typing import Any

from shared.store import Store

TERMINAL = ("success", "failed", "cancelled")
LINE_FIELDS = ("seq", "stage", "stream", "text", "ts")
_PROJECTION = {"_id": 0, **{f: 1 for f in LINE_FIELDS}}


def line_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The wire form of one line: {seq, stage, stream, text, ts}."""
    return {f: doc.get(f) for f in LINE_FIELDS}


def read_lines(
    store: Store, version_id: str, since: int = 0, limit: int = 0, until: int | None = None
) -> list[dict[str, Any]]:
    """Archived lines with since < seq (<= until), in sequence order; `limit` 0 means all."""
    seq: dict[str, int] = {"$gt": since}
    if until is not None:
        seq["$lte"] = until
    cursor = store.logs.find({"version_id": version_id, "seq": seq}, _PROJECTION).sort("seq", 1)
    if limit:
        cursor = cursor.limit(limit)
    return [line_of(d) for d in cursor]


def count_lines(store: Store, version_id: str) -> int:
    return store.logs.count_documents({"version_id": version_id})


def version_info(store: Store, version_id: str) -> dict[str, Any] | None:
    """{user_id, service_id, status} of a version, or None when it is unknown."""
    return store.versions.find_one({"_id": version_id}, {"user_id": 1, "service_id": 1, "status": 1})


def statuses(store: Store, version_ids: list[str]) -> dict[str, str]:
    """Current status of each known version (one query, for the fallback poll)."""
    if not version_ids:
        return {}
    return {
        d["_id"]: d.get("status", "")
        for d in store.versions.find({"_id": {"$in": version_ids}}, {"status": 1})
    }
