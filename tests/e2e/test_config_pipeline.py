"""The config file end to end, as a user: REST API → builder (clone, fornax.yml, containers, build,
push, tag, post_build) → registry; no containers, networks or workspaces left behind."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from shared.auth import create_user
from tests.integration.gateway_helpers import consume_until
from tests.waits import wait_until

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
BUILDER_MODULES = ("services/builder/__main__.py", "services/builder/build.py")
MISSING = [m for m in BUILDER_MODULES if not (ROOT / m).exists()]
if MISSING:
    pytest.skip(f"no builder: missing {', '.join(MISSING)}", allow_module_level=True)

TERMINAL = ("success", "failed", "cancelled")
SERVICE_LOOP = "while true; do echo pong | nc -l -p 27017; done"
REACH = ("for i in $(seq 1 50); do if echo ping | nc -w 2 mongo 27017 > reply; then break; fi; sleep 0.2; "
         "done; cat reply")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


class System:
    def __init__(self, stack: Any, settings: Any, store: Any, base: Path, busybox: str) -> None:
        self.stack, self.settings, self.store, self.base, self.busybox = stack, settings, store, base, busybox
        self.user = f"cfg{uuid.uuid4().hex[:8]}"
        self.token = create_user(store, self.user)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{stack.gateway_port}", timeout=30,
                                 headers={"Authorization": f"Bearer {self.token}"})
        self.docker = docker.from_env()
        self.version_ids: list[str] = []
        self.repos: list[str] = []

    def repository(self, files: dict[str, str]) -> str:
        """A bare git repository holding `files` on main; returns its file:// URL."""
        name = f"repo{len(self.repos)}"
        bare, work = self.base / f"{name}.git", self.base / f"{name}-work"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
        subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
        for path, text in files.items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_text(text)
        git(work, "add", "-A")
        git(work, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "init")
        git(work, "push", "-q", str(bare), "main")
        self.repos.append(name)
        return f"file://{bare}"

    def service(self, files: dict[str, str]) -> tuple[str, str]:
        name = f"svc{uuid.uuid4().hex[:8]}"
        resp = self.http.post(f"/api/v1/{self.user}/services",
                              json={"name": name,
                                    "repository": {"url": self.repository(files), "vcs": "git"}})
        assert resp.status_code in (201, 202), resp.text
        service_id = resp.json()["service_id"]
        wait_until(lambda: self.http.get(f"/api/v1/{self.user}/services/{service_id}").status_code == 200,
                   30, "the service to be readable")
        return service_id, name

    def version(self, service_id: str, name: str = "v1",
                operations: list[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"service_id": service_id, "name": name}
        if operations is not None:
            body["operations"] = operations
        resp = self.http.post(f"/api/v1/{self.user}/versions", json=body)
        assert resp.status_code in (201, 202), resp.text
        vid = resp.json()["version_id"]
        self.version_ids.append(vid)

        def done() -> dict[str, Any] | None:
            doc = self.http.get(f"/api/v1/{self.user}/versions/{vid}").json()
            return doc if doc.get("status") in TERMINAL else None

        return wait_until(done, 180, f"version {vid} to end")  # type: ignore[no-any-return]

    def tags(self, service_name: str) -> list[str]:
        url = f"http://{self.settings.registry_location}/v2/{self.user}/{service_name}/tags/list"
        resp = httpx.get(url, auth=("admin", "admin_password"), timeout=10)
        if resp.status_code == 404:
            return []
        resp.raise_for_status()
        return resp.json().get("tags") or []

    def run_image(self, service_name: str, tag: str, *cmd: str) -> str:
        repo = f"{self.settings.registry_location}/{self.user}/{service_name}"
        auth = {"username": "admin", "password": "admin_password"}
        self.docker.images.pull(repo, tag=tag, auth_config=auth)
        # Built images carry fornax.version=<id> and containers inherit it: blank it, or the builder's
        # reaper (removing leftovers of finished versions) may remove this container under us.
        return self.docker.containers.run(f"{repo}:{tag}", list(cmd), remove=True,
                                          labels={"fornax.version": ""}).decode()

    def events(self, version_id: str) -> list[dict[str, Any]]:
        return list(self.store.events.find({"aggregate_id": version_id}).sort("occurred_at", 1))

    def logs(self, version_id: str, until: str) -> list[str]:
        """The version's log lines (from fornax.logs, in sequence order) once `until` is among them."""
        found = consume_until(self.settings.kafka_bootstrap, self.settings.topic("logs"),
                              lambda e: e["payload"]["version_id"] == version_id
                              and e["payload"]["text"] == until, count=1, timeout=30)
        assert found, f"no log line {until!r}"
        lines = consume_until(self.settings.kafka_bootstrap, self.settings.topic("logs"),
                              lambda e: e["payload"]["version_id"] == version_id, count=10**9, timeout=3)
        return [e["payload"]["text"] for e in sorted(lines, key=lambda e: e["payload"]["seq"])]


@pytest.fixture(scope="module")
def system(stack, settings, store, busybox_image, tmp_path_factory) -> Iterator[System]:
    started = []
    for name in ("projector", "gateway", "builder", "logstream"):
        if name not in stack.procs or stack.procs[name].poll() is not None:
            stack.start_service(name)
            started.append(name)
    s = System(stack, settings, store, tmp_path_factory.mktemp("config-e2e"), busybox_image)
    try:
        yield s
    finally:
        leaks = []
        for vid in s.version_ids:
            selector = {"label": f"fornax.version={vid}"}
            leaks += [c.name for c in s.docker.containers.list(all=True, filters=selector)]
            leaks += [n.name for n in s.docker.networks.list(filters=selector)]
            if settings.workspaces.exists():
                leaks += [str(p) for p in settings.workspaces.iterdir() if vid in p.name]
        for image in s.docker.images.list(name=f"{settings.registry_location}/{s.user}/*"):
            try:
                s.docker.images.remove(image.id, force=True)
            except docker.errors.APIError:
                pass
        s.http.close()
        for name in reversed(started):
            stack.stop(name)
        assert leaks == [], f"left behind: {leaks}"


def seed_files(busybox: str) -> dict[str, str]:
    return {
        "fornax.yml": f"""\
integration:
  image: {busybox}
  commands:
    - '{REACH}'
    - grep pong reply
  services:
    mongo:
      image: {busybox}
      commands: ['{SERVICE_LOOP}']
pre_build:
  image: {busybox}
  environment: [STEP_NAME=seed-pre-build]
  commands:
    - echo "$STEP_NAME" > /root/newfile
  outputs: [/root/newfile]
post_build:
  image: {busybox}
  commands: [echo post build ran]
""",
        "Dockerfile": f"FROM {busybox}\nCOPY newfile /newfile\n",
    }


def test_seed_scenario_end_to_end(system: System) -> None:
    service_id, name = system.service(seed_files(system.busybox))
    version = system.version(service_id, "v1")
    assert version["status"] == "success", version
    stages = {s["name"]: s["status"] for s in version["stages"]}
    for stage in ("integration", "pre_build", "build", "push", "tag", "post_build"):
        assert stages.get(stage) == "success", stages
    assert "v1" in system.tags(name)
    assert system.run_image(name, "v1", "cat", "/newfile") == "seed-pre-build\n"
    # post_build ran only after the push (and the tag)
    types = [(e["type"], (e.get("payload") or {}).get("stage")) for e in system.events(version["version_id"])]
    pushed = types.index(("ImagePushed", None))
    assert types.index(("StageStarted", "post_build")) > pushed
    logs = system.logs(version["version_id"], until="post build ran")
    assert "$ grep pong reply" in logs and "pong" in logs
    order = [logs.index(line) for line in ("$ grep pong reply", "$ echo post build ran", "post build ran")]
    assert order == sorted(order)


def test_failing_integration_stops_before_build(system: System) -> None:
    files = seed_files(system.busybox)
    files["fornax.yml"] = files["fornax.yml"].replace("    - grep pong reply\n",
                                                      "    - echo failing now; exit 3\n")
    service_id, name = system.service(files)
    version = system.version(service_id, "v1")
    assert version["status"] == "failed", version
    stages = {s["name"]: s for s in version["stages"]}
    assert stages["integration"]["status"] == "failed"
    assert "exited with code 3" in (stages["integration"]["error"] or "") + (version.get("error") or "")
    assert "build" not in stages or stages["build"]["status"] in (None, "skipped")
    assert system.tags(name) == []


def test_integration_only_operations_push_nothing(system: System) -> None:
    service_id, name = system.service(seed_files(system.busybox))
    version = system.version(service_id, "ci-only", operations=["integration"])
    assert version["status"] == "success", version
    stages = {s["name"]: s["status"] for s in version["stages"]}
    assert stages.get("integration") == "success"
    assert not {"build", "push", "tag"} & {s for s, st in stages.items() if st == "success"}
    assert system.tags(name) == []


def test_dockerfile_path_in_a_subdirectory(system: System) -> None:
    files = {
        "fornax.yml": "build:\n  dockerfile_path: docker/app/Dockerfile\n",
        "docker/app/Dockerfile": f"FROM {system.busybox}\nCOPY marker.txt /marker.txt\n",
        "docker/app/marker.txt": "from the subdirectory\n",
        "Dockerfile": f"FROM {system.busybox}\nRUN false\n",  # not this one
    }
    service_id, name = system.service(files)
    version = system.version(service_id, "sub")
    assert version["status"] == "success", version
    assert system.run_image(name, "sub", "cat", "/marker.txt") == "from the subdirectory\n"


def test_bad_yaml_fails_naming_key_and_line(system: System) -> None:
    files = {
        "fornax.yml": f"integration:\n  image: {system.busybox}\n  comands: [echo typo]\n",
        "Dockerfile": f"FROM {system.busybox}\n",
    }
    service_id, name = system.service(files)
    version = system.version(service_id, "bad")
    assert version["status"] == "failed", version
    errors = [version.get("error") or ""] + [s.get("error") or "" for s in version["stages"]]
    assert any("fornax.yml line 3: integration.comands: unknown key" in e for e in errors), errors
    assert system.tags(name) == []


def test_a_version_asking_more_than_the_user_quota_fails_at_once(system: System) -> None:
    files = {
        "fornax.yml": "resources: {memory: 4096}\n",  # more than the user's 1 GiB
        "Dockerfile": f"FROM {system.busybox}\n",
    }
    service_id, name = system.service(files)
    version = system.version(service_id, "huge")
    assert version["status"] == "failed", version
    assert "more than the quota" in (version.get("error") or ""), version
    assert system.tags(name) == []
