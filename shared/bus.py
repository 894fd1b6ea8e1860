"""The event bus: topic bootstrap and a producer that returns only after the broker acknowledged."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from .events import Event
from .settings import TOPICS, Settings

log = logging.getLogger(__name__)


class BusUnavailable(RuntimeError):
    """The event could not be durably written (broker down or not acknowledging)."""


class EventTooLarge(ValueError):
    """An event larger than `max_event_bytes`: refused before it reaches the producer, so a broker's
    message-size rejection can never fail other callers' events sent in the same batch."""


def encoded(settings: Settings, events: tuple[Any, ...]) -> list[bytes]:
    """Every event's bytes; EventTooLarge (nothing is sent) when one is over the limit."""
    limit = settings.max_event_bytes
    out = [e.encode() for e in events]
    for e, data in zip(events, out, strict=True):
        if len(data) > limit:
            raise EventTooLarge(f"{e.TOPIC} event of {len(data)} bytes exceeds the limit of {limit} bytes")
    return out


async def bootstrap_topics(settings: Settings, partitions: dict[str, int] | None = None) -> list[str]:
    """Create every Fornax topic with an explicit partition count; existing ones are kept."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(settings.topic(t), (partitions or {}).get(t, settings.topic_partitions), 1)
            for t in TOPICS
            if settings.topic(t) not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass
        return [t.name for t in wanted]
    finally:
        await admin.close()


class EventBus:
    """Publishes events to their topic, keyed by aggregate id, with acks=all.

    Two producers: one for log lines and one for every other event. aiokafka keeps one produce request
    in flight per broker per producer, so on one producer a chatty build log queues the version's next
    event behind its lines; on a broker whose writes are slow (Tansu on S3) that was seconds per event."""

    def __init__(self, settings: Settings, timeout: float = 10.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self._producer: AIOKafkaProducer | None = None
        self._log_producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _new_producer(self, linger_ms: int = 1) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            acks="all",
            linger_ms=linger_ms,
            request_timeout_ms=int(self.timeout * 1000),
            max_request_size=8 * 1024 * 1024,
        )
        try:
            await asyncio.wait_for(producer.start(), self.timeout)
        except (TimeoutError, KafkaError, OSError) as exc:
            await producer.stop()
            raise BusUnavailable(f"event broker at {self.settings.kafka_bootstrap} unavailable: {exc}") from exc
        return producer

    async def start(self) -> None:
        async with self._lock:
            if self._producer is None:
                self._producer = await self._new_producer()

    async def _logs(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._log_producer is None:
                # Log writers flush on a shared tick (shared/logwriter.py): 5 ms lets the lines of every
                # version flushed at that tick join one record batch per partition.
                self._log_producer = await self._new_producer(linger_ms=5)
            return self._log_producer

    async def stop(self) -> None:
        for producer in (self._producer, self._log_producer):
            if producer is not None:
                await producer.stop()
        self._producer = self._log_producer = None

    async def publish(self, *events: Event) -> None:
        """Send events and wait until the broker acknowledged every one; BusUnavailable otherwise."""
        data = encoded(self.settings, events)
        if events and all(e.TOPIC == "logs" for e in events):
            producer = await self._logs()
        else:
            if self._producer is None:
                await self.start()
            assert self._producer is not None
            producer = self._producer
        try:
            futures = [
                await producer.send(self.settings.topic(e.TOPIC), d, key=e.key())
                for e, d in zip(events, data, strict=True)
            ]
            await asyncio.wait_for(asyncio.gather(*futures), self.timeout)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise BusUnavailable(f"event broker did not acknowledge: {exc!r}") from exc

    async def __aenter__(self) -> EventBus:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


async def publish_retrying(
    bus: Any, *events: Event, give_up_after: float | None = None, max_delay: float = 10.0
) -> None:
    """Publish, retrying with backoff (0.5 s doubling up to max_delay) while the broker does not
    acknowledge; BusUnavailable once give_up_after seconds have passed (None: never give up).

    A retry sends the same events (the same ids): one whose first send was acknowledged late is
    delivered twice, which every consumer tolerates (the archive keeps one per id)."""
    loop = asyncio.get_running_loop()
    until = None if give_up_after is None else loop.time() + give_up_after
    delay = 0.5
    while True:
        try:
            await bus.publish(*events)
            return
        except BusUnavailable as exc:
            if until is not None and loop.time() + delay > until:
                raise
            what = ", ".join(sorted({e.type for e in events}))
            log.warning("%s not published (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


def topics_main(argv: list[str]) -> int:
    """`fornax topics create`: create every topic with its partition count (idempotent)."""
    from .settings import get_settings

    if argv[:1] != ["create"]:
        print("usage: fornax topics create")
        return 2
    created = asyncio.run(bootstrap_topics(get_settings()))
    print("created: " + (", ".join(created) if created else "nothing (all topics exist)"))
    return 0
