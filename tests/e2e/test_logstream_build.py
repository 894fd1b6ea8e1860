"""A real build's log through the logstream, as a user: lines arrive live (before the version ends), in
order, once; a value the service marks secret is masked in the stream, the archive and the REST log."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from shared.auth import create_user
from tests.integration.builder_helpers import Api, GitRepo, dockerfile, remove_images

pytestmark = pytest.mark.e2e

SECRET = "s3cr3t-" + uuid.uuid4().hex[:12]
TERMINAL = ("success", "failed", "cancelled")


@pytest.fixture(scope="module")
def services(stack, busybox_image):
    names = ("projector", "gateway", "builder", "logstream")
    for name in names:
        stack.start_service(name)
    yield stack
    for name in reversed(names):
        stack.stop(name)


async def test_real_build_streams_live_masked_lines(services, store, busybox_image, tmp_path: Path):
    user = f"logs-{uuid.uuid4().hex[:6]}"
    token = create_user(store, user)
    api = Api(services.gateway_port, user, token)
    repo = GitRepo(tmp_path)
    config = {
        "integration": {
            "image": busybox_image,
            "commands": [
                f"echo using key {SECRET}",
                "for i in $(seq 1 15); do echo tick $i; sleep 0.3; done",
            ],
        }
    }
    repo.commit({"Dockerfile": dockerfile('CMD ["true"]'), "fornax.yml": json.dumps(config)})
    try:
        sid = api.create_service("logsvc", repo.url, secrets={"API_KEY": SECRET})["service_id"]
        assert api.wait_repo_status(sid) == "healthy"
        vid = api.new_version(sid, "v1")

        lines: list[dict] = []
        final = None
        status_at_first_tick = None
        url = f"ws://127.0.0.1:{services.logstream_port}/ws/versions/{vid}/logs?token={token}"
        for _ in range(100):  # the version may not be projected yet (4404): try again
            async with connect(url, max_size=None) as ws:
                try:
                    async for frame in ws:
                        data = json.loads(frame)
                        if isinstance(data, dict) and data.get("final"):
                            final = data
                            continue
                        for line in data if isinstance(data, list) else [data]:
                            lines.append(line)
                            if status_at_first_tick is None and line["text"].startswith("tick"):
                                doc = await asyncio.to_thread(api.version, vid)
                                status_at_first_tick = doc["status"]
                except ConnectionClosed:
                    pass
                code = ws.close_code
            if code != 4404:
                break
            await asyncio.sleep(0.2)
        assert code == 1000, code
        assert final is not None and final["status"] == "success" and final["version_id"] == vid
        assert status_at_first_tick not in TERMINAL  # seen live, before the build ended
        assert [ln["seq"] for ln in lines] == list(range(1, len(lines) + 1))
        texts = [ln["text"] for ln in lines]
        assert [t for t in texts if t.startswith("tick")] == [f"tick {i}" for i in range(1, 16)]
        assert not [t for t in texts if SECRET in t]
        assert any("using key ****" in t for t in texts)

        archived = list(store.logs.find({"version_id": vid}).sort("seq", 1))
        assert [d["text"] for d in archived] == texts
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{services.gateway_port}", headers={"Authorization": f"Bearer {token}"}
        ) as http:
            body = (await http.get(f"/api/v1/{user}/versions/{vid}/logs", params={"limit": 10000})).json()
            assert [ln["text"] for ln in body["lines"]] == texts
            async with http.stream(
                "GET", f"/api/v1/{user}/versions/{vid}/logs", params={"follow": "true"}
            ) as r:
                raw = (await r.aread()).decode()
        assert SECRET not in raw and SECRET not in json.dumps(body)
        assert json.loads(raw.splitlines()[-1])["status"] == "success"
    finally:
        remove_images(f"127.0.0.1:{services.registry_port}/{user}/")
