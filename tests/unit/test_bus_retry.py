"""publish_retrying: a broker restart delays an event instead of failing the work behind it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shared.bus import BusUnavailable, publish_retrying
from shared.events import VersionQueued
from shared.events.versions import VersionQueuedPayload


class OutageBus:
    """The first `failures` publishes raise BusUnavailable, as a restarting broker's do."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.published: list[Any] = []

    async def publish(self, *events: Any) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise BusUnavailable("event broker did not acknowledge: restarting")
        self.published.extend(events)


def _event() -> VersionQueued:
    return VersionQueued.make("v1", VersionQueuedPayload(reason="queued"))


def test_an_outage_shorter_than_the_bound_delays_the_event_and_sends_it_once() -> None:
    bus = OutageBus(failures=2)
    event = _event()
    asyncio.run(publish_retrying(bus, event, give_up_after=5))
    assert bus.attempts == 3
    assert [e.event_id for e in bus.published] == [event.event_id]  # the same event, not a new one


def test_an_outage_past_the_bound_raises_bus_unavailable() -> None:
    bus = OutageBus(failures=100)
    with pytest.raises(BusUnavailable):
        asyncio.run(publish_retrying(bus, _event(), give_up_after=1.0))
    assert 2 <= bus.attempts <= 3  # 0.5 s, then 1 s would pass the bound: it gives up instead of sleeping
    assert bus.published == []


def test_the_builder_rides_out_a_broker_restart() -> None:
    from types import SimpleNamespace

    from services.builder.core import Builder

    bus = OutageBus(failures=1)
    fake = SimpleNamespace(bus=bus, settings=SimpleNamespace(publish_retry_for=5.0))
    asyncio.run(Builder.emit(fake, _event()))  # type: ignore[arg-type]
    assert len(bus.published) == 1
    fake.settings.publish_retry_for = 0
    bus.failures, bus.attempts = 1, 0
    with pytest.raises(BusUnavailable):  # no grace: the first refusal fails, as before
        asyncio.run(Builder.emit(fake, _event()))  # type: ignore[arg-type]
