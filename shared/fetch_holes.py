"""Consumers wait out a hole in a partition's offsets instead of skipping past it.

Tansu (the local stack's broker, 0.6 on S3) produces in two steps: it advances the partition's high
watermark (a conditional put), then writes the record batch as an object under the offset it took.
A fetch lists the batch objects below the high watermark and returns those from the fetch offset on.
So while producer A's batch at offset 100 is still being written and producer B's at 101 is already
there, a fetch at 100 gets the batch at 101: the consumer moves past 100, and A's record — which A
was told is stored — is never delivered to it (Faust then commits past it as a "gap"). Partitions with
several producers (fornax.versions: gateway, projector and builder) are exposed; one such skipped
VersionRequested is a push answered 202 that never becomes a version.

Kafka itself never hands out offsets past a hole like that (a fetch stops at the first missing offset),
and our topics are not compacted, so a first batch whose base offset is above the fetch offset means a
batch still being written. `install(wait)` makes aiokafka's fetcher — which Faust's consumers use too —
hand out a fetch's records only up to such a hole (at its start, or between two of its batches): the
position stays at the hole and the next fetch asks again. A hole still there
after `wait` seconds is one that stays (the broker died between the two steps; that batch was never
acknowledged to its producer): the consumer logs it and moves on, as it did before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

_state: dict[str, Any] = {"wait": 0.0, "installed": False}
_first_seen: dict[tuple[Any, int], float] = {}  # (partition, fetch offset) -> when its hole was first seen
holes_waited = 0  # statistics (tests, benchmarks): fetches held back because of a hole
holes_skipped = 0  # holes that outlasted the wait


class _Contiguous:
    """One fetch's record batches, handed out only up to the first hole that is being waited out."""

    def __init__(self, partition_records: Any, batches: Any) -> None:
        self._pr = partition_records
        self._batches = batches
        self._next: Any = None

    def has_next(self) -> bool:
        if self._next is None:
            if not self._batches.has_next():
                return False
            self._next = self._batches.next_batch()
        # Every record before this batch has been handed out, so next_fetch_offset is where it should start.
        return not hole_ahead(self._pr._tp, self._pr.next_fetch_offset, self._next.base_offset)

    def next_batch(self) -> Any:
        batch, self._next = self._next, None
        return batch


def hole_ahead(tp: Any, fetch_offset: int, base_offset: int, now: float | None = None) -> bool:
    """True while the batch returned for `fetch_offset` starts past it and the wait has not run out."""
    global holes_waited, holes_skipped
    key = (tp, fetch_offset)
    if base_offset <= fetch_offset:
        _first_seen.pop(key, None)
        return False
    now = time.monotonic() if now is None else now
    first = _first_seen.setdefault(key, now)
    if now - first < _state["wait"]:
        holes_waited += 1
        return True
    _first_seen.pop(key, None)
    holes_skipped += 1
    log.warning("%s: offsets %d..%d still absent after %.1f s; reading on from %d",
                tp, fetch_offset, base_offset - 1, now - first, base_offset)
    return False


def install(wait_seconds: float) -> None:
    """Guard every aiokafka consumer in this process (idempotent; the last wait given counts; 0: off)."""
    from aiokafka.consumer import fetcher

    _state["wait"] = float(wait_seconds)
    if _state["installed"]:
        return
    cls = fetcher.PartitionRecords
    unpack = cls._unpack_records

    def guarded(self: Any) -> Iterator[Any]:
        if _state["wait"] > 0:
            # Stops before a hole: the position stays at its first offset, which is fetched again.
            self._records = _Contiguous(self, self._records)
        yield from unpack(self)

    setattr(cls, "_unpack_records", guarded)  # noqa: B010 - a deliberate, contained patch
    _state["installed"] = True
