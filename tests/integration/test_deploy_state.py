"""MongoState's queries on the real Mongo-wire server (read models as the projector writes them)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.deployer.state import MongoState
from shared.events import DeploySucceeded, utcnow
from shared.events.deploys import DeploySucceededPayload
from tests.fixtures.deploy_world import new_id

pytestmark = pytest.mark.integration


async def test_queries_merge_memory_over_read_models(store) -> None:
    sid = new_id()
    now = utcnow()
    docs = [
        {
            "_id": f"{sid}-old",
            "service_id": sid,
            "status": "success",
            "target": "local",
            "digest": "sha256:1",
            "finished_at": now - timedelta(minutes=5),
            "requested_at": now - timedelta(minutes=6),
        },
        {
            "_id": f"{sid}-new",
            "service_id": sid,
            "status": "success",
            "target": "local",
            "digest": "sha256:2",
            "finished_at": now - timedelta(minutes=1),
            "requested_at": now - timedelta(minutes=2),
        },
        {
            "_id": f"{sid}-lost",
            "service_id": sid,
            "status": "running",
            "target": "local",
            "requested_at": now - timedelta(hours=2),
        },
        {
            "_id": f"{sid}-queued",
            "service_id": sid,
            "status": "requested",
            "target": "local",
            "requested_at": now - timedelta(minutes=30),
        },
        {
            "_id": f"{sid}-ancient",
            "service_id": sid,
            "status": "requested",
            "target": "local",
            "requested_at": now - timedelta(hours=3),
        },
    ]
    store.deployments.insert_many(docs)
    store.targets.insert_one({"_id": f"{sid}/local", "service_id": sid, "target": "local", "pinned": True})
    try:
        state = MongoState(store)
        assert [d["_id"] for d in await state.successes(sid, "local")] == [f"{sid}-new", f"{sid}-old"]
        assert await state.finished(f"{sid}-old") and not await state.finished(f"{sid}-lost")
        assert await state.pinned(sid, "local") and not await state.pinned(sid, "other")
        lost = {d["_id"] for d in await state.unfinished(now - timedelta(minutes=10))}
        assert lost == {f"{sid}-lost", f"{sid}-ancient"}
        # A fact this process just emitted counts before the projector folded it.
        state.deployments[f"{sid}-lost"] = {
            "_id": f"{sid}-lost",
            "service_id": sid,
            "status": "running",
            "target": "local",
            "digest": "sha256:3",
        }
        state.fold(
            DeploySucceeded.make(sid, DeploySucceededPayload(deployment_id=f"{sid}-lost", service_id=sid))
        )
        assert await state.finished(f"{sid}-lost")
        assert (await state.successes(sid, "local"))[0]["_id"] == f"{sid}-lost"
        assert f"{sid}-lost" not in {d["_id"] for d in await state.unfinished(now - timedelta(minutes=10))}
    finally:
        store.deployments.delete_many({"service_id": sid})
        store.targets.delete_many({"service_id": sid})
