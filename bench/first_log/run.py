"""Push → first build log line (run by hand: `.venv/bin/python bench/first_log/run.py`).

Its own local stack (Tansu, nx-27017, docker-registry, the machine's dockerd) with projector, gateway,
builder and logstream, on free ports. Then:

  A. first log line: BENCH_RUNS times (default 30), one at a time: commit to a local git repository,
     POST its signed GitHub push webhook, and at once open the version's WebSocket
     (`/ws/versions/{id}/logs`; the id is derived from the delivery, as the trigger does) like a viewer
     who clicked the new build. Latency = first LogLine received by the viewer − webhook sent (same
     machine clock). The viewer may connect before the version is projected: the logstream waits for
     it (settings.logstream_version_wait). Each run waits for the version's end before the next.
     Also reported: the line's own `ts` − webhook sent (when the builder wrote it), and 4404s (must be 0).
  B. create latency: BENCH_CREATES (default 40) service creates on this gateway (answers once the
     projection shows the service: 201) and on a second gateway with FORNAX_READ_YOUR_WRITES_WAIT=0
     (answers at once: 202), interleaved: what read-your-writes adds to a create. For the second, also
     the time until a GET polled every 2 ms finds the service: the projection lag itself, which the
     first can only round up (its looks come 5, 10, 20, 40, then every 50 ms).

Prints p50/p99/max of each; figures are never assertions. `--durable`: the broker on S3 storage
(SeaweedFS), as `make up` runs it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

RUNS = int(os.environ.get("BENCH_RUNS", "30"))
CREATES = int(os.environ.get("BENCH_CREATES", "40"))
DOCKERFILE = "FROM fornax/busybox:latest\nCOPY index.html /www/index.html\n"


def sh(*argv: str, cwd: Path | None = None) -> str:
    return subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def commit(work: Path, nonce: str) -> str:
    (work / "Dockerfile").write_text(DOCKERFILE)
    (work / "index.html").write_text(f"<p>{nonce}</p>\n")
    sh("git", "-C", str(work), "add", "-A")
    sh("git", "-C", str(work), "-c", "user.name=B", "-c", "user.email=b@x", "commit", "-q", "-m", nonce)
    sh("git", "-C", str(work), "push", "-q", "origin", "HEAD:refs/heads/main")
    return sh("git", "-C", str(work), "rev-parse", "HEAD")


def signed_push(url: str, sha: str, secret: str) -> tuple[dict[str, str], bytes, str]:
    body = json.dumps(
        {
            "ref": "refs/heads/main",
            "before": "0" * 40,
            "after": sha,
            "repository": {"name": "bench", "clone_url": url},
            "head_commit": {"id": sha, "message": "bench"},
            "pusher": {"name": "bench"},
        }
    ).encode()
    delivery = str(uuid.uuid4())
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
    }
    return headers, body, delivery


def version_id_for(delivery: str, service_id: str) -> str:
    # The projector's push trigger derives the version id from the delivery (services/projector/trigger.py).
    return uuid.uuid5(uuid.NAMESPACE_URL, f"delivery:github/{delivery}/{service_id}").hex


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def summary(name: str, xs: list[float]) -> str:
    if not xs:
        return f"{name}: no samples"
    return (
        f"{name}: p50 {pct(xs, 0.5) * 1000:.0f} ms, p99 {pct(xs, 0.99) * 1000:.0f} ms, "
        f"max {max(xs) * 1000:.0f} ms (n={len(xs)}, mean {statistics.mean(xs) * 1000:.0f} ms)"
    )


async def first_line(ws_base: str, token: str, vid: str) -> tuple[float, float, int, str]:
    """(received, line ts, 4404s seen, final status): the viewer's first line, then follows to the end."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    not_found = 0
    received = line_ts = 0.0
    while True:
        async with connect(
            f"{ws_base}/ws/versions/{vid}/logs",
            additional_headers={"Authorization": f"Bearer {token}"},
            max_size=None,
        ) as ws:
            try:
                async for frame in ws:
                    now = time.time()
                    data = json.loads(frame)
                    if isinstance(data, dict) and data.get("final"):
                        return received, line_ts, not_found, str(data.get("status"))
                    if not received:
                        first = data[0] if isinstance(data, list) else data
                        received, line_ts = now, float(first["ts"])
            except ConnectionClosed:
                pass
            if ws.close_code == 4404:
                not_found += 1
                continue
            raise RuntimeError(f"log stream closed {ws.close_code} {ws.close_reason}")


async def part_a(stack, token: str, tmp: Path) -> dict[str, list[float]]:
    import httpx

    origin, work = tmp / "origin.git", tmp / "work"
    sh("git", "init", "-q", "--bare", "-b", "main", str(origin))
    sh("git", "init", "-q", "-b", "main", str(work))
    sh("git", "-C", str(work), "remote", "add", "origin", str(origin))
    commit(work, "init")
    secret = "bench-secret-123"
    ws_base = f"ws://127.0.0.1:{stack.logstream_port}"
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{stack.gateway_port}", timeout=60, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        resp = await http.post(
            "/api/v1/bench/services",
            json={"name": "first-log", "webhook_secret": secret, "repository": {"url": str(origin)}},
        )
        resp.raise_for_status()
        service_id = resp.json()["service_id"]
        out: dict[str, list[float]] = {"viewer": [], "written": [], "not_found": []}
        for i in range(RUNS + 1):  # the first run warms up (connections, code paths): not counted
            sha = commit(work, uuid.uuid4().hex)
            headers, body, delivery = signed_push(str(origin), sha, secret)
            vid = version_id_for(delivery, service_id)
            t0 = time.time()
            hook = await http.post("/webhooks/github", content=body, headers=headers)
            hook.raise_for_status()
            received, line_ts, not_found, status = await asyncio.wait_for(first_line(ws_base, token, vid), 300)
            if status != "success":
                raise RuntimeError(f"version {vid} ended {status}")
            if i == 0:
                continue
            out["viewer"].append(received - t0)
            out["written"].append(line_ts - t0)
            out["not_found"].append(float(not_found))
            print(
                f"  run {i}: first line seen +{(received - t0) * 1000:.0f} ms "
                f"(written +{(line_ts - t0) * 1000:.0f} ms)",
                flush=True,
            )
    return out


async def part_b(stack, token: str, plain_port: int) -> dict[str, list[float]]:
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    out: dict[str, list[float]] = {"ryw": [], "plain": [], "ryw_codes": [], "plain_codes": [], "readable": []}
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.gateway_port}", headers=headers, timeout=60) as ryw,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{plain_port}", headers=headers, timeout=60) as plain,
    ):
        for i in range(CREATES + 2):
            for name, client in (("ryw", ryw), ("plain", plain)):
                body = {"name": f"c-{name}-{uuid.uuid4().hex[:8]}", "repository": {"url": f"file:///nowhere/{i}"}}
                t0 = time.perf_counter()
                resp = await client.post("/api/v1/bench/services", json=body)
                elapsed = time.perf_counter() - t0
                resp.raise_for_status()
                if name == "plain":
                    while (await client.get(resp.headers["Location"])).status_code != 200:
                        await asyncio.sleep(0.002)
                readable = time.perf_counter() - t0
                if i >= 2:  # two warm-up rounds
                    out[name].append(elapsed)
                    out[f"{name}_codes"].append(float(resp.status_code))
                    if name == "plain":
                        out["readable"].append(readable)
    return out


def main() -> int:
    from infra.local.images import ensure_busybox_image
    from infra.local.procs import free_port
    from infra.local.stack import Stack
    from shared.auth import create_user
    from shared.settings import Settings
    from shared.store import Store

    durable = "--durable" in sys.argv[1:]  # the broker on S3 (SeaweedFS), as `make up` runs it
    base = Path(tempfile.mkdtemp(prefix="fornax-bench-fl-"))
    stack = Stack.on_free_ports(base, durable=durable,
                                extra_env={"FORNAX_WORKSPACE_ROOT": str(base / "workspaces")})
    try:
        stack.start_infra()
        os.environ.update(stack.env())
        settings = Settings()
        ensure_busybox_image()
        stack.start_services(("projector", "gateway", "builder", "logstream"))
        plain_port = free_port()
        stack.start_service(
            "gateway",
            instance="gateway-no-wait",
            env={"FORNAX_GATEWAY_PORT": str(plain_port), "FORNAX_READ_YOUR_WRITES_WAIT": "0"},
        )
        store = Store(settings)
        token = create_user(store, "bench")
        store.close()
        print(
            f"first log line ({'durable' if durable else 'memory'} broker): {RUNS} pushes, one at a time "
            f"(logstream_version_wait "
            f"{settings.logstream_version_wait:g} s)"
        )
        a = asyncio.run(part_a(stack, token, base))
        print(f"create latency: {CREATES} service creates per gateway, interleaved")
        b = asyncio.run(part_b(stack, token, plain_port))
    finally:
        stack.stop_all()
        subprocess.run(
            f"docker images -q '127.0.0.1:{stack.registry_port}/*' | xargs -r docker rmi -f",
            shell=True,
            capture_output=True,
        )
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"stack logs kept in {base / 'logs'}")
    print()
    print(summary("push → first line seen by the viewer", a["viewer"]))
    print(summary("push → first line written by the builder (its ts)", a["written"]))
    print(f"viewer connections closed 4404 before the version was known: {int(sum(a['not_found']))}")
    for key, what in (("ryw", "read-your-writes (answer once projected)"), ("plain", "no wait (wait 0)")):
        statuses = b[f"{key}_codes"]
        counts = ", ".join(f"{int(c)}×{statuses.count(c)}" for c in sorted(set(statuses)))
        print(summary(f"service create, {what}", b[key]) + f"; statuses {counts}")
    print(summary("service create without wait, then GET every 2 ms until readable", b["readable"]))
    print(f"added by read-your-writes: p50 {(pct(b['ryw'], 0.5) - pct(b['plain'], 0.5)) * 1000:+.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
