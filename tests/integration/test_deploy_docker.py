"""Deploys to the real local Docker engine through the whole path: gateway HTTP -> fornax.deploys ->
deployer worker -> dockerd, with versions put in place by real version events folded by the projector.

Scenario (one service, target `local`): deploy v1, deploy v2 (v1 gone), v3 crashes (v2 keeps running),
rollback (v1's digest runs, target pinned), an automatic deploy is skipped while pinned, unpin lets
the next one through, and the history shows all of it. Plus: another user can do none of it.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import docker
import httpx
import pytest

from shared.auth import create_user
from shared.events.versions import DeploySpec
from tests.fixtures.deploy_world import (
    CRASHING_APP,
    HTTP_APP,
    build_and_push,
    new_id,
    publish,
    remove_deployed,
    service_events,
    version_events,
)
from tests.waits import wait_until

pytestmark = pytest.mark.integration
APP = "web"


class World:
    def __init__(self, stack: Any, settings: Any, store: Any, busybox: str) -> None:
        self.settings, self.store = settings, store
        self.docker = docker.from_env()
        suffix = new_id()[:6]
        self.user, self.other = f"dalice{suffix}", f"dbob{suffix}"
        self.token, self.other_token = create_user(store, self.user), create_user(store, self.other)
        self.service_id, self.name = new_id(), f"shop{suffix}"
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{stack.gateway_port}", timeout=30)
        repo = f"{settings.registry_location}/{self.user}/{self.name}"
        self.images: dict[str, tuple[str, str]] = {}
        for tag, dockerfile in (("v1", HTTP_APP), ("v2", HTTP_APP), ("v3", CRASHING_APP)):
            self.images[tag] = build_and_push(self.docker, settings, busybox, repo, tag, dockerfile)
        self.versions: dict[str, str] = {}
        publish(settings, *service_events(self.service_id, self.user, self.name))
        for tag in ("v1", "v2", "v3"):
            self.add_version(tag, tag)

    def add_version(self, name: str, image_tag: str, deploy: list[DeploySpec] | None = None) -> str:
        vid = new_id()
        self.versions[name] = vid
        image, digest = self.images[image_tag]
        publish(self.settings, *version_events(self.service_id, self.user, vid, name, image, digest, deploy))
        wait_until(
            lambda: (self.store.versions.find_one({"_id": vid}) or {}).get("status") == "success",
            what=f"version {name} folded as success",
        )
        return vid

    def url(self, action: str, user: str | None = None) -> str:
        return f"/api/v1/{user or self.user}/services/{self.service_id}/{action}"

    def post(self, action: str, body: dict[str, Any], token: str | None = None, user: str | None = None):
        return self.http.post(
            self.url(action, user), json=body, headers={"Authorization": f"Bearer {token or self.token}"}
        )

    def history(self, token: str | None = None, user: str | None = None) -> httpx.Response:
        return self.http.get(
            self.url("deployments", user), headers={"Authorization": f"Bearer {token or self.token}"}
        )

    def finished(self, deployment_id: str) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            for d in self.history().json()["deployments"]:
                if d["deployment_id"] == deployment_id and d["status"] in ("success", "failed", "skipped"):
                    return d
            return None

        return wait_until(done, 90, f"deployment {deployment_id} to finish")  # type: ignore[no-any-return]

    def deploy(self, version: str) -> dict[str, Any]:
        resp = self.post(
            "deploy", {"version_id": self.versions[version], "target": "local", "application": APP}
        )
        assert resp.status_code == 202, resp.text
        return self.finished(resp.json()["deployment_id"])

    def containers(self) -> list[Any]:
        return self.docker.containers.list(
            all=True, filters={"label": f"fornax.deploy.service={self.service_id}"}
        )

    def running(self) -> Any:
        (container,) = self.containers()
        assert container.name == f"fornax-{self.user}.{self.name}.{APP}" and container.status == "running"
        return container

    def answer(self, container: Any) -> str:
        binding = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]
        url = f"http://{binding['HostIp']}:{binding['HostPort']}/index.html"

        def fetch() -> str:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    return resp.read().decode().strip()
            except OSError:
                return ""

        return wait_until(fetch, 20, f"the app answering on {url}")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def world(stack, settings, store, busybox_image) -> Iterator[World]:
    started = []
    for name in ("projector", "deployer", "gateway"):
        if name not in stack.procs or stack.procs[name].poll() is not None:
            stack.start_service(name)
            started.append(name)
    w = World(stack, settings, store, busybox_image)
    try:
        yield w
    finally:
        remove_deployed(w.docker, w.service_id)
        for image, _ in w.images.values():
            try:
                w.docker.images.remove(image, force=True)
            except docker.errors.APIError:
                pass
        w.http.close()
        for name in reversed(started):
            stack.stop(name)


def test_deploy_rollback_pin_and_history(world: World) -> None:
    w = world
    digest = {tag: d for tag, (_, d) in w.images.items()}

    d1 = w.deploy("v1")
    assert d1["status"] == "success", d1
    c = w.running()
    assert c.labels["fornax.deploy.version"] == w.versions["v1"]
    assert c.labels["fornax.deploy.digest"] == digest["v1"]
    assert w.answer(c) == "v1"
    assert "8080/tcp -> 127.0.0.1:" in d1["detail"]

    d2 = w.deploy("v2")
    assert d2["status"] == "success", d2
    c = w.running()  # exactly one container: v1's is gone
    assert c.labels["fornax.deploy.version"] == w.versions["v2"]
    assert w.answer(c) == "v2"

    d3 = w.deploy("v3")
    assert d3["status"] == "failed"
    assert d3["reason"].startswith("container exited with code 3"), d3["reason"]
    assert "config missing" in d3["reason"]
    c = w.running()  # the crashed container was removed; v2 still serves
    assert c.labels["fornax.deploy.version"] == w.versions["v2"]
    assert w.answer(c) == "v2"

    resp = w.post("rollback", {})
    assert resp.status_code == 202, resp.text
    r1 = w.finished(resp.json()["deployment_id"])
    assert (r1["status"], r1["kind"], r1["version_id"], r1["digest"]) == (
        "success",
        "rollback",
        w.versions["v1"],
        digest["v1"],
    )
    c = w.running()
    assert c.labels["fornax.deploy.digest"] == digest["v1"] and w.answer(c) == "v1"
    pins = wait_until(lambda: [t for t in w.history().json()["targets"] if t["pinned"]], 30, "the pin")
    assert pins[0]["target"] == "local" and "rolled back" in pins[0]["pin_reason"]

    # An automatic deploy (config `deploy` section) to the pinned target is skipped, with the reason.
    w.add_version("v4", "v2", deploy=[DeploySpec(application=APP, cluster="local")])
    skipped = wait_until(
        lambda: [
            d
            for d in w.history().json()["deployments"]
            if d["version_id"] == w.versions["v4"] and d["status"] == "skipped"
        ],
        60,
        "skip",
    )
    assert "pinned" in skipped[0]["reason"]
    assert w.running().labels["fornax.deploy.digest"] == digest["v1"]

    resp = w.post("unpin", {"target": "local"})
    assert resp.status_code == 202, resp.text
    wait_until(lambda: not [t for t in w.history().json()["targets"] if t["pinned"]], 30, "unpinned")
    w.add_version("v5", "v2", deploy=[DeploySpec(application=APP, cluster="local")])
    auto = wait_until(
        lambda: [
            d
            for d in w.history().json()["deployments"]
            if d["version_id"] == w.versions["v5"] and d["status"] == "success"
        ],
        90,
        "auto",
    )
    assert auto[0]["kind"] == "auto"
    c = w.running()
    assert c.labels["fornax.deploy.version"] == w.versions["v5"] and w.answer(c) == "v2"

    history = w.history().json()["deployments"]
    assert [(d["kind"], d["status"], d["version_name"]) for d in history] == [
        ("auto", "success", "v5"),
        ("auto", "skipped", "v4"),
        ("rollback", "success", "v1"),
        ("deploy", "failed", "v3"),
        ("deploy", "success", "v2"),
        ("deploy", "success", "v1"),
    ]
    for d in history:
        assert d["target"] == "local" and d["requested_at"]
        if d["status"] != "skipped":
            assert d["actor"] == w.user and d["digest"] and d["duration"] is not None and d["finished_at"]
    assert w.user not in str([d["reason"] for d in history])  # no secrets, no registry credentials
    assert w.settings.registry_password.get_secret_value() not in w.history().text


def test_validation_errors(world: World) -> None:
    w = world
    resp = w.post("deploy", {"version_id": w.versions["v1"], "target": "mars"})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "target"
    resp = w.post("deploy", {"version_id": "nope", "target": "local"})
    assert resp.status_code == 404 and resp.json()["error"]["field"] == "version_id"
    resp = w.post("deploy", {"target": "local"})
    assert resp.status_code == 422
    pending = new_id()
    publish(w.settings, version_events(w.service_id, w.user, pending, "pending1", *w.images["v1"])[0])
    wait_until(lambda: w.store.versions.find_one({"_id": pending}), what="pending version folded")
    resp = w.post("deploy", {"version_id": pending, "target": "local"})
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "version_not_successful"
    resp = w.post("rollback", {"to_version_id": pending})
    assert resp.status_code == 409 and resp.json()["error"]["field"] == "to_version_id"
    resp = w.post("rollback", {"target": "mars"})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "target"
    resp = w.post("unpin", {"target": "mars"})
    assert resp.status_code == 422
    resp = w.post("deploy", {"version_id": w.versions["v1"], "target": "local", "application": "bad name!"})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "application"


def test_another_user_can_neither_deploy_roll_back_unpin_nor_list(world: World) -> None:
    w = world
    before = w.history().json()["total"]
    body = {"version_id": w.versions["v1"], "target": "local"}
    for user, status in ((w.user, 403), (w.other, 404)):  # acting for alice / alice's service under bob
        assert w.post("deploy", body, token=w.other_token, user=user).status_code == status
        assert w.post("rollback", {}, token=w.other_token, user=user).status_code == status
        assert w.post("unpin", {"target": "local"}, token=w.other_token, user=user).status_code == status
        resp = w.history(token=w.other_token, user=user)
        assert resp.status_code == status and "deployments" not in resp.json()
    assert w.http.get(w.url("deployments")).status_code == 401
    assert w.history().json()["total"] == before


def test_demo_deploy_and_probe(world: World, stack) -> None:
    from infra.demo.deploy import deploy_and_probe

    w = world
    summary = deploy_and_probe(
        f"http://127.0.0.1:{stack.gateway_port}", w.token, w.user, w.service_id, w.versions["v1"]
    )
    assert f"container fornax-{w.user}.{w.name}.{w.name} running" in summary
    assert summary.endswith("answered HTTP 200: v1"), summary


def test_demo_step_deploys_the_demo_version(world: World, stack) -> None:
    from types import SimpleNamespace

    from infra.demo.deploy import demo_step

    w = world
    lines: list[str] = []
    demo = SimpleNamespace(
        http=httpx.Client(base_url=f"http://127.0.0.1:{stack.gateway_port}"),
        token=w.token,
        user=w.user,
        service_id=w.service_id,
        version={"version_id": w.versions["v2"]},
        out=lines.append,
    )
    assert demo_step(demo) is None, lines
    assert lines[-1].endswith("answered HTTP 200: v2"), lines
    demo.version = {"version_id": "no-such-version"}
    assert demo_step(demo) == 1 and "deploy refused (404)" in lines[-1]
