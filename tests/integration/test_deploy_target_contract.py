"""One contract for every deploy-target adapter, run against the fake, the real Docker engine and the
Kubernetes client on the modelled cluster: success says what runs, failure says why (never raises),
repeating a deploy is safe."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import docker
import pytest
from pydantic import SecretStr

from services.deployer.targets import DeployRequest, Target
from services.deployer.targets.docker_host import DockerHostTarget
from services.deployer.targets.fake import FakeTarget
from services.deployer.targets.kubernetes import KubernetesTarget
from shared.settings import DockerTarget, KubernetesCluster
from tests.fixtures.deploy_world import CRASHING_APP, HTTP_APP, build_and_push, new_id, remove_deployed
from tests.fixtures.k8s_model import DeploymentControllerModel, deployment_controller_model  # noqa: F401


@dataclass
class Subject:
    target: Target
    good: DeployRequest
    make_bad: Callable[[], DeployRequest]  # steers the environment so the next deploy fails


def request(service_id: str, image: str, digest: str | None, version: str = "v1") -> DeployRequest:
    return DeployRequest(
        deployment_id=new_id(),
        service_id=service_id,
        service_name="contract",
        version_id=version,
        application="app",
        image=image,
        digest=digest,
        namespace="contract",
        timeout=20,
    )


class TargetContract:
    async def test_good_deploy_succeeds_and_says_what_runs(self, subject: Subject) -> None:
        result = await subject.target.deploy(subject.good)
        assert result.ok, result.reason
        assert result.detail and not result.reason

    async def test_repeating_a_deploy_is_safe(self, subject: Subject) -> None:
        first = await subject.target.deploy(subject.good)
        again = await subject.target.deploy(subject.good)
        assert first.ok and again.ok, (first.reason, again.reason)

    async def test_bad_deploy_fails_with_a_reason(self, subject: Subject) -> None:
        assert (await subject.target.deploy(subject.good)).ok
        result = await subject.target.deploy(subject.make_bad())
        assert not result.ok
        assert result.reason and not result.detail


class TestFakeTarget(TargetContract):
    @pytest.fixture
    def subject(self) -> Subject:
        fake = FakeTarget()

        def bad() -> DeployRequest:
            fake.fail_with = "image pull error: manifest unknown"
            return request("svc", "reg/a/b:v2", "sha256:2", "v2")

        return Subject(fake, request("svc", "reg/a/b:v1", "sha256:1"), bad)


@pytest.fixture(scope="module")
def docker_images(settings, busybox_image):
    client = docker.from_env()
    repo = f"{settings.registry_location}/contract/app{new_id()[:6]}"
    good = build_and_push(client, settings, busybox_image, repo, "good", HTTP_APP)
    bad = build_and_push(client, settings, busybox_image, repo, "bad", CRASHING_APP)
    service_id = new_id()
    yield service_id, good, bad
    remove_deployed(client, service_id)
    for image in (good[0], bad[0]):
        try:
            client.images.remove(image, force=True)
        except docker.errors.APIError:
            pass


@pytest.mark.integration
class TestDockerHostTarget(TargetContract):
    @pytest.fixture
    def subject(self, settings, docker_images) -> Subject:
        service_id, good, bad = docker_images
        target = DockerHostTarget("contract", DockerTarget(settle_seconds=0.2), settings)
        return Subject(target, request(service_id, *good), lambda: request(service_id, *bad, "v2"))


class TestKubernetesTargetOnTheModel(TargetContract):
    @pytest.fixture
    def subject(self, deployment_controller_model: DeploymentControllerModel) -> Subject:  # noqa: F811
        model = deployment_controller_model
        cluster = KubernetesCluster(
            api_url=str(model.url).rstrip("/"), token=SecretStr("t"), namespaces=["contract"]
        )
        target = KubernetesTarget("model", cluster, poll_interval=0.05)

        def bad() -> DeployRequest:
            model.behaviour = "pull-error"
            return request("svc", "reg/a/b:v2", "sha256:" + "2" * 64, "v2")

        return Subject(target, request("svc", "reg/a/b:v1", "sha256:" + "1" * 64), bad)
