"""shared/fetch_holes.py: a fetch whose first batch starts past the fetch offset is asked again, for a while."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from shared import fetch_holes


@pytest.fixture(autouse=True)
def _wait_two_seconds() -> Any:
    before = dict(fetch_holes._state)
    fetch_holes.install(2.0)
    yield
    fetch_holes._state["wait"] = before["wait"] if before["installed"] else 0.0
    fetch_holes._first_seen.clear()


def test_a_batch_at_or_before_the_fetch_offset_is_no_hole() -> None:
    assert not fetch_holes.hole_ahead("t-0", 100, 100, now=0.0)
    assert not fetch_holes.hole_ahead("t-0", 100, 97, now=0.0)  # the fetch offset is inside that batch


def test_a_hole_is_waited_out_then_read_past_once_the_wait_has_run_out() -> None:
    assert fetch_holes.hole_ahead("t-0", 100, 101, now=10.0)
    assert fetch_holes.hole_ahead("t-0", 100, 101, now=11.9)  # still within 2 s of the first sighting
    skipped = fetch_holes.holes_skipped
    assert not fetch_holes.hole_ahead("t-0", 100, 101, now=12.1)  # it stays: the broker never wrote it
    assert fetch_holes.holes_skipped == skipped + 1
    assert fetch_holes.hole_ahead("t-0", 100, 101, now=20.0)  # a new sighting waits again


def test_a_filled_hole_forgets_its_first_sighting() -> None:
    assert fetch_holes.hole_ahead("t-1", 5, 6, now=0.0)
    assert not fetch_holes.hole_ahead("t-1", 5, 5, now=0.5)  # the batch at 5 is there now
    assert ("t-1", 5) not in fetch_holes._first_seen


def test_off_when_the_wait_is_zero() -> None:
    fetch_holes.install(0)
    assert not fetch_holes.hole_ahead("t-2", 0, 50, now=0.0)


class _Batch:
    def __init__(self, base: int, count: int) -> None:
        self.base_offset = base
        self.next_offset = base + count
        self.is_control_batch = False
        self.producer_id = None
        self._records = [SimpleNamespace(offset=base + i) for i in range(count)]

    def validate_crc(self) -> bool:
        return True

    def __iter__(self) -> Any:
        return iter(self._records)


class _Records:
    def __init__(self, *batches: _Batch) -> None:
        self.batches = list(batches)

    def has_next(self) -> bool:
        return bool(self.batches)

    def next_batch(self) -> _Batch:
        return self.batches.pop(0)


def _unpacked(fetch_offset: int, *batches: _Batch) -> tuple[list[int], int]:
    """What aiokafka's PartitionRecords (patched) hands out for one fetch, and where it fetches next."""
    from aiokafka.consumer.fetcher import PartitionRecords

    pr = PartitionRecords("t-3", _Records(*batches), [], fetch_offset, None, None, False, 0)
    pr._consumer_record = lambda tp, record: record.offset  # type: ignore[method-assign]
    return list(pr), pr.next_fetch_offset


def test_aiokafka_hands_out_nothing_and_fetches_the_same_offset_again_while_a_hole_lasts() -> None:
    assert _unpacked(100, _Batch(101, 2)) == ([], 100)
    assert _unpacked(100, _Batch(100, 1), _Batch(101, 2)) == ([100, 101, 102], 103)  # the hole filled
    assert _unpacked(10, _Batch(8, 4)) == ([10, 11], 12)  # fetched from inside a batch: no hole


def test_a_hole_between_two_batches_of_one_fetch_stops_the_fetch_at_the_hole() -> None:
    # The broker listed 100, 101 and 103: 102 was still being written when it answered.
    assert _unpacked(100, _Batch(100, 1), _Batch(101, 1), _Batch(103, 2)) == ([100, 101], 102)
    assert _unpacked(102, _Batch(102, 1), _Batch(103, 2)) == ([102, 103, 104], 105)  # asked again: there
