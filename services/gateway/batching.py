"""An EventBus that group-commits concurrent publishes: one record batch per partition per round trip.

aiokafka's per-message `send` wakes its sender task for every message; under webhook load that
doubled the gateway's CPU per request. Here one flusher sends everything pending as one record batch
per partition (`create_batch`/`send_batch`), waits for the broker's acknowledgement, and then sends
whatever arrived meanwhile; every caller still returns only after its own events were acknowledged.

Ordering is unchanged: one publish() call's events stay in call order, keyed by aggregate id, and a
caller that waits for one 202 before sending the next request sees its events in that order.

Lanes (`gateway_produce_lanes`, default 1): a partition's events go out on lane `partition % lanes`, each
lane its own producer and flush loop, so that many record batches are in flight at once. aiokafka sends one
request per broker per producer at a time, and a broker that writes each partition's batch in turn (Tansu on
S3: a few ms per partition) then spends the sum of them on every round trip. A partition always uses the
same lane, so events of one key keep their order.

Timeouts: `asyncio.wait_for` per publish cost a timer (a heap push, a cancelled handle and a
waiter future) on every webhook. Instead every caller's futures carry a deadline in one FIFO queue
(all callers share one timeout, so it is in deadline order) and one sweep, scheduled only while
callers wait, fails the overdue ones with BusUnavailable; their events, if not sent yet, never are.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from shared.bus import BusUnavailable, EventBus, encoded
from shared.events import Event

log = logging.getLogger(__name__)

_Item = tuple[str, bytes, bytes, "asyncio.Future[None]"]


class BatchingEventBus(EventBus):
    """EventBus whose publish() coalesces concurrent callers' events into record batches."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lanes = max(1, int(getattr(self.settings, "gateway_produce_lanes", 1)))
        self._pending: list[list[_Item]] = [[] for _ in range(self._lanes)]
        self._flushing = [False] * self._lanes
        self._lane_producers: list[Any] = []  # lanes 1..n-1 (lane 0 is the bus's own producer)
        self.batches_sent = 0  # statistics: record batches and events handed to the producer
        self.events_sent = 0
        self._partitions: dict[str, list[int]] = {}
        self._partition_of: dict[tuple[str, bytes], int] = {}
        self._partitioner = DefaultPartitioner()
        self._tasks: set[asyncio.Task[None]] = set()
        self._deadlines: deque[tuple[float, list[asyncio.Future[None]]]] = deque()
        self._sweep: asyncio.TimerHandle | None = None

    async def publish(self, *events: Event) -> None:
        """Send events and wait until the broker acknowledged every one; BusUnavailable otherwise."""
        if not events:
            return
        data = encoded(self.settings, events)  # (an oversized event fails its caller alone, up front)
        if self._producer is None:
            await self.start()
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        lanes: set[int] = set()
        for e, d in zip(events, data, strict=True):
            fut: asyncio.Future[None] = loop.create_future()
            topic, key = self.settings.topic(e.TOPIC), e.key()
            lane = 0 if self._lanes == 1 else await self._partition(topic, key) % self._lanes
            self._pending[lane].append((topic, key, d, fut))
            lanes.add(lane)
            futures.append(fut)
        self._deadlines.append((time.monotonic() + self.timeout, futures))
        if self._sweep is None:
            self._sweep = loop.call_later(self.timeout / 10, self._expire)
        for lane in lanes:
            if not self._flushing[lane]:
                self._flushing[lane] = True
                task = asyncio.ensure_future(self._flush_loop(lane))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        try:
            for fut in futures:
                await fut
        except BaseException as exc:
            for fut in futures:  # the caller gives up: what was not sent yet never is
                if not fut.cancel() and not fut.cancelled():
                    fut.exception()  # (retrieved: no "exception never retrieved" warnings)
            if isinstance(exc, TimeoutError | KafkaError | OSError):
                raise BusUnavailable(f"event broker did not acknowledge: {exc!r}") from exc
            raise

    def _expire(self) -> None:
        """Fail the callers whose deadline passed (BusUnavailable); re-arm while any caller waits."""
        self._sweep = None
        now = time.monotonic()
        queue = self._deadlines
        while queue:
            deadline, futures = queue[0]
            if deadline > now and not all(f.done() for f in futures):
                break  # (the queue is in deadline order: the rest is not overdue either)
            queue.popleft()
            for fut in futures:
                if not fut.done():
                    fut.set_exception(
                        BusUnavailable(f"event broker did not acknowledge within {self.timeout:g} s")
                    )
        if queue:
            self._sweep = asyncio.get_running_loop().call_later(self.timeout / 10, self._expire)

    async def _flush_loop(self, lane: int = 0) -> None:
        """Group commit: send everything pending, wait for the acks, repeat while more arrived meanwhile."""
        try:
            await asyncio.sleep(0)  # let the other requests of this loop turn join the first batch
            while self._pending[lane]:
                # A caller that already gave up (timed out: it answered 503) must not be published later.
                items, self._pending[lane] = [i for i in self._pending[lane] if not i[3].done()], []
                if not items:
                    continue
                try:
                    acks = await self._send(items, await self._lane_producer(lane))
                except Exception as exc:  # noqa: BLE001 - every waiting caller must get an answer
                    _fail(items, exc)
                    continue
                if acks:
                    await asyncio.wait(acks)
        finally:
            self._flushing[lane] = False

    async def _lane_producer(self, lane: int) -> Any:
        if lane == 0:
            return self._producer
        async with self._lock:
            while len(self._lane_producers) < lane:
                self._lane_producers.append(await self._new_producer())
        return self._lane_producers[lane - 1]

    async def stop(self) -> None:
        producers, self._lane_producers = self._lane_producers, []
        for producer in producers:
            await producer.stop()
        await super().stop()

    async def _partition(self, topic: str, key: bytes) -> int:
        cache_key = (topic, key)
        partition = self._partition_of.get(cache_key)
        if partition is None:  # murmur2 is pure Python (~25 us): remember it per key
            parts = self._partitions.get(topic)
            if parts is None:
                producer = self._producer
                if producer is None:
                    raise BusUnavailable("event bus stopped")
                found = await asyncio.wait_for(producer.partitions_for(topic), self.timeout)
                parts = self._partitions[topic] = sorted(found)
            if len(self._partition_of) > 100_000:
                self._partition_of.clear()
            partition = self._partition_of[cache_key] = self._partitioner(key, parts, parts)
        return partition

    async def _send(self, items: list[_Item], producer: Any = None) -> list[asyncio.Future[Any]]:
        producer = producer or self._producer
        if producer is None:
            raise BusUnavailable("event bus stopped")
        groups: dict[tuple[str, int], list[_Item]] = {}
        for item in items:
            partition = await self._partition(item[0], item[1])
            groups.setdefault((item[0], partition), []).append(item)
        acks: list[asyncio.Future[Any]] = []
        for (topic, partition), group in groups.items():
            batch = producer.create_batch()
            members: list[_Item] = []
            for item in group:
                if batch.append(key=item[1], value=item[2], timestamp=None) is None:
                    if members:  # full: send it and start the next one
                        acks.append(await self._send_batch(producer, batch, topic, partition, members))
                        batch, members = producer.create_batch(), []
                    if (
                        batch.append(key=item[1], value=item[2], timestamp=None) is None
                    ):  # larger than a batch
                        fut = await producer.send(topic, item[2], key=item[1], partition=partition)
                        fut.add_done_callback(lambda done, it=item: _settle([it], done))
                        acks.append(fut)
                        continue
                members.append(item)
            if members:
                acks.append(await self._send_batch(producer, batch, topic, partition, members))
        return acks

    async def _send_batch(
        self, producer: Any, batch: Any, topic: str, partition: int, members: list[_Item]
    ) -> asyncio.Future[Any]:
        try:
            fut: asyncio.Future[Any] = await producer.send_batch(batch, topic, partition=partition)
        except Exception as exc:  # noqa: BLE001
            _fail(members, exc)
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        fut.add_done_callback(lambda f: _settle(members, f))
        self.batches_sent += 1
        self.events_sent += len(members)
        return fut


def _fail(items: list[_Item], exc: BaseException) -> None:
    for *_, fut in items:
        if not fut.done():
            fut.set_exception(exc if isinstance(exc, KafkaError | OSError) else BusUnavailable(repr(exc)))


def _settle(items: list[_Item], done: asyncio.Future[Any]) -> None:
    exc = None if done.cancelled() else done.exception()
    for *_, fut in items:
        if fut.done():
            continue
        if done.cancelled():
            fut.set_exception(BusUnavailable("send cancelled"))
        elif exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(None)
