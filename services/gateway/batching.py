"""An EventBus that group-commits concurrent publishes: one record batch per partition per round trip.

aiokafka's per-message `send` wakes its sender task for every message; under webhook load that
doubled the gateway's CPU per request. Here one flusher sends everything pending as one record batch
per partition (`create_batch`/`send_batch`), waits for the broker's acknowledgement, and then sends
whatever arrived meanwhile; every caller still returns only after its own events were acknowledged.

Ordering is unchanged: one publish() call's events stay in call order, keyed by aggregate id, and a
caller that waits for one 202 before sending the next request sees its events in that order.

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
        self._pending: list[_Item] = []
        self._flushing = False
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
        for e, d in zip(events, data, strict=True):
            fut: asyncio.Future[None] = loop.create_future()
            self._pending.append((self.settings.topic(e.TOPIC), e.key(), d, fut))
            futures.append(fut)
        self._deadlines.append((time.monotonic() + self.timeout, futures))
        if self._sweep is None:
            self._sweep = loop.call_later(self.timeout / 10, self._expire)
        if not self._flushing:
            self._flushing = True
            task = asyncio.ensure_future(self._flush_loop())
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

    async def _flush_loop(self) -> None:
        """Group commit: send everything pending, wait for the acks, repeat while more arrived meanwhile."""
        try:
            await asyncio.sleep(0)  # let the other requests of this loop turn join the first batch
            while self._pending:
                # A caller that already gave up (timed out: it answered 503) must not be published later.
                items, self._pending = [i for i in self._pending if not i[3].done()], []
                if not items:
                    continue
                try:
                    acks = await self._send(items)
                except Exception as exc:  # noqa: BLE001 - every waiting caller must get an answer
                    _fail(items, exc)
                    continue
                if acks:
                    await asyncio.wait(acks)
        finally:
            self._flushing = False

    async def _send(self, items: list[_Item]) -> list[asyncio.Future[Any]]:
        producer = self._producer
        if producer is None:
            raise BusUnavailable("event bus stopped")
        groups: dict[tuple[str, int], list[_Item]] = {}
        for item in items:
            topic = item[0]
            parts = self._partitions.get(topic)
            if parts is None:
                found = await asyncio.wait_for(producer.partitions_for(topic), self.timeout)
                parts = self._partitions[topic] = sorted(found)
            cache_key = (topic, item[1])
            partition = self._partition_of.get(cache_key)
            if partition is None:  # murmur2 is pure Python (~25 us): remember it per key
                if len(self._partition_of) > 100_000:
                    self._partition_of.clear()
                partition = self._partition_of[cache_key] = self._partitioner(item[1], parts, parts)
            groups.setdefault((topic, partition), []).append(item)
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
