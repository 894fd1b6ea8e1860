"""Deploy handlers against the steerable fake target and the in-memory state (no Kafka, no Docker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.deployer.handlers import Deployer, auto_deployment_id
from services.deployer.state import MemoryState
from services.deployer.targets.fake import FakeTarget
from shared.events import DeployRequested, Event, RollbackRequested, TargetPinChanged, VersionSucceeded
from shared.events.deploys import DeployRequestedPayload, RollbackRequestedPayload, TargetPinChangedPayload
from shared.events.versions import DeploySpec, VersionSucceededPayload

SID = "svc1"


class Harness:
    def __init__(self, target: FakeTarget | None = None) -> None:
        self.state = MemoryState()
        self.state.services[SID] = {"_id": SID, "name": "shop", "user_id": "alice"}
        for n in (1, 2, 3):
            self.state.versions[f"v{n}"] = {
                "_id": f"v{n}",
                "service_id": SID,
                "user_id": "alice",
                "name": f"v{n}",
                "status": "success",
                "image": f"reg:5000/alice/shop:v{n}",
                "digest": f"sha256:{n:064d}",
            }
        self.target = target or FakeTarget()
        self.events: list[Event] = []
        self.deployer = Deployer(
            self.state, {"local": self.target}, self.publish, timeout=5, projection_wait=0.5
        )

    async def publish(self, *events: Event) -> None:
        self.events.extend(events)

    def types(self, deployment_id: str) -> list[str]:
        return [e.type for e in self.events if getattr(e.payload, "deployment_id", None) == deployment_id]

    async def deploy(self, did: str, version: str, kind: str = "deploy", wait: bool = True) -> None:
        await self.deployer.on_deploy_event(
            DeployRequested.make(
                SID,
                DeployRequestedPayload(
                    deployment_id=did,
                    service_id=SID,
                    user_id="alice",
                    version_id=version,
                    target="local",
                    kind=kind,
                ),
                actor="alice",
            )
        )
        if wait:
            await self.deployer.idle()

    async def rollback(self, did: str, to: str | None = None) -> None:
        await self.deployer.on_deploy_event(
            RollbackRequested.make(
                SID,
                RollbackRequestedPayload(
                    deployment_id=did, service_id=SID, user_id="alice", to_version_id=to
                ),
                actor="alice",
            )
        )
        await self.deployer.idle()

    def last(self, etype: str) -> Any:
        return [e for e in self.events if e.type == etype][-1].payload


async def test_deploy_runs_exact_digest_and_reports_success() -> None:
    h = Harness()
    await h.deploy("d1", "v1")
    assert h.types("d1") == ["DeployStarted", "DeploySucceeded"]
    req = h.target.requests[0]
    assert req.reference == "reg:5000/alice/shop@sha256:" + "0" * 63 + "1"
    assert req.application == "shop" and req.service_name == "shop"
    assert h.last("DeployStarted").kind == "deploy"


async def test_failure_reason_is_reported() -> None:
    h = Harness(FakeTarget(fail_with="image pull error: manifest unknown"))
    await h.deploy("d1", "v1")
    assert h.types("d1") == ["DeployStarted", "DeployFailed"]
    assert h.last("DeployFailed").reason == "image pull error: manifest unknown"


async def test_repeated_request_after_finish_does_nothing() -> None:
    h = Harness()
    await h.deploy("d1", "v1")
    await h.deploy("d1", "v1")
    assert h.types("d1") == ["DeployStarted", "DeploySucceeded"]
    assert len(h.target.requests) == 1


async def test_version_of_another_service_or_not_successful_fails() -> None:
    h = Harness()
    h.state.versions["vx"] = {
        "_id": "vx",
        "service_id": "other",
        "status": "success",
        "image": "i",
        "digest": "d",
    }
    h.state.versions["vf"] = {"_id": "vf", "service_id": SID, "status": "failed", "name": "vf"}
    await h.deploy("d1", "vx")
    assert "not found" in h.last("DeployFailed").reason
    await h.deploy("d2", "vf")
    assert "failed, not success" in h.last("DeployFailed").reason
    assert h.target.requests == []


async def test_rollback_redeploys_previous_digest_and_pins() -> None:
    h = Harness()
    await h.deploy("d1", "v1")
    await h.deploy("d2", "v2")
    await h.rollback("r1")
    started = h.last("DeployStarted")
    assert (started.kind, started.version_id, started.digest) == (
        "rollback",
        "v1",
        h.state.versions["v1"]["digest"],
    )
    assert h.target.requests[-1].digest == h.state.versions["v1"]["digest"]
    pin = h.last("TargetPinChanged")
    assert pin.pinned is True and pin.target == "local"
    assert await h.state.pinned(SID, "local")


async def test_rollback_to_named_version_and_nothing_to_roll_back() -> None:
    h = Harness()
    await h.rollback("r0")
    assert "nothing to roll back" in h.last("DeployFailed").reason
    await h.deploy("d1", "v1")
    await h.rollback("r1")
    assert "no earlier successful deployment" in h.last("DeployFailed").reason
    await h.rollback("r2", to="v3")
    assert h.last("DeployStarted").version_id == "v3"
    assert h.types("r2")[-1] == "DeploySucceeded"


async def test_pinned_target_skips_auto_deploys_until_explicit_deploy_or_unpin() -> None:
    h = Harness()
    await h.deploy("d1", "v1")
    await h.deploy("d2", "v2")
    await h.rollback("r1")
    await h.deploy("a1", "v3", kind="auto")
    assert h.types("a1") == ["DeploySkipped"]
    assert "pinned" in h.last("DeploySkipped").reason
    await h.deploy("d3", "v2")  # explicit deploy unpins
    assert h.last("TargetPinChanged").pinned is False
    await h.deploy("a2", "v3", kind="auto")
    assert h.types("a2") == ["DeployStarted", "DeploySucceeded"]
    await h.rollback("r2")
    await h.deployer.on_deploy_event(
        TargetPinChanged.make(
            SID,
            TargetPinChangedPayload(service_id=SID, target="local", pinned=False, reason="unpinned by alice"),
        )
    )
    await h.deploy("a3", "v1", kind="auto")
    assert h.types("a3") == ["DeployStarted", "DeploySucceeded"]


async def test_concurrent_requests_serialised_and_newer_supersedes_queued() -> None:
    gate = asyncio.Event()
    h = Harness(FakeTarget(gate=gate))
    await h.deploy("d1", "v1", wait=False)
    await asyncio.sleep(0.05)  # d1 is now running (held by the gate)
    await h.deploy("d2", "v2", wait=False)
    await h.deploy("d3", "v3", wait=False)
    assert (
        h.types("d2") == ["DeploySkipped"] and "superseded by deployment d3" in h.last("DeploySkipped").reason
    )
    assert len(h.target.requests) == 1  # d3 waits for d1: never two deploys on one target at once
    gate.set()
    await h.deployer.idle()
    assert [r.deployment_id for r in h.target.requests] == ["d1", "d3"]
    assert h.types("d3") == ["DeployStarted", "DeploySucceeded"]


async def test_version_succeeded_with_deploy_specs_requests_auto_deploys() -> None:
    h = Harness()
    event = VersionSucceeded.make(
        "v2",
        VersionSucceededPayload(
            image="reg:5000/alice/shop:v2",
            digest="sha256:abc",
            deploy=[DeploySpec(application="web", cluster="local", partition="prod")],
        ),
        actor="alice",
    )
    await h.deployer.on_version_succeeded(event)
    (req,) = h.events
    assert isinstance(req, DeployRequested) and req.aggregate_id == SID
    assert (req.payload.kind, req.payload.application, req.payload.namespace, req.payload.digest) == (
        "auto",
        "web",
        "prod",
        "sha256:abc",
    )
    assert req.payload.deployment_id == auto_deployment_id("v2", "local", "prod", "web")
    await h.deployer.on_deploy_event(req)
    await h.deployer.idle()
    await h.deployer.on_deploy_event(req)  # redelivered: nothing happens
    await h.deployer.on_version_succeeded(event)  # redelivered: no second request
    assert [e.type for e in h.events].count("DeployRequested") == 1
    await h.deployer.idle()
    assert len(h.target.requests) == 1 and h.target.requests[0].reference == "reg:5000/alice/shop@sha256:abc"


async def test_unknown_target_fails_clearly() -> None:
    h = Harness()
    await h.deployer.on_deploy_event(
        DeployRequested.make(
            SID,
            DeployRequestedPayload(
                deployment_id="d1", service_id=SID, user_id="alice", version_id="v1", target="nowhere"
            ),
        )
    )
    assert "unknown target 'nowhere'" in h.last("DeployFailed").reason


@pytest.mark.parametrize(
    "image,repo",
    [
        ("127.0.0.1:5000/a/b:v1", "127.0.0.1:5000/a/b"),
        ("127.0.0.1:5000/a/b", "127.0.0.1:5000/a/b"),
        ("reg/a/b@sha256:1", "reg/a/b"),
    ],
)
def test_image_repository(image: str, repo: str) -> None:
    from services.deployer.targets import image_repository

    assert image_repository(image) == repo


async def test_lost_deployments_are_failed_not_left_running() -> None:
    from datetime import timedelta

    from shared.events import utcnow

    h = Harness()
    h.state.deployments["lost"] = {
        "_id": "lost",
        "service_id": SID,
        "status": "running",
        "requested_at": utcnow() - timedelta(hours=1),
    }
    h.state.deployments["fresh"] = {
        "_id": "fresh",
        "service_id": SID,
        "status": "running",
        "requested_at": utcnow(),
    }
    assert await h.deployer.sweep_lost() == ["lost"]
    assert h.types("lost") == ["DeployFailed"] and "deployer lost" in h.last("DeployFailed").reason
    assert h.types("fresh") == []
    assert await h.deployer.sweep_lost() == []  # folded as failed: swept once


def test_image_patch_without_template_metadata_adds_it_once() -> None:
    from services.deployer.targets import DeployRequest
    from services.deployer.targets.kubernetes import image_patch

    current = {
        "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "old"}]}}},
    }
    req = DeployRequest(
        deployment_id="d",
        service_id="s",
        service_name="shop",
        version_id="v",
        application="web",
        image="r/a/b:v",
        digest="sha256:1",
    )
    ops = image_patch(current, req, "web")
    assert [op["path"] for op in ops].count("/spec/template/metadata") == 1
    import jsonpatch

    patched = jsonpatch.apply_patch(current, ops)
    assert patched["spec"]["template"]["metadata"] == {
        "labels": {"fornax.io/version": "v"},
        "annotations": {"fornax.io/digest": "sha256:1"},
    }
    assert patched["metadata"]["labels"] == {"fornax.io/version": "v"}
    assert patched["spec"]["template"]["spec"]["containers"] == [{"name": "web", "image": "r/a/b@sha256:1"}]


async def test_outcome_survives_a_broker_blink() -> None:
    from shared.bus import BusUnavailable

    h = Harness()
    failures = {"left": 2}
    real = h.publish

    async def flaky(*events: Event) -> None:
        if any(e.type == "DeploySucceeded" for e in events) and failures["left"]:
            failures["left"] -= 1
            raise BusUnavailable("broker restarting")
        await real(*events)

    h.deployer._publish = flaky
    await h.deploy("d1", "v1")
    assert h.types("d1") == ["DeployStarted", "DeploySucceeded"]


def test_the_deployer_builds_one_adapter_per_target_name() -> None:
    """The names the gateway validates deploys against (shared.settings.target_names) are the adapters the
    deployer has; a Docker host wins over a cluster of the same name."""
    from services.deployer.targets.docker_host import DockerHostTarget
    from services.deployer.targets.kubernetes import KubernetesTarget
    from services.deployer.targets.registry import build_targets
    from shared.settings import DockerTarget, KubernetesCluster, Settings, target_names

    settings = Settings(
        kubernetes_clusters={"prod": KubernetesCluster(api_url="https://k8s.invalid"), "both": KubernetesCluster()},
        docker_targets={"local": DockerTarget(), "both": DockerTarget()},
    )
    assert target_names(settings) == {"prod", "local", "both"}
    targets = build_targets(settings)
    assert set(targets) == target_names(settings)
    assert isinstance(targets["prod"], KubernetesTarget)
    assert isinstance(targets["local"], DockerHostTarget) and isinstance(targets["both"], DockerHostTarget)
    assert target_names(Settings(docker_targets={})) == set()


async def test_every_consumed_event_is_routed_through_one_table() -> None:
    h = Harness()
    assert h.deployer.routes.types == {
        "DeployRequested", "RollbackRequested", "DeployStarted", "DeploySucceeded", "DeployFailed",
        "DeploySkipped", "TargetPinChanged", "VersionSucceeded",
    }
    pin = TargetPinChanged.make(SID, TargetPinChangedPayload(service_id=SID, target="local", pinned=True, reason="r"))
    await h.deployer.handle(pin)  # a fact is folded at once
    assert await h.state.pinned(SID, "local")
    await h.deployer.handle(VersionSucceeded.make("v1", VersionSucceededPayload()))  # no deploy specs: nothing
    assert h.events == []
