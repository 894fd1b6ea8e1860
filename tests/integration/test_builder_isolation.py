"""A build cannot use another user's images, reach deployed apps, or starve the host: each attack
replayed through the real stack (gateway, builder, dockerd, registry, git)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from infra.local.stack import REGISTRY_PASSWORD, REGISTRY_USER
from services.deployer.targets import DeployRequest
from services.deployer.targets.docker_host import DockerHostTarget, app_network
from shared.auth import create_user
from shared.settings import DockerTarget
from tests.fixtures.deploy_world import HTTP_APP, build_and_push, remove_deployed
from tests.integration.builder_helpers import Api, GitRepo, dockerfile, leftovers, remove_images

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PREFIX = "iso-"
CPU_QUOTA = "/sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us"  # cgroup v1


@pytest.fixture(scope="module")
def services(stack, busybox_image, tmp_path_factory):
    """The builder runs where the host holds a stored registry login (`docker login`), as a build
    host often does: no build may use it."""
    login = tmp_path_factory.mktemp("docker-config")
    token = base64.b64encode(f"{REGISTRY_USER}:{REGISTRY_PASSWORD}".encode()).decode()
    (login / "config.json").write_text(json.dumps({"auths": {f"127.0.0.1:{stack.registry_port}": {"auth": token}}}))
    for name in ("projector", "gateway", "logstream"):
        stack.start_service(name)
    stack.stop("builder")
    stack.start_service("builder", instance="builder-login", env={"DOCKER_CONFIG": str(login)})
    yield stack
    stack.stop("builder-login")
    remove_images(f"127.0.0.1:{stack.registry_port}/{PREFIX}")
    stack.start_service("builder")


@pytest.fixture(scope="module")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


def _user(services, store, kind: str) -> Api:
    user = f"{PREFIX}{kind}-{uuid.uuid4().hex[:6]}"
    return Api(services.gateway_port, user, create_user(store, user))


@pytest.fixture(scope="module")
def alice(services, store) -> Api:
    return _user(services, store, "alice")


@pytest.fixture(scope="module")
def bob_image(services, settings, docker_client, busybox_image, store) -> str:
    """Bob's pushed image in the managed registry, holding his secret; gone from the build host."""
    bob = _user(services, store, "bob")
    repo = f"{settings.registry_location}/{bob.user}/web"
    image, _ = build_and_push(docker_client, settings, busybox_image, repo, "v1",
                              "FROM {base}\nRUN echo bob-secret-{text} > /secret\n")
    docker_client.images.remove(image, force=True)
    return image


def _logs(api: Api, vid: str) -> list[dict]:
    lines = []
    with api.http.stream("GET", f"/api/v1/{api.user}/versions/{vid}/logs", params={"follow": "true"},
                         timeout=60) as resp:
        for raw in resp.iter_lines():
            item = json.loads(raw)
            if item.get("final"):
                break
            lines.append(item)
    return lines


def _version(api: Api, tmp: Path, files: dict[str, str], timeout: float = 120) -> tuple[dict, list[dict]]:
    repo = GitRepo(tmp)
    repo.commit(files)
    sid = api.create_service(f"svc-{uuid.uuid4().hex[:8]}", repo.url)["service_id"]
    api.wait_repo_status(sid)
    vid = api.new_version(sid, "v1")
    doc = api.wait_version(vid, timeout=timeout)
    return doc, _logs(api, vid)


def _stages(doc: dict) -> dict[str, str]:
    return {s["name"]: s["status"] for s in doc.get("stages") or []}


# -- attack 4: another user's images --------------------------------------------------------------------
def _vectors(bob: str) -> dict[str, tuple[dict[str, str], str]]:
    """name → (repository files, what the error must name besides the image)."""
    ran = "echo RAN-MARKER"
    ci = f"integration:\n  image: fornax/busybox:latest\n  commands: [{ran!r}]\n"
    return {
        "step_image": ({"fornax.yml": f"integration:\n  image: {bob}\n  commands: [{ran!r}]\n",
                        "Dockerfile": dockerfile()}, "fornax.yml: integration.image"),
        "service_image": ({"fornax.yml": ci + f"  services:\n    db:\n      image: {bob}\n",
                           "Dockerfile": dockerfile()}, "integration.services.db.image"),
        "from": ({"fornax.yml": ci, "Dockerfile": f"FROM {bob}\nRUN cat /secret\n"},
                 "Dockerfile line 1: FROM"),
        "arg_from": ({"fornax.yml": ci,
                      "Dockerfile": f"ARG BASE=fornax/busybox:latest\nARG APP={bob}\nFROM $APP\n"},
                     "Dockerfile line 3: FROM"),
        "copy_from": ({"fornax.yml": ci,
                       "Dockerfile": dockerfile("RUN true", f"COPY --from={bob} /secret /stolen")},
                      "Dockerfile line 3: COPY --from"),
        # pre_build rewrites the (harmless) Dockerfile: checked again before the build
        "pre_build_dockerfile": ({"fornax.yml": ("pre_build:\n  image: fornax/busybox:latest\n  commands: "
                                                 f"[{f'echo FROM {bob} > Dockerfile'!r}]\n"),
                                  "Dockerfile": dockerfile()}, "Dockerfile line 1: FROM"),
    }


@pytest.fixture(scope="module")
def refused(alice: Api, bob_image: str, tmp_path_factory) -> dict[str, tuple[dict, list[dict], str]]:
    """Every vector's version, run side by side (the builder takes several at once)."""
    results: dict[str, tuple[dict, list[dict], str]] = {}

    def one(name: str, files: dict[str, str], named: str) -> None:
        doc, lines = _version(alice, tmp_path_factory.mktemp(name), files)
        results[name] = (doc, lines, named)

    threads = [threading.Thread(target=one, args=(n, f, w)) for n, (f, w) in _vectors(bob_image).items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    return results


@pytest.mark.parametrize("vector", ["step_image", "service_image", "from", "arg_from", "copy_from"])
def test_another_users_image_fails_the_version_before_anything_runs(
        refused, vector: str, bob_image: str, settings) -> None:
    doc, lines, named = refused[vector]
    assert doc["status"] == "failed", doc
    assert bob_image in doc["error"] and named in doc["error"], doc["error"]
    assert "is not allowed" in doc["error"]
    stages = _stages(doc)
    assert stages.get("config") == "failed" or stages == {"clone": "success"}, stages
    assert not {"integration", "pre_build", "build", "push"} & {k for k, v in stages.items() if v != "skipped"}
    texts = [ln["text"] for ln in lines]
    assert not any("RAN-MARKER" in t or "bob-secret" in t for t in texts), texts
    assert leftovers(doc["version_id"] if "version_id" in doc else doc["id"], settings.workspaces) == []


def test_a_dockerfile_written_by_pre_build_is_checked_before_the_build(refused, bob_image: str) -> None:
    doc, lines, named = refused["pre_build_dockerfile"]
    assert doc["status"] == "failed", doc
    assert bob_image in doc["error"] and named in doc["error"] and "is not allowed" in doc["error"], doc
    assert _stages(doc)["pre_build"] == "success" and _stages(doc)["build"] == "failed"
    assert "push" not in _stages(doc)
    assert not any("bob-secret" in ln["text"] or ln["text"].startswith("Step ") for ln in lines)


def test_multi_stage_alias_and_own_images_build(alice: Api, services, settings, docker_client,
                                                busybox_image, tmp_path: Path) -> None:
    """Stages named after earlier ones and the user's own pushed image (pulled with explicit
    credentials: the engine holds no login) are fine."""
    own_repo = f"{settings.registry_location}/{alice.user}/base"
    own, _ = build_and_push(docker_client, settings, busybox_image, own_repo, "v1",
                            "FROM {base}\nRUN echo own-{text} > /own\n")
    docker_client.images.remove(own, force=True)  # only the registry has it
    doc, lines = _version(alice, tmp_path, {"Dockerfile": (
        f"ARG OWN={own}\nFROM $OWN AS first\nRUN cat /own > /copied\n"
        "FROM fornax/busybox:latest AS second\nCOPY --from=first /copied /copied\n"
        "FROM second\nRUN cat /copied\n")})
    assert doc["status"] == "success", (doc.get("error"), [ln["text"] for ln in lines][-20:])
    assert "own-v1" in [ln["text"] for ln in lines]
    image = f"{settings.registry_location}/{alice.user}/"
    # pushed, then off the build host: other builds can reach it only through the registry
    assert not [t for i in docker_client.images.list() for t in i.tags
                if t.startswith(image) and not t.startswith(own_repo)]


# -- attack 7: network and process reach ---------------------------------------------------------------
@pytest.fixture
def deployed_app(settings, docker_client, busybox_image) -> Iterator[tuple[str, str, str]]:
    """A busybox httpd app deployed by the Docker-host target: (its IP, its network, the marker)."""
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    repo = f"{settings.registry_location}/{PREFIX}apps/web{uuid.uuid4().hex[:6]}"
    image, digest = build_and_push(docker_client, settings, busybox_image, repo, marker, HTTP_APP)
    service_id = uuid.uuid4().hex
    req = DeployRequest(deployment_id=uuid.uuid4().hex, service_id=service_id, service_name="isoapp",
                        version_id="v", application="web", image=image, digest=digest, timeout=60)
    try:
        result = asyncio.run(DockerHostTarget("local", DockerTarget(), settings).deploy(req))
        assert result.ok, result.reason
        container = docker_client.containers.list(filters={"label": f"fornax.deploy.service={service_id}"})[0]
        network, info = next(iter(container.attrs["NetworkSettings"]["Networks"].items()))
        assert network == app_network(service_id)  # its own network, not the default bridge
        yield info["IPAddress"], network, marker
    finally:
        remove_deployed(docker_client, service_id)
        remove_images(repo)
    assert not docker_client.networks.list(names=[app_network(service_id)])


def test_docker_build_run_step_cannot_reach_a_deployed_app(alice: Api, deployed_app, docker_client,
                                                           busybox_image, tmp_path: Path) -> None:
    ip, network, marker = deployed_app
    # (busybox's static wget crashes on this machine: nc speaks the HTTP)
    fetch = f"printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} 8080 | tail -n 1"
    # The app answers on its own network (what an unconfined build would have reached) ...
    seen = docker_client.containers.run(busybox_image, ["sh", "-c", fetch], network=network, remove=True)
    assert seen.decode().strip() == marker
    # ... but not from a RUN step of a build.
    doc, lines = _version(alice, tmp_path, {"Dockerfile": dockerfile(
        # (the marker makes each RUN new: a layer cached by an earlier run would print nothing)
        f'RUN out=$({fetch}); echo "got: ${{out:-unreachable}}"; : {marker}',
        f"RUN echo cpu: $(cat {CPU_QUOTA}); : {marker}")})
    # (docker colours a RUN step's stderr: its reset code may open the next line)
    texts = [re.sub(r"\x1b\[[0-9;]*m", "", ln["text"]) for ln in lines]
    assert doc["status"] == "success", (doc.get("error"), texts[-20:])
    assert "got: unreachable" in texts and f"got: {marker}" not in texts, "\n".join(texts)
    assert "cpu: 100000 100000" in texts  # RUN steps have a CPU quota too (builder_cpus: 1)


def test_fork_bomb_fails_its_step_and_the_host_keeps_serving(alice: Api, services, tmp_path: Path) -> None:
    """Processes beyond the pids limit cannot be made: the step fails; meanwhile the gateway answers."""
    limits = f"echo limits: $(cat /sys/fs/cgroup/pids/pids.max {CPU_QUOTA})"
    bomb = "n=0; while [ $n -lt 1000 ]; do sleep 20 & n=$((n+1)); done; echo spawned $n"
    health: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{services.gateway_port}", timeout=10) as http:
            while not stop.is_set():
                t0 = time.monotonic()
                assert http.get("/healthz").status_code == 200
                health.append(time.monotonic() - t0)
                stop.wait(0.2)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        doc, lines = _version(alice, tmp_path, {
            "fornax.yml": "integration:\n  image: fornax/busybox:latest\n  timeout: 60\n"
                          f"  commands: [{limits!r}, {bomb!r}]\n",
            "Dockerfile": dockerfile()})
    finally:
        stop.set()
        prober.join(15)
    texts = [ln["text"] for ln in lines]
    assert doc["status"] == "failed" and _stages(doc)["integration"] == "failed", doc
    assert "exited with code" in doc["error"] and "out of memory" not in doc["error"], doc["error"]
    assert "limits: 256 100000 100000" in texts, texts[:20]  # builder_pids_limit, builder_cpus
    assert any("can't fork" in t for t in texts), texts[-10:]
    assert not any(t.startswith("spawned") for t in texts)
    assert health, "the gateway was not probed"
    print(f"gateway /healthz during the fork bomb: {len(health)} answers, slowest {max(health):.3f}s")
