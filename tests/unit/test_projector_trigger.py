"""The push trigger on the in-memory store with a fake bus (no Kafka, no Mongo): a branch push becomes
one VersionRequested, named after branch and commit; one delivery makes one version however often it
comes; a request the broker did not take is published later, the same event."""

from __future__ import annotations

import time
from typing import Any

import pytest

from services.projector import app as projector
from services.projector.trigger import plan_version, unemitted, version_name
from shared.bus import BusUnavailable
from shared.events import Event, PushReceived
from shared.events.webhooks import PushReceivedPayload
from tests.fakes.bus import FakeBus
from tests.fakes.store import MemoryStore

SHA = "1a2b3c4d5e6f" + "0" * 28


def push(delivery: str = "d1", **fields: Any) -> PushReceived:
    values: dict[str, Any] = {"provider": "github", "delivery_id": delivery, "service_id": "svc1",
                              "user_id": "alice", "repo_url": "https://x/shop.git", "ref": "refs/heads/main",
                              "branch": "main", "after": SHA, "message": "fix it", **fields}
    return PushReceived.make("svc1", PushReceivedPayload(**values), actor="alice")


def test_version_names() -> None:
    assert version_name("main", SHA) == "main-1a2b3c4"
    assert version_name("feature/x y", SHA) == "feature-x-y-1a2b3c4"
    assert version_name("///", SHA) == "branch-1a2b3c4"


async def test_a_branch_push_publishes_one_version_request() -> None:
    store, bus = MemoryStore(), FakeBus()
    event = push()
    assert projector.TRIGGERS.types == {"PushReceived"}
    await projector.TRIGGERS.adispatch(event, store, bus)
    [version] = bus.events
    p: Any = version.payload
    assert version.type == "VersionRequested" and version.causation_id == event.event_id
    assert (p.service_id, p.user_id, p.name, p.commit, p.branch, p.trigger, p.delivery_id, p.description) == (
        "svc1", "alice", "main-1a2b3c4", SHA, "main", "webhook", "d1", "fix it")
    # The same delivery again (a redelivery, or the provider's retry): nothing more.
    await projector.trigger(store, bus, event)
    await projector.trigger(store, bus, push())
    assert len(bus.events) == 1
    assert unemitted(store, older_than=-1) == []


async def test_another_delivery_of_the_same_commit_gets_the_next_name() -> None:
    store, bus = MemoryStore(), FakeBus()
    await projector.trigger(store, bus, push("d1"))
    await projector.trigger(store, bus, push("d2"))
    assert [e.payload.name for e in bus.events] == ["main-1a2b3c4", "main-1a2b3c4-2"]
    assert bus.events[0].aggregate_id != bus.events[1].aggregate_id


@pytest.mark.parametrize("fields", [{"tag": "v1", "branch": None}, {"deleted": True}, {"after": "0" * 40},
                                    {"branch": None}])
def test_tag_pushes_and_branch_deletions_build_nothing(fields: dict[str, Any]) -> None:
    assert plan_version(MemoryStore(), push(**fields)) is None


async def test_a_request_the_broker_did_not_take_is_published_later_unchanged() -> None:
    store, bus = MemoryStore(), FakeBus()
    planned = plan_version(store, push())  # planned, then the process died before publishing
    assert planned is not None
    again = plan_version(store, push())  # the redelivered push plans the same event
    assert again == planned
    store.reservations.update_one({"emitted": False}, {"$set": {"at": time.time() - 120}})
    sent = await projector.resend_unemitted(store, bus, older_than=60)
    assert sent == [planned.aggregate_id] and bus.events == [planned]
    assert await projector.resend_unemitted(store, bus, older_than=0) == []


async def test_publishing_retries_while_the_broker_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    class Flaky(FakeBus):
        failures = 2

        async def publish(self, *events: Any) -> None:
            if self.failures:
                self.failures -= 1
                raise BusUnavailable("down")
            await super().publish(*events)

    async def no_sleep(_: float) -> None:
        return None

    monkeypatch.setattr(projector.asyncio, "sleep", no_sleep)
    store, bus = MemoryStore(), Flaky()
    await projector.trigger(store, bus, push())
    assert len(bus.events) == 1 and bus.failures == 0
    assert store.reservations.find_one({"_id": "delivery:github/d1/svc1"})["emitted"] is True


def test_project_batch_folds_and_survives_a_bad_event() -> None:
    store = MemoryStore()
    good = push()

    class Broken(Event):
        type: str = "ServiceCreated"  # routed to a fold that cannot read this payload
        payload: Any = None

    bad = Broken(aggregate_id="x")
    projector.project_batch(store, [(bad, {}), (good, {"topic": "t", "partition": 0, "offset": 1})])
    assert store.events.find_one({"_id": good.event_id})["_pos"]["offset"] == 1
