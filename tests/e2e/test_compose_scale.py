"""The whole system in containers, scaled out (docker-compose.yml + infra/compose/local.yml): two gateways
and two logstreams behind HAProxy, two builders, a deployer, the projector, on images built here.

One stack for the module; the scenarios run in order against it:
  1. `fornax demo` through HAProxy; a pipeline step reads the repository at /workspace (builders and the
     host's engine see the workspace at the same path);
  2. kill -9 of a gateway under a steady webhook load: out of rotation within 2 s, no failed webhook
     beyond the requests in flight on it, every accepted delivery archived;
  3. 8 versions over two builders, one builder killed mid-build: all end within 60 s, none built twice;
  4. a viewer on one logstream sees builds run by either builder; a viewer whose logstream is killed
     resumes through HAProxy from `since` with no gap and no duplicate;
  5. a rolling restart of every Fornax service instance under load: no failed webhook, no lost push, no
     failed version.
The images are built once (cached by content hash: a warm run builds nothing).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from infra.compose.stack import ComposeStack, load
from shared.auth import create_user
from shared.settings import Settings
from shared.store import Store
from tests.e2e.compose_helpers import (
    NOT_YET,
    Load,
    container_ip,
    docker,
    hostname_of,
    server_down,
    server_up,
    wait_all_archived,
    wait_worker_ready,
)
from tests.integration.builder_helpers import Api, GitRepo, dockerfile
from tests.integration.gateway_helpers import github_push
from tests.waits import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

STEP_LINES = 30
PIPELINE = f"""integration:
  image: fornax/busybox:latest
  commands:
    - test -f /workspace/index.html
    - cat /workspace/index.html
    - for i in $(seq 1 {STEP_LINES}); do echo "step line $i"; sleep 0.1; done
"""


@pytest.fixture(scope="module")
def compose() -> Iterator[ComposeStack]:
    reuse = os.environ.get("FORNAX_COMPOSE_REUSE")  # a stack left up by `python -m infra.compose.stack up`
    if reuse:
        yield load(Path(reuse))
        return
    from infra.compose.images import ensure_images
    from infra.local.images import ensure_busybox_image

    ensure_busybox_image()
    started = time.monotonic()
    images = ensure_images()
    print(f"images ready in {time.monotonic() - started:.1f}s")
    home = Path(tempfile.mkdtemp(prefix="fornax-compose-"))
    stack = ComposeStack(f"fxtest{os.getpid()}", home, images.env())
    try:
        started = time.monotonic()
        stack.up()
        print(f"compose stack up in {time.monotonic() - started:.1f}s")
        yield stack
    finally:
        try:
            stack.down()
        finally:
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def store(compose: ComposeStack) -> Iterator[Any]:
    s = Store(Settings(mongo_url=f"mongodb://127.0.0.1:{compose.ports['mongo']}"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def api(compose: ComposeStack, store: Any) -> Api:
    user = f"sc-{uuid.uuid4().hex[:6]}"
    return Api(compose.ports["api"], user, create_user(store, user))


@pytest.fixture(scope="module")
def repo(compose: ComposeStack, api: Api) -> dict[str, Any]:
    """A git repository under the stack's host dir (the builders see it at the same path) with a
    pipeline whose step reads the workspace."""
    git = GitRepo(Path(tempfile.mkdtemp(prefix="repo-", dir=compose.home)))
    git.commit({"Dockerfile": dockerfile("COPY index.html /www/index.html"), "index.html": "<h1>scaled</h1>\n",
                "fornax.yml": PIPELINE})
    secret = "scale-" + uuid.uuid4().hex
    sid = api.create_service(f"scaled-{uuid.uuid4().hex[:6]}", git.url, webhook_secret=secret)["service_id"]
    assert api.wait_repo_status(sid) == "healthy"
    return {"git": git, "sid": sid, "secret": secret}


@pytest.fixture(scope="module")
def builders_seen() -> dict[str, set[str]]:
    """version id -> builder hosts seen working on it (filled by the builder scenario, read by the next)."""
    return {}


def _events(store: Any, vid: str, kind: str) -> int:
    return store.events.count_documents({"aggregate_id": vid, "type": kind})


def test_demo_through_haproxy_and_workspace_steps(compose: ComposeStack, api: Api, repo: dict[str, Any]) -> None:
    # `fornax demo` on the host: API through HAProxy, its repository under the builders' shared host dir
    # (a service name of its own: the deployed container's name is fornax-NAME-NAME on the shared engine)
    res = subprocess.run([sys.executable, "-m", "services.cli", "demo", "--service", f"demo-{compose.project}"],
                         capture_output=True, text=True,
                         timeout=300, env={**os.environ, **compose.client_env()})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "answered HTTP 200" in res.stdout, res.stdout
    vid = api.new_version(repo["sid"], "ws-check")
    doc = api.wait_version(vid, timeout=120)
    assert doc["status"] == "success", doc


def test_gateway_kill9_under_load(compose: ComposeStack, store: Any, repo: dict[str, Any]) -> None:
    victim = compose.containers("gateway-1")[0]
    load_ = Load(compose.api, repo["git"].url, repo["secret"], workers=2, pause=0.05).start()
    try:
        time.sleep(2)
        killed = time.monotonic()  # from before the kill: docker returns once the process is dead
        docker("kill", "-s", "KILL", victim)
        try:
            wait_until(lambda: server_down(compose, "gateways/gw1"), 10, "HAProxy to mark gw1 down", every=0.05,
                       retry=NOT_YET)
            out_after = time.monotonic() - killed
            time.sleep(2)  # load on the surviving gateway alone
        finally:
            docker("start", victim)
        wait_until(lambda: server_up(compose, "gateways/gw1"), 60, "gw1 back in rotation", retry=NOT_YET)
        time.sleep(1)
    finally:
        results = load_.stop()
    failed = load_.failed
    print(f"gw1 out of rotation {out_after:.2f}s after kill -9; {len(results)} webhooks, {len(failed)} failed")
    assert out_after <= 2.0
    # at most the requests in flight on the killed gateway: one per load worker
    assert len(failed) <= load_.workers, failed[:5]
    accepted = load_.accepted
    wait_all_archived(compose, store, accepted)


def test_builder_killed_mid_build(compose: ComposeStack, api: Api, store: Any, repo: dict[str, Any],
                                  builders_seen: dict[str, set[str]]) -> None:
    builders = {hostname_of(c): c for c in compose.containers("builder")}
    assert len(builders) == 2
    vids = [api.new_version(repo["sid"], f"fo-{i}-{uuid.uuid4().hex[:4]}") for i in range(8)]
    workers = builders_seen
    workers.update({v: set() for v in vids})

    def note_workers() -> None:
        for hb in store.builder_heartbeats.find({"_id": {"$in": vids}}):
            if hb.get("worker"):
                workers[hb["_id"]].add(hb["worker"].split("@", 1)[1].split(":", 1)[0])

    def both_building() -> str | None:
        note_workers()
        busy = {w for ws in workers.values() for w in ws}
        return sorted(busy)[0] if len(busy) == 2 or (busy and time.monotonic() - t0 > 20) else None

    t0 = time.monotonic()
    victim_host = wait_until(both_building, 60, "builds running on the builders", every=0.1, retry=NOT_YET)
    victim = builders[victim_host]
    docker("kill", "-s", "KILL", victim)
    killed = time.monotonic()
    docs: dict[str, dict] = {}
    try:
        while len(docs) < len(vids) and time.monotonic() - killed < 90:
            note_workers()
            for v in vids:
                if v not in docs:
                    doc = api.version(v) or {}
                    if doc.get("status") in ("success", "failed", "cancelled"):
                        docs[v] = doc
            time.sleep(0.3)
        took = time.monotonic() - killed
    finally:
        docker("start", victim)
    seen = {k: sorted(v) for k, v in workers.items()}
    print(f"8 versions ended {took:.1f}s after kill -9 of builder {victim_host}: "
          f"{sorted(d['status'] for d in docs.values())}; workers {json.dumps(seen)}")
    assert len(docs) == len(vids) and took <= 60, docs
    assert all(d["status"] == "success" for d in docs.values()), [d.get("error") for d in docs.values()]
    for v in vids:  # none built twice: one image built, one pushed, one success per version
        assert (_events(store, v, "ImageBuilt"), _events(store, v, "ImagePushed"),
                _events(store, v, "VersionSucceeded")) == (1, 1, 1), v
    wait_worker_ready(victim, killed)


async def _watch(url: str, stop_after: int | None = None) -> tuple[list[int], dict | None]:
    seqs: list[int] = []
    final = None
    try:
        async with connect(url, max_size=None, open_timeout=10) as ws:
            async for frame in ws:
                data = json.loads(frame)
                for line in data if isinstance(data, list) else ([] if data.get("final") else [data]):
                    seqs.append(line["seq"])
                if isinstance(data, dict) and data.get("final"):
                    final = data
                    break
                if stop_after is not None and len(seqs) >= stop_after:
                    break
    except ConnectionClosed:
        pass
    return seqs, final


def _archived_seqs(store: Any, vid: str) -> list[int]:
    return sorted(d["seq"] for d in store.logs.find({"version_id": vid}, {"seq": 1}))


def test_logstreams_any_builder_and_resume_after_kill(compose: ComposeStack, api: Api, store: Any,
                                                      repo: dict[str, Any],
                                                      builders_seen: dict[str, set[str]]) -> None:
    ls1, ls2 = compose.containers("logstream-1")[0], compose.containers("logstream-2")[0]
    token = api.http.headers["Authorization"].split()[1]
    # builds run by either builder, read on one logstream instance (history and outcome)
    workers = builders_seen
    by_builder: dict[str, str] = {}
    for vid, ws in workers.items():
        for w in ws:
            by_builder.setdefault(w, vid)
    assert len(by_builder) == 2, workers
    for host, vid in by_builder.items():
        url = f"ws://{container_ip(ls1)}:8000/ws/versions/{vid}/logs?since=0&token={token}"
        seqs, final = asyncio.run(_watch(url))
        assert final is not None and final.get("status") == "success", (host, final)
        assert seqs == _archived_seqs(store, vid) and len(seqs) > STEP_LINES, (host, seqs[:5])

    # a live build followed on logstream-2, which is killed mid-build: resume through HAProxy from since
    vid = api.new_version(repo["sid"], f"ls-{uuid.uuid4().hex[:6]}")
    wait_until(lambda: (api.version(vid) or {}).get("status") == "running", 60, f"version {vid} running", retry=NOT_YET)
    first, _ = asyncio.run(_watch(f"ws://{container_ip(ls2)}:8000/ws/versions/{vid}/logs?token={token}",
                                  stop_after=10))
    assert first, "no line from logstream-2"
    docker("kill", "-s", "KILL", ls2)
    try:
        rest, final = asyncio.run(_watch(f"ws://127.0.0.1:{compose.ports['logs']}/ws/versions/{vid}/logs"
                                         f"?since={first[-1]}&token={token}"))
    finally:
        docker("start", ls2)
    seqs = first + rest
    assert final is not None and final.get("status") == "success", final
    assert seqs == sorted(set(seqs)) == _archived_seqs(store, vid), (first[-3:], rest[:3])
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    wait_until(lambda: server_up(compose, "logstreams/ls2"), 60, "ls2 back in rotation", retry=NOT_YET)


def test_rolling_restart_under_load(compose: ComposeStack, api: Api, store: Any, repo: dict[str, Any]) -> None:
    order = ["gateway-1", "gateway-2", "logstream-1", "logstream-2", "projector", "builder", "deployer"]
    servers = {"gateway-1": "gateways/gw1", "gateway-2": "gateways/gw2", "logstream-1": "logstreams/ls1",
               "logstream-2": "logstreams/ls2"}
    git, pushes = repo["git"], []
    load_ = Load(compose.api, git.url, repo["secret"], workers=2, pause=0.05).start()
    try:
        for i, service in enumerate(order):
            for container in compose.containers(service):
                # a real branch push each step: it must become exactly one successful version
                sha = git.commit({"index.html": f"<h1>rolling {i}</h1>\n"}, f"rolling {i}")
                headers, body = github_push(git.url, repo["secret"], after=sha)
                resp = api.http.post("/webhooks/github", content=body, headers=headers)
                assert resp.status_code == 202, resp.text
                pushes.append(sha)
                began = time.monotonic()
                docker("restart", "-t", "10", container)
                if service in servers:
                    wait_until(lambda s=servers[service]: server_up(compose, s), 60, f"{service} back", retry=NOT_YET)
                else:  # a Faust worker: running again (its group rejoin goes on in the background)
                    wait_until(lambda c=container: docker("inspect", "-f", "{{.State.Running}}", c) == "true",
                               60, f"{service} running", retry=NOT_YET)
                print(f"  restarted {service} in {time.monotonic() - began:.1f}s")
    finally:
        results = load_.stop()
    failed = load_.failed
    print(f"rolling restart: {len(results)} webhooks, {len(failed)} failed, {len(pushes)} branch pushes")
    assert not failed, failed[:5]
    accepted = load_.accepted
    wait_all_archived(compose, store, accepted)

    def versions() -> dict[str, dict] | None:
        listed = api.http.get(f"/api/v1/{api.user}/services/{repo['sid']}/versions", params={"limit": 100}).json()
        found = {v["commit"]: v for v in listed.get("versions", []) if v.get("commit") in pushes}
        done = len(found) == len(pushes) and all(v["status"] in ("success", "failed", "cancelled")
                                                 for v in found.values())
        return found if done else None

    began = time.monotonic()
    found = wait_until(versions, 120, "a finished version for every push", every=1, retry=NOT_YET)
    print(f"  every push's version finished {time.monotonic() - began:.1f}s after the last restart")
    assert sorted(v["status"] for v in found.values()) == ["success"] * len(pushes), found
