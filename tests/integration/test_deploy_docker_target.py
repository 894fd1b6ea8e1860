"""The Docker-host adapter on the real engine: pull by digest with the registry credentials, HEALTHCHECK
waits, unhealthy and crashing containers keep the previous one, fixed host ports, unreachable engine."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator

import docker
import pytest

from infra.local.procs import free_port
from services.deployer.targets import DeployRequest
from services.deployer.targets.docker_host import DockerHostTarget, container_name
from shared.settings import DockerTarget
from tests.fixtures.deploy_world import CRASHING_APP, HTTP_APP, build_and_push, new_id, remove_deployed
from tests.waits import wait_until

pytestmark = pytest.mark.integration

HEALTHY_APP = HTTP_APP.replace(
    "EXPOSE 8080",
    "EXPOSE 8080\nHEALTHCHECK --interval=300ms --timeout=2s --retries=3 "
    "CMD wget -q -O /dev/null http://127.0.0.1:8080/index.html || exit 1",
)
UNHEALTHY_APP = HTTP_APP.replace(
    "EXPOSE 8080", "EXPOSE 8080\nHEALTHCHECK --interval=300ms --retries=1 CMD false"
)


class Images:
    def __init__(self, settings, busybox: str) -> None:
        self.settings, self.busybox = settings, busybox
        self.client = docker.from_env()
        self.repo = f"{settings.registry_location}/dtarget/app{new_id()[:6]}"
        self.service_id = new_id()
        self.built: list[str] = []

    def make(self, tag: str, dockerfile: str) -> tuple[str, str]:
        image, digest = build_and_push(self.client, self.settings, self.busybox, self.repo, tag, dockerfile)
        self.built.append(image)
        return image, digest

    def request(
        self, image: str, digest: str | None, version: str = "v", timeout: float = 30, user: str = "dtuser"
    ) -> DeployRequest:
        return DeployRequest(
            deployment_id=new_id(),
            service_id=self.service_id if user == "dtuser" else f"{self.service_id}-{user}",
            service_name="dtarget",
            user_id=user,
            version_id=version,
            application="app",
            image=image,
            digest=digest,
            timeout=timeout,
        )

    def running(self):
        return self.client.containers.get(container_name("dtuser", "dtarget", "app"))


@pytest.fixture(scope="module")
def images(settings, busybox_image) -> Iterator[Images]:
    imgs = Images(settings, busybox_image)
    yield imgs
    remove_deployed(imgs.client, imgs.service_id)
    remove_deployed(imgs.client, f"{imgs.service_id}-dtother")
    pulled = [
        i.id
        for i in imgs.client.images.list(filters={"label": "fornax.test"})
        if any(r.startswith(imgs.repo) for r in i.attrs.get("RepoDigests") or [])
    ]
    for image in imgs.built + pulled:
        try:
            imgs.client.images.remove(image, force=True)
        except docker.errors.APIError:
            pass


def deploy(target: DockerHostTarget, req: DeployRequest):
    return asyncio.run(target.deploy(req))


def fetch(port: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2) as resp:
            return resp.read().decode().strip()
    except OSError:
        return ""


def test_pulls_by_digest_with_registry_credentials_when_not_on_the_engine(images: Images, settings) -> None:
    image, digest = images.make("pulled", HTTP_APP)
    images.client.images.remove(image, force=True)  # only the registry has it now
    target = DockerHostTarget("local", DockerTarget(), settings)
    result = deploy(target, images.request(image, digest))
    assert result.ok, result.reason
    assert (
        f"{images.repo}@{digest}" in images.client.images.get(f"{images.repo}@{digest}").attrs["RepoDigests"]
    )
    assert images.running().labels["fornax.deploy.digest"] == digest


def test_deployed_container_does_not_carry_the_build_label(images: Images, settings) -> None:
    """Images built by the builder carry `fornax.version`; the reaper removes containers labelled with a
    finished version, so the deployed container must not inherit it."""
    image, digest = images.make("labelled", HTTP_APP.replace("EXPOSE", "LABEL fornax.version=vbuilt\nEXPOSE"))
    target = DockerHostTarget("local", DockerTarget(), settings)
    assert deploy(target, images.request(image, digest)).ok
    assert images.client.images.get(image).labels["fornax.version"] == "vbuilt"
    assert images.running().labels["fornax.version"] == ""
    assert not images.client.containers.list(all=True, filters={"label": "fornax.version=vbuilt"})


def test_unknown_digest_is_an_image_pull_error(images: Images, settings) -> None:
    target = DockerHostTarget("local", DockerTarget(), settings)
    result = deploy(target, images.request(f"{images.repo}:nope", "sha256:" + "0" * 64))
    assert not result.ok and result.reason.startswith("image pull error for ")
    assert settings.registry_password.get_secret_value() not in result.reason


def test_healthcheck_is_awaited_and_unhealthy_keeps_the_previous(images: Images, settings) -> None:
    target = DockerHostTarget("local", DockerTarget(settle_seconds=0), settings)
    image, digest = images.make("healthy", HEALTHY_APP)
    result = deploy(target, images.request(image, digest, "healthy"))
    assert result.ok, result.reason
    assert images.running().attrs["State"]["Health"]["Status"] == "healthy"
    image, digest = images.make("unhealthy", UNHEALTHY_APP)
    result = deploy(target, images.request(image, digest, "unhealthy"))
    assert not result.ok and result.reason.startswith("container is unhealthy")
    current = images.running()
    assert current.status == "running" and current.labels["fornax.deploy.version"] == "healthy"
    assert (
        len(
            images.client.containers.list(
                all=True, filters={"label": f"fornax.deploy.service={images.service_id}"}
            )
        )
        == 1
    )


def test_fixed_host_port_restarts_the_previous_when_the_new_one_crashes(images: Images, settings) -> None:
    port = free_port()
    target = DockerHostTarget("fixed", DockerTarget(ports={"8080/tcp": port}, stop_seconds=1), settings)
    image, digest = images.make("fixed1", HTTP_APP)
    assert deploy(target, images.request(image, digest, "fixed1")).ok
    assert wait_until(lambda: fetch(str(port)), 20, "fixed1 answering") == "fixed1"
    image, digest = images.make("crash", CRASHING_APP)
    result = deploy(target, images.request(image, digest, "crash"))
    assert not result.ok and "exited with code 3" in result.reason
    assert wait_until(lambda: fetch(str(port)), 20, "fixed1 answering again") == "fixed1"
    image, digest = images.make("fixed2", HTTP_APP)
    assert deploy(target, images.request(image, digest, "fixed2")).ok
    assert wait_until(lambda: fetch(str(port)) == "fixed2", 20, "fixed2 answering")


def test_two_users_apps_of_the_same_name_both_run(images: Images, settings) -> None:
    """Another user's service and application named like ours get their own container, not a refusal."""
    target = DockerHostTarget("local", DockerTarget(settle_seconds=0), settings)
    image, digest = images.make("mine", HTTP_APP)
    assert deploy(target, images.request(image, digest, "mine")).ok
    theirs = deploy(target, images.request(image, digest, "theirs", user="dtother"))
    assert theirs.ok, theirs.reason
    other = images.client.containers.get(container_name("dtother", "dtarget", "app"))
    assert other.status == "running" and other.name != images.running().name
    assert images.running().labels["fornax.deploy.version"] == "mine"


def test_unreachable_engine(images: Images, settings) -> None:
    target = DockerHostTarget("remote", DockerTarget(base_url="unix:///nonexistent/docker.sock"), settings)
    result = deploy(target, images.request("x/y:z", None))
    assert not result.ok and result.reason.startswith("docker host 'remote' unreachable")
