"""Folds events into the Mongo read models. Every fold is idempotent: it sets values taken from the
event (never from the clock), and status changes are guarded so a replayed or late event cannot move
a version or deployment backwards. Replaying one event or the whole log changes nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pymongo.errors import DuplicateKeyError

from ..events import Event
from ..store import PROJECTIONS, ReadModelStore
from . import deployments, services, versions  # noqa: F401  (importing them registers their folds)
from .registry import FOLDS

log = logging.getLogger(__name__)


def apply(store: ReadModelStore, event: Event, position: dict[str, Any] | None = None) -> None:
    """Fold one event into the read models, then archive it (log lines are archived elsewhere)."""
    if event.type in FOLDS and not fenced_off(store, event):
        FOLDS.dispatch(event, store)
    if event.type != "LogLine":
        archive(store, event, position)


def fenced_off(store: ReadModelStore, event: Event) -> bool:
    """True for a builder's result from a claim that was taken over (a newer epoch was seen for the
    version): archived, not folded. Otherwise the version remembers the newest epoch seen."""
    epoch = getattr(event.payload, "epoch", None)
    if epoch is None or event.TOPIC != "versions":
        return False
    # (find_one, not count_documents: a count is an aggregation, which a Mongo-wire server on SQLite
    # runs as a scan of the whole collection — once per builder event, it grew with every version.)
    if store.versions.find_one({"_id": event.aggregate_id, "epoch": {"$gt": epoch}}, {"_id": 1}) is not None:
        log.warning("%s %s from stale claim epoch %s: ignored", event.type, event.aggregate_id, epoch)
        return True
    for older in ({"$lt": epoch}, None):  # a smaller epoch, or none yet
        store.versions.update_one({"_id": event.aggregate_id, "epoch": older}, {"$set": {"epoch": epoch}})
    return False


def archive(store: ReadModelStore, event: Event, position: dict[str, Any] | None = None) -> None:
    doc = event.to_doc()
    if position:
        doc["_pos"] = position
    # When it was folded: a rebuild replays in this order, which is the order the read models saw (an
    # event's own occurred_at may be older than one folded before it: another producer, a clock skew).
    doc["_applied"] = time.time()
    try:
        store.events.insert_one(doc)
    except DuplicateKeyError:
        pass  # already archived: at-least-once delivery


# -- rebuild -----------------------------------------------------------------------------------
def rebuild(store: ReadModelStore, decode: Callable[[dict[str, Any]], Event]) -> int:
    """Drop every projection and fold the whole `events` archive again, in order. Returns the count."""
    for name in PROJECTIONS:
        store.drop(name)
    store.ensure_indexes()
    count = 0
    # Archives written before `_applied` existed have none: those sort first, by occurred_at.
    order = [("_applied", 1), ("occurred_at", 1), ("_pos.offset", 1)]
    for doc in store.events.find({}).sort(order):
        event = decode(doc)
        if event.type in FOLDS and not fenced_off(store, event):
            FOLDS.dispatch(event, store)
        count += 1
    return count
