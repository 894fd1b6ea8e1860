"""A push answered 202 never vanishes: the projector's trigger acknowledges a PushReceived only after its
VersionRequested was published (retrying while the broker is down), and a planned request that was
never published (an outage or a crash in between) is re-published later, the same event: one version.

Against the real nx-27017 of the session; the broker is a steerable bus (fails N times) in one test and
a dedicated Tansu process stopped and restarted in the other (the session's broker keeps its topics)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer

from infra.local.stack import Stack
from services.projector.app import resend_unemitted, trigger
from services.projector.trigger import plan_version
from shared.bus import BusUnavailable, EventBus
from shared.events import PushReceived, VersionRequested, decode
from shared.events.webhooks import PushReceivedPayload
from shared.settings import Settings
from tests.waits import wait_until_async

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def push(service_id: str, delivery: str) -> PushReceived:
    payload = PushReceivedPayload(
        provider="github",
        delivery_id=delivery,
        service_id=service_id,
        user_id="dora",
        repo_url="file:///r.git",
        ref="refs/heads/main",
        branch="main",
        after="abcdef1234567890abcdef1234567890abcdef12",
    )
    return PushReceived.make(service_id, payload, actor="dora")


class FlakyBus:
    """The bus boundary with a steerable outage: the first `failures` publishes raise BusUnavailable."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.published: list[VersionRequested] = []

    async def publish(self, *events: VersionRequested) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise BusUnavailable("event broker did not acknowledge: steered outage")
        self.published.extend(events)


def _reservation(store, service_id: str, delivery: str) -> dict:
    return store.reservations.find_one({"_id": f"delivery:github/{delivery}/{service_id}"}) or {}


async def test_publish_is_retried_before_the_push_is_acknowledged(store) -> None:
    sid, delivery = f"svc-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    bus = FlakyBus(failures=2)
    await asyncio.wait_for(trigger(store, bus, push(sid, delivery)), 30)  # returns = may be acknowledged
    assert bus.failures == 0 and len(bus.published) == 1
    assert _reservation(store, sid, delivery)["emitted"]
    # A redelivered PushReceived and the periodic re-publisher add nothing.
    await trigger(store, bus, push(sid, delivery))
    assert await resend_unemitted(store, bus, older_than=0) == []
    assert len(bus.published) == 1


async def test_planned_but_unpublished_request_is_republished_once(store) -> None:
    sid, delivery = f"svc-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    planned = plan_version(store, push(sid, delivery))  # then the projector died / the broker was gone
    assert planned is not None
    bus = FlakyBus(failures=1)
    with pytest.raises(BusUnavailable):  # still down at the first round: stays unemitted
        await resend_unemitted(store, bus, older_than=0)
    assert not _reservation(store, sid, delivery)["emitted"]
    assert await resend_unemitted(store, bus, older_than=0) == [planned.aggregate_id]
    assert await resend_unemitted(store, bus, older_than=0) == []
    (sent,) = bus.published
    assert sent.event_id == planned.event_id and sent.payload.name == "main-abcdef1"
    # The redelivered push is already handled.
    assert plan_version(store, push(sid, delivery)) is None


@pytest.fixture
def broker(tmp_path):
    """A dedicated Tansu broker (this test stops it); yields its stack and settings."""
    st = Stack.on_free_ports(tmp_path, topic_prefix=f"trig{uuid.uuid4().hex[:6]}", partitions=1)
    st.start_kafka()
    try:
        yield (
            st,
            Settings(kafka_bootstrap=f"127.0.0.1:{st.kafka_port}", topic_prefix=st.topic_prefix, topic_partitions=1),
        )
    finally:
        st.stop_all()


async def _requests_on(settings: Settings, version_id: str) -> int:
    """How many distinct VersionRequested events (by event id) the topic holds for the version. A
    publish that timed out while the broker was away may still reach it once it is back (the client
    had the record queued), beside the retry: the same event twice, which every consumer takes as one."""
    consumer = AIOKafkaConsumer(
        settings.topic("versions"),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        found: set[str] = set()
        batches = await consumer.getmany(timeout_ms=3000)
        for records in batches.values():
            for rec in records:
                event = decode(rec.value)
                if isinstance(event, VersionRequested) and event.aggregate_id == version_id:
                    found.add(event.event_id)
        return len(found)
    finally:
        await consumer.stop()


async def test_broker_down_during_the_trigger_then_back(store, broker, caplog) -> None:
    st, settings = broker
    sid, delivery = f"svc-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    bus = EventBus(settings, timeout=2.0)

    def failed_publishes() -> int:  # the trigger logs each one before it retries
        return sum("not published" in r.getMessage() for r in list(caplog.records))

    try:
        await bus.start()
        await asyncio.to_thread(st.stop, "kafka")  # the broker goes away after the push was accepted
        task = asyncio.create_task(trigger(store, bus, push(sid, delivery)))
        # A few failed publishes (2 s timeout each, then backoff).
        await wait_until_async(lambda: failed_publishes() >= 2, 30, "two failed publishes")
        assert not task.done(), "the trigger returned (the push would be acknowledged) without publishing"
        assert not _reservation(store, sid, delivery)["emitted"]
        await asyncio.to_thread(st.start_kafka)  # back (a fresh in-memory broker: topics created again)
        await asyncio.wait_for(task, 60)
        vid = _reservation(store, sid, delivery)["ref"]
        assert _reservation(store, sid, delivery)["emitted"]
        assert await resend_unemitted(store, bus, older_than=0) == []
        assert await _requests_on(settings, vid) == 1
    finally:
        await bus.stop()
