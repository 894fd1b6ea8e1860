"""The fold registry: event type -> fold (a shared/routing.py Router), and the read models' timestamp format."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC

from ..events import Event
from ..routing import Router
from ..store import ReadModelStore


def _ts(e: Event) -> str:
    # Read-model times are ISO-8601 UTC strings: they sort correctly, and nx-27017 turns a datetime
    # written by `$set` on an existing document into a naive string, so one type everywhere is safer.
    at = e.occurred_at.astimezone(UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000).isoformat(timespec="milliseconds")


Fold = Callable[[ReadModelStore, Event], None]
FOLDS: Router[Fold] = Router("projections")  # FOLDS.dispatch(event, store) folds one event
folds = FOLDS.on
