"""The durable local broker: Tansu on S3 served by SeaweedFS keeps every record and every consumer-group
offset across a kill -9 of the broker, of the store, and of both (the state `make up` restarts from).

Runs its own durable stack (store + broker only) on free ports in a temp dir.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from infra.local.stack import Stack

pytestmark = pytest.mark.integration

TOPIC = "durable-check"
GROUP = "durable-group"
PARTITIONS = 2


@pytest.fixture(scope="module")
def durable() -> Iterator[Stack]:
    base = Path(tempfile.mkdtemp(prefix="fornax-durable-"))
    # Retention runs only when a test starts it (its passes would race the assertions).
    st = Stack.on_free_ports(base, durable=True, topic_prefix="fxd", retention_seconds=None)
    try:
        st.start_store()
        st.start_kafka()
        yield st
    finally:
        st.stop_all()
        shutil.rmtree(base, ignore_errors=True)


def bootstrap(st: Stack) -> str:
    return f"127.0.0.1:{st.kafka_port}"


async def _create_topic(st: Stack, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(st))
    await admin.start()
    try:
        if name not in await admin.list_topics():
            await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        await admin.close()


async def _produce(st: Stack, topic: str, values: list[str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(st), acks="all")
    await producer.start()
    try:
        sends = [await producer.send(topic, v.encode(), key=v.encode()) for v in values]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def _read_all(st: Stack, topic: str) -> list[str]:
    """Every record of `topic`, from the beginning to the end offsets (no group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(st), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list[str] = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                out.extend(r.value.decode() for r in records)
        return out
    finally:
        await consumer.stop()


async def _group_take(st: Stack, topic: str, count: int) -> list[str]:
    """Consume `count` records as GROUP and commit exactly after them."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap(st), group_id=GROUP, enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        taken: list[str] = []
        while len(taken) < count:
            for tp, records in (await consumer.getmany(timeout_ms=1000, max_records=count - len(taken))).items():
                if not records:
                    continue
                taken.extend(r.value.decode() for r in records)
                await consumer.commit({tp: records[-1].offset + 1})
        return taken
    finally:
        await consumer.stop()


async def _group_committed(st: Stack, topic: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(st), group_id=GROUP, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
    finally:
        await consumer.stop()


def test_records_and_offsets_survive_kill_of_broker_and_store(durable: Stack) -> None:
    values = [f"record-{i}" for i in range(600)]
    asyncio.run(_create_topic(durable, TOPIC))
    asyncio.run(_produce(durable, TOPIC, values))
    first = asyncio.run(_group_take(durable, TOPIC, 250))
    committed = asyncio.run(_group_committed(durable, TOPIC))
    assert sum(o or 0 for o in committed.values()) == 250

    # kill -9 of the broker
    durable.kill("kafka")
    durable.start("kafka")
    assert sorted(asyncio.run(_read_all(durable, TOPIC))) == sorted(values)
    assert asyncio.run(_group_committed(durable, TOPIC)) == committed

    # kill -9 of the store under a running broker: once the store is back, nothing is lost
    durable.kill("store")
    durable.start("store")
    asyncio.run(_produce(durable, TOPIC, ["after-store-kill"]))
    assert sorted(asyncio.run(_read_all(durable, TOPIC))) == sorted([*values, "after-store-kill"])

    # kill -9 of both (a power cut): everything comes back, and the group resumes after its offsets
    durable.kill("kafka")
    durable.kill("store")
    durable.start("store")
    durable.start("kafka")
    assert sorted(asyncio.run(_read_all(durable, TOPIC))) == sorted([*values, "after-store-kill"])
    assert asyncio.run(_group_committed(durable, TOPIC)) == committed
    rest = asyncio.run(_group_take(durable, TOPIC, len(values) + 1 - 250))
    assert sorted(first + rest) == sorted([*values, "after-store-kill"])  # nothing twice, nothing missed


def test_memory_stack_is_not_durable(tmp_path: Path) -> None:
    """The contrast: the memory broker (tests' default) loses its records when it is killed."""
    st = Stack.on_free_ports(tmp_path / "mem", topic_prefix="fxm")
    try:
        st.start_kafka()
        asyncio.run(_create_topic(st, TOPIC))
        asyncio.run(_produce(st, TOPIC, ["gone"]))
        st.kill("kafka")
        st.start("kafka")
        asyncio.run(_create_topic(st, TOPIC))
        assert asyncio.run(_read_all(st, TOPIC)) == []
    finally:
        st.stop_all()


def test_the_store_picks_new_ports_when_one_was_taken_since(tmp_path: Path) -> None:
    """Free ports are picked when a test stack is made; another process may bind one before weed does."""
    import socket

    st = Stack.on_free_ports(tmp_path / "stack", durable=True)
    taken = socket.socket()
    taken.bind(("127.0.0.1", st.weed_ports["filer_grpc"]))
    taken.listen()
    try:
        picked = dict(st.weed_ports)
        st.start_store()
        assert st.weed_ports != picked and "store" in st.procs
    finally:
        taken.close()
        st.stop_all()


async def _send_each(st: Stack, topic: str, partition: int, values: list[str]) -> None:
    """One record per request, so one batch (one object in the store) per record."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(st), acks="all")
    await producer.start()
    try:
        for v in values:
            await producer.send_and_wait(topic, v.encode(), partition=partition)
    finally:
        await producer.stop()


async def _commit(st: Stack, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(st), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in offsets])
        await consumer.commit({TopicPartition(topic, p): o for p, o in offsets.items()})
    finally:
        await consumer.stop()


async def _read_from(st: Stack, topic: str, partition: int, group: str | None, count: int) -> list[tuple[int, str]]:
    """(offset, value) of `count` records from the group's committed offset (the earliest without one)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(st), group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        committed = await consumer.committed(tp) if group else None
        if committed is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)
        out: list[tuple[int, str]] = []
        for _ in range(30):
            if len(out) >= count:
                break
            for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                out.extend((r.offset, r.value.decode()) for r in records)
        return out
    finally:
        await consumer.stop()


def _batches(st: Stack, topic: str, partition: int) -> list[int]:
    from infra.local.retention import Filer

    filer = Filer(f"http://127.0.0.1:{st.weed_ports['filer']}", "tansu")
    path = f"{filer.root}/clusters/tansu_cluster/topics/{topic}/partitions/{partition:0>10}/records"
    return sorted(int(n[:20]) for n in filer.names(path))


def test_retention_deletes_only_what_every_group_has_committed_past(durable: Stack) -> None:
    """Tansu has no retention and its fetches get slower as a partition grows; the local stack's retention
    deletes the batches below the lowest offset every group committed, and nothing a group still needs."""
    from infra.local.retention import Filer, Retention

    topic = "retention-check"
    asyncio.run(_create_topic(durable, topic))
    values = [f"r-{i}" for i in range(30)]
    asyncio.run(_send_each(durable, topic, 0, values))
    asyncio.run(_send_each(durable, topic, 1, values[:5]))  # a partition no group has committed on
    asyncio.run(_commit(durable, "ret-fast", topic, {0: 25}))
    asyncio.run(_commit(durable, "ret-slow", topic, {0: 12}))
    assert _batches(durable, topic, 0) == list(range(30))

    retention = Retention(Filer(f"http://127.0.0.1:{durable.weed_ports['filer']}", "tansu"), keep_seconds=0)
    young = Retention(retention.filer, keep_seconds=3600)
    assert young.run_once().deleted == 0  # consumed, but not yet old enough
    assert _batches(durable, topic, 0) == list(range(30))

    retention.run_once()
    assert _batches(durable, topic, 0) == list(range(12, 30))  # the slow group still needs 12 onwards
    assert _batches(durable, topic, 1) == list(range(5))
    assert asyncio.run(_read_from(durable, topic, 0, "ret-slow", 18)) == [(i, f"r-{i}") for i in range(12, 30)]

    asyncio.run(_commit(durable, "ret-slow", topic, {0: 30}))
    retention.run_once()
    assert _batches(durable, topic, 0) == list(range(25, 30))
    # The fast group resumes exactly where it was, through a kill -9 of the broker too.
    durable.kill("kafka")
    durable.start("kafka")
    assert asyncio.run(_read_from(durable, topic, 0, "ret-fast", 5)) == [(i, f"r-{i}") for i in range(25, 30)]
    # A group with no offset starts at the oldest batch left; new records follow, and the last batch is kept.
    asyncio.run(_send_each(durable, topic, 0, ["after"]))
    assert asyncio.run(_read_from(durable, topic, 0, "ret-new", 6))[0] == (25, "r-25")
    asyncio.run(_commit(durable, "ret-fast", topic, {0: 31}))
    asyncio.run(_commit(durable, "ret-slow", topic, {0: 31}))
    retention.run_once()
    assert _batches(durable, topic, 0) == [30]
    assert asyncio.run(_read_from(durable, topic, 0, None, 1)) == [(30, "after")]

    # The process the local stack runs beside the broker does the same on its own.
    asyncio.run(_send_each(durable, topic, 0, ["later"]))
    asyncio.run(_commit(durable, "ret-fast", topic, {0: 32}))
    asyncio.run(_commit(durable, "ret-slow", topic, {0: 32}))
    asyncio.run(_commit(durable, "ret-new", topic, {0: 32}))
    durable.retention_seconds = 0
    durable.start_retention()
    try:
        deadline = time.monotonic() + 20
        while _batches(durable, topic, 0) != [31] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _batches(durable, topic, 0) == [31]
    finally:
        durable.stop("retention")


def test_a_tail_gets_every_record_of_concurrent_producers_with_the_fetch_hole_guard(durable: Stack) -> None:
    """Tansu takes an offset (the high watermark) before it writes the batch; a fetch in between can
    list a later producer's batch first. Unguarded, the tail moves past the record still being written
    (bench/broker_holes: 0-2 of 1,200 per run); guarded (shared/fetch_holes.py) it asks again."""
    from shared import fetch_holes
    from tests.fixtures.broker_tail import tail_while_producing

    name = "holes-check"

    async def run() -> Any:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(durable))
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, 1, 1)])
        finally:
            await admin.close()
        return await tail_while_producing(bootstrap(durable), name, producers=6, per_producer=150)

    before = fetch_holes._state["wait"]
    fetch_holes.install(2.0)
    try:
        tail = asyncio.run(run())
    finally:
        fetch_holes.install(before)
    assert len(tail.stored) == tail.produced == 900  # every acknowledged record is stored
    assert tail.skipped == [] and tail.jumps == []  # and the tail got each one, in order
    assert len(tail.seen) == tail.produced
