"""Per-user quota on the real Mongo-wire server, and versions that run one after another because of it."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import docker
import pytest

from services.builder.pipeline import QuotaExceeded, acquire, parse_config, release, reserve, run_stage
from services.builder.pipeline.quota import usage
from shared.settings import Settings
from shared.store import Store
from tests.integration.pipeline_helpers import Versions

pytestmark = pytest.mark.integration


@pytest.fixture
def small_store(stack):
    """A store whose settings give each user 300 MiB / 1024 shares (containers: 128 MiB / 128 shares)."""
    s = Store(Settings(memory_for_user=300, cpu_for_user=1024, memory_for_container=128,
                       cpu_for_container=128))
    yield s
    s.close()


def user() -> str:
    return f"quota-{uuid.uuid4().hex[:8]}"


async def test_reserve_release_idempotent_and_total_check(small_store):
    u = user()
    assert await reserve(small_store, u, "v1", 200, 100)
    assert await reserve(small_store, u, "v1", 200, 100)  # repeated: still one reservation
    assert usage(small_store, u) == {"memory": 200, "cpu": 100, "versions": ["v1"]}
    assert not await reserve(small_store, u, "v2", 200, 100)  # 400 > 300: must wait
    assert await release(small_store, u, "v1")
    assert not await release(small_store, u, "v1")
    assert await reserve(small_store, u, "v2", 200, 100)
    with pytest.raises(QuotaExceeded, match="more than the quota"):
        await reserve(small_store, u, "v3", 301, 1)
    await release(small_store, u, "v2")
    assert usage(small_store, u)["memory"] == 0


async def test_concurrent_reservations_never_overbook(small_store):
    """Many reservations at once (threads, as several builder processes would race): exactly as
    many as fit succeed."""
    u = user()
    results = await asyncio.gather(*(reserve(small_store, u, f"v{i}", 100, 10) for i in range(12)))
    assert sum(results) == 3
    assert usage(small_store, u)["memory"] == 300


async def test_reservations_of_ended_versions_are_reclaimed(small_store):
    u = user()
    dead = f"dead-{uuid.uuid4().hex[:8]}"
    assert await reserve(small_store, u, dead, 250, 10)
    small_store.versions.insert_one({"_id": dead, "user_id": u, "status": "failed"})
    try:
        assert await reserve(small_store, u, "next", 250, 10)
        assert usage(small_store, u)["versions"] == ["next"]
    finally:
        small_store.versions.delete_one({"_id": dead})


async def test_two_versions_over_the_quota_run_one_after_another(small_store, tmp_path: Path, busybox_image):
    """Two versions of one user, each needing 256 MiB (a service + the CI container) of 300: the
    second waits (on_wait tells why) until the first released; one needing 384 MiB fails at once."""
    client = docker.from_env()
    versions = Versions(client, tmp_path, small_store.settings)
    config = parse_config(f"""
integration:
  image: {busybox_image}
  commands: ["echo run", "sleep 1"]
  services:
    db:
      image: {busybox_image}
      commands: ["sleep 600"]
""")
    u = user()
    events: list[str] = []
    waits: list[tuple[str, str]] = []

    async def run_version() -> None:
        ctx = versions.context(user_id=u)
        vid = ctx.version_id
        memory, cpu = config.demand(ctx.settings)

        async def on_wait(reason: str) -> None:
            waits.append((vid, reason))

        assert await acquire(small_store, u, vid, memory, cpu, on_wait=on_wait, poll=0.2)
        events.append(f"start {vid}")
        try:
            await run_stage(ctx, config, "integration")
        finally:
            events.append(f"end {vid}")
            await release(small_store, u, vid)

    try:
        await asyncio.gather(run_version(), run_version())
        assert len(waits) == 1 and "waiting for quota: needs 256 MiB" in waits[0][1]
        # no overlap: start, end, start, end
        assert [e.split()[0] for e in events] == ["start", "end", "start", "end"]
        assert events[0].split()[1] == events[1].split()[1]

        too_big = parse_config(f"""
integration:
  image: {busybox_image}
  commands: ["true"]
  services:
    a: {{image: {busybox_image}}}
    b: {{image: {busybox_image}}}
""")
        memory, cpu = too_big.demand(small_store.settings)
        assert memory == 384
        with pytest.raises(QuotaExceeded, match=r"needs 384 MiB .* more than the quota"):
            await acquire(small_store, u, versions.new_id(), memory, cpu)
    finally:
        assert versions.leaks() == []
        client.close()


async def test_acquire_gives_up_when_cancelled(small_store):
    u = user()
    assert await reserve(small_store, u, "holder", 300, 10)
    cancelled = asyncio.Event()
    waits: list[str] = []

    async def on_wait(reason: str) -> None:
        waits.append(reason)
        cancelled.set()

    assert not await acquire(small_store, u, "waiter", 100, 10, on_wait=on_wait, cancelled=cancelled,
                             poll=0.1)
    assert waits and usage(small_store, u)["versions"] == ["holder"]
