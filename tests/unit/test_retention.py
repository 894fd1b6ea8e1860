"""Which batches the durable broker's retention deletes (pure logic; the store itself is in
tests/integration/test_durable_broker.py)."""

from __future__ import annotations

from infra.local.retention import Batch, deletable, lowest_committed


def batches(*bases: int, mtime: float = 0.0) -> list[Batch]:
    return [Batch(b, f"{b:020}.batch", mtime) for b in bases]


def test_a_batch_goes_only_when_the_next_one_starts_at_or_below_the_committed_offset() -> None:
    # batches of several records: 0-9, 10-14, 15-29, 30-
    bs = batches(0, 10, 15, 30)
    assert [b.base_offset for b in deletable(bs, committed=12, older_than=1)] == [0]  # 10-14 holds 12
    assert [b.base_offset for b in deletable(bs, committed=15, older_than=1)] == [0, 10]
    assert [b.base_offset for b in deletable(bs, committed=0, older_than=1)] == []


def test_the_last_batch_always_stays() -> None:
    bs = batches(0, 1, 2)
    assert [b.base_offset for b in deletable(bs, committed=100, older_than=1)] == [0, 1]
    assert deletable(batches(7), committed=100, older_than=1) == []
    assert deletable([], committed=100, older_than=1) == []


def test_young_batches_stay_even_when_consumed() -> None:
    bs = [Batch(0, "a", 10.0), Batch(1, "b", 50.0), Batch(2, "c", 90.0), Batch(3, "d", 95.0)]
    assert [b.name for b in deletable(bs, committed=3, older_than=60.0)] == ["a", "b"]


def test_order_of_listing_does_not_matter() -> None:
    bs = list(reversed(batches(0, 5, 9)))
    assert [b.base_offset for b in deletable(bs, committed=9, older_than=1)] == [0, 5]


def test_the_lowest_committed_offset_of_all_groups_bounds_each_partition() -> None:
    rows = [("a", "t", 0, 40), ("b", "t", 0, 12), ("a", "t", 1, 7), ("c", "u", 0, -1)]
    # b has not committed on t/1 yet: it reads the whole topic, so it still needs all of t/1
    assert lowest_committed(rows) == {("t", 0): 12, ("t", 1): 0, ("u", 0): 0}


def test_a_partition_a_reading_group_has_not_committed_on_keeps_everything() -> None:
    rows = [("a", "t", 0, 40), ("a", "t", 1, 30)]
    assert lowest_committed(rows, {"t": [0, 1, 2, 3], "v": [0]}) == {
        ("t", 0): 40, ("t", 1): 30, ("t", 2): 0, ("t", 3): 0}  # v: no group reads it, nothing listed
