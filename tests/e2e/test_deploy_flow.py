"""End to end as a user: a git repository whose fornax.yml deploys `web` to the `local` Docker target.

Each version is built, pushed and automatically deployed; the app answers on localhost with the
version's content. A rollback brings the earlier digest back and pins the target, so the next
version's automatic deploy is skipped (and recorded). Nothing deployed is left behind.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from services.deployer.targets.docker_host import container_name
from shared.auth import create_user
from tests.fixtures.deploy_world import remove_deployed
from tests.integration.builder_helpers import Api, GitRepo, dockerfile, remove_images
from tests.waits import wait_until

pytestmark = pytest.mark.e2e

FORNAX_YML = "deploy:\n  - web:\n      cluster: local\n      partition: default\n"
APP = dockerfile(
    "RUN mkdir -p /www",
    "COPY index.html /www/index.html",
    "EXPOSE 8080",
    'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]',
)


@pytest.fixture(scope="module")
def api(stack, store, busybox_image) -> Iterator[Api]:
    started = []
    for name in ("projector", "gateway", "builder", "deployer"):
        if name not in stack.procs or stack.procs[name].poll() is not None:
            stack.start_service(name)
            started.append(name)
    user = f"e2edeploy-{uuid.uuid4().hex[:6]}"
    yield Api(stack.gateway_port, user, create_user(store, user))
    remove_images(f"127.0.0.1:{stack.registry_port}/{user}/")
    for name in reversed(started):
        stack.stop(name)


def deployments(api: Api, sid: str) -> dict[str, Any]:
    resp = api.http.get(f"/api/v1/{api.user}/services/{sid}/deployments")
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def deployment_of(api: Api, sid: str, vid: str, status: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        return next(
            (
                d
                for d in deployments(api, sid)["deployments"]
                if d["version_id"] == vid and d["status"] in ("success", "failed", "skipped")
            ),
            None,
        )

    found = wait_until(find, 90, f"the deployment of version {vid}")
    assert found["status"] == status, found
    return found  # type: ignore[no-any-return]


def answer(name: str) -> str:
    container = docker.from_env().containers.get(name)
    binding = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]

    def fetch() -> str:
        try:
            return httpx.get(f"http://{binding['HostIp']}:{binding['HostPort']}/", timeout=2).text.strip()
        except httpx.HTTPError:
            return ""

    return wait_until(fetch, 20, f"{name} answering")  # type: ignore[no-any-return]


def test_versions_deploy_automatically_and_a_rollback_pins(api: Api, tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit({"Dockerfile": APP, "index.html": "release one\n", "fornax.yml": FORNAX_YML})
    sid = api.create_service("shopfront", repo.url)["service_id"]
    client = docker.from_env()
    try:
        assert api.wait_repo_status(sid) == "healthy"
        container = container_name(api.user, "shopfront", "web")  # named after the user too
        v1 = api.new_version(sid, "v1.0.0")
        assert api.wait_version(v1, timeout=120)["status"] == "success"
        d1 = deployment_of(api, sid, v1, "success")
        assert d1["kind"] == "auto" and d1["target"] == "local" and d1["application"] == "web"
        assert answer(container) == "release one"

        repo.commit({"index.html": "release two\n"})
        v2 = api.new_version(sid, "v2.0.0")
        assert api.wait_version(v2, timeout=120)["status"] == "success"
        deployment_of(api, sid, v2, "success")
        assert answer(container) == "release two"
        assert len(client.containers.list(all=True, filters={"label": f"fornax.deploy.service={sid}"})) == 1

        resp = api.http.post(f"/api/v1/{api.user}/services/{sid}/rollback", json={})
        assert resp.status_code == 202, resp.text
        rollback = wait_until(
            lambda: next(
                (
                    d
                    for d in deployments(api, sid)["deployments"]
                    if d["kind"] == "rollback" and d["status"] == "success"
                ),
                None,
            ),
            90,
            "the rollback",
        )
        assert rollback["version_id"] == v1 and rollback["digest"] == d1["digest"]
        assert answer(container) == "release one"

        repo.commit({"index.html": "release three\n"})
        v3 = api.new_version(sid, "v3.0.0")
        assert api.wait_version(v3, timeout=120)["status"] == "success"
        skipped = deployment_of(api, sid, v3, "skipped")
        assert "pinned" in skipped["reason"]
        assert answer(container) == "release one"
        assert [d["kind"] for d in deployments(api, sid)["deployments"]] == [
            "auto",
            "rollback",
            "auto",
            "auto",
        ]
    finally:
        remove_deployed(client, sid)
