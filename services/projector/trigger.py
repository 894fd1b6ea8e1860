"""Turns a verified push (PushReceived) into a version request; one delivery makes one version.

The delivery's reservation {_id: "delivery:<provider>/<delivery>/<service>", ref: version id,
emitted, event, at} keeps the planned VersionRequested until it is published, so a request the
broker did not take (down past the timeout, or the projector died in between) is published later,
the same event with the same ids (`unemitted`), instead of being lost after the push was answered 202.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from pymongo.errors import DuplicateKeyError

from shared.events import Event, EventDecodeError, VersionRequested, decode
from shared.events.versions import VersionRequestedPayload
from shared.store import ReadModelStore

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def version_name(branch: str, sha: str) -> str:
    """`main-1a2b3c4` from branch and commit; characters a tag cannot hold become '-'."""
    return f"{_UNSAFE.sub('-', branch).strip('-.') or 'branch'}-{sha[:7]}"


def _reserve_name(store: ReadModelStore, service_id: str, base: str, version_id: str) -> str:
    """Reserve the first free name base, base-2, base-3... (re-using our own earlier reservation)."""
    for n in range(1, 1000):
        name = base if n == 1 else f"{base}-{n}"
        key = f"version:{service_id}/{name}"
        try:
            store.reservations.insert_one({"_id": key, "ref": version_id})
            return name
        except DuplicateKeyError:
            existing = store.reservations.find_one({"_id": key}) or {}
            if existing.get("ref") == version_id:
                return name
    raise RuntimeError(f"no free version name for {base}")


def plan_version(store: ReadModelStore, push: Event) -> VersionRequested | None:
    """The VersionRequested for a push, or None (tag push, branch deletion, already handled)."""
    p: Any = push.payload
    if p.deleted or p.tag or not p.branch or not p.after or set(p.after) == {"0"}:
        return None
    key = f"delivery:{p.provider}/{p.delivery_id}/{p.service_id}"
    version_id = uuid.uuid5(uuid.NAMESPACE_URL, key).hex  # the same delivery always maps to one version
    try:
        store.reservations.insert_one({"_id": key, "ref": version_id, "emitted": False})
    except DuplicateKeyError:
        existing = store.reservations.find_one({"_id": key}) or {}
        if existing.get("emitted"):
            return None
        planned = _planned(existing)
        if planned is not None:
            return planned  # planned before, never published: the same event again
    name = _reserve_name(store, p.service_id, version_name(p.branch, p.after), version_id)
    payload = VersionRequestedPayload(
        service_id=p.service_id,
        user_id=p.user_id,
        name=name,
        description=(p.message or "")[:500],
        commit=p.after,
        branch=p.branch,
        trigger="webhook",
        delivery_id=p.delivery_id,
    )
    version = VersionRequested.make(version_id, payload, cause=push, actor=p.user_id, correlation_id=version_id)
    store.reservations.update_one({"_id": key}, {"$set": {"event": version.model_dump(mode="json"), "at": time.time()}})
    return version


def _planned(reservation: dict[str, Any]) -> VersionRequested | None:
    raw = reservation.get("event")
    if not isinstance(raw, dict):
        return None
    try:
        event = decode(raw)
    except EventDecodeError:
        return None
    return event if isinstance(event, VersionRequested) else None


def unemitted(store: ReadModelStore, older_than: float) -> list[tuple[str, VersionRequested]]:
    """Planned version requests not published for `older_than` seconds: (reservation id, event)."""
    docs = store.reservations.find({"emitted": False, "at": {"$lt": time.time() - older_than}})
    found = []
    for doc in docs:
        event = _planned(doc)
        if event is not None:
            found.append((doc["_id"], event))
    return found


def mark_reservation_emitted(store: ReadModelStore, key: str) -> None:
    store.reservations.update_one({"_id": key}, {"$set": {"emitted": True}})


def mark_emitted(store: ReadModelStore, push: Event) -> None:
    p: Any = push.payload
    store.reservations.update_one(
        {"_id": f"delivery:{p.provider}/{p.delivery_id}/{p.service_id}"}, {"$set": {"emitted": True}}
    )
