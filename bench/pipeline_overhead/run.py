"""Pipeline overhead (run by hand: `.venv/bin/python bench/pipeline_overhead/run.py`).

Its own local stack (Tansu, nx-27017, docker-registry, the shared dockerd) with projector, gateway and
builder. In the same run, interleaved, RUNS times per context:

- fornax: wall time from POSTing a signed GitHub push webhook until the builder emits ImagePushed for
  that version (its `occurred_at`, read back from fornax.versions; same machine, same clock):
  gateway → PushReceived → projector trigger → VersionRequested → builder: clone, config, build,
  ImageBuilt → push → ImagePushed. `-v` prints each run's event timeline;
- raw: `docker build --no-cache` + `docker push` of the same context with the docker CLI.

Every run changes the context (a nonce), so neither side gets a layer-cache hit. Contexts: `tiny`
(one COPY) and `sleep10` (a `RUN sleep 10` step). Then throughput: 8 webhooks at once (8 commits, tiny
context) on one Docker host → builds per minute until the last VersionSucceeded.

Extend with more cases by adding to CASES (name → Dockerfile template with {nonce}); the config-file
case lives in config_case.py.
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
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
PARALLEL = int(os.environ.get("BENCH_PARALLEL", "8"))
VERBOSE = "-v" in sys.argv
CASES = {
    "tiny": "FROM fornax/busybox:latest\nCOPY index.html /www/index.html\n",
    "sleep10": "FROM fornax/busybox:latest\nRUN echo {nonce} && sleep 10\nCOPY index.html /www/index.html\n",
}


def sh(*argv: str, cwd: Path | None = None, input: str | None = None) -> str:
    return subprocess.run(
        argv, cwd=cwd, check=True, capture_output=True, text=True, input=input
    ).stdout.strip()


def write_context(path: Path, case: str, nonce: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Dockerfile").write_text(CASES[case].format(nonce=nonce))
    (path / "index.html").write_text(f"<p>{nonce}</p>\n")


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


class Watcher:
    """Reads fornax.versions from the end; waits for given event types of given versions."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.seen: dict[tuple[str, str], float] = {}
        self.timeline: dict[str, list[tuple[float, str]]] = {}

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        self.consumer = AIOKafkaConsumer(
            self.settings.topic("versions"),
            bootstrap_servers=self.settings.kafka_bootstrap,
            auto_offset_reset="latest",
            group_id=None,
        )
        await self.consumer.start()
        await self.consumer.getmany(timeout_ms=200)  # settle the assignment at the end of the log

    async def wait(self, ids: set[str], etype: str, timeout: float = 300) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all((v, etype) in self.seen for v in ids):
                return {v: self.seen[(v, etype)] for v in ids}
            batch = await self.consumer.getmany(timeout_ms=50)
            for records in batch.values():
                for rec in records:
                    e = json.loads(rec.value)
                    # When the event was made (the emitter's clock, ms), not when we happened to fetch
                    # it: the broker's long-poll would add up to ~0.25 s of observer latency.
                    now = datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00")).timestamp()
                    self.seen.setdefault((e["aggregate_id"], e["type"]), now)
                    self.timeline.setdefault(e["aggregate_id"], []).append(
                        (
                            now,
                            e["type"] + (f"({e['payload'].get('stage')})" if "stage" in e["payload"] else ""),
                        )
                    )
                    if e["type"] == "VersionFailed":
                        raise RuntimeError(f"version failed: {e['payload']}")
        raise TimeoutError(f"no {etype} for {ids - {v for v, t in self.seen if t == etype}}")


async def fornax_run(
    http, watcher: Watcher, repo, service_id: str, secret: str, case: str, nonce: str
) -> float:
    write_context(repo["work"], case, nonce)
    sha = commit(repo["work"], nonce)
    headers, body, delivery = signed_push(repo["url"], sha, secret)
    vid = version_id_for(delivery, service_id)
    t0 = time.time()
    resp = await http.post("/webhooks/github", content=body, headers=headers)
    resp.raise_for_status()
    done = await watcher.wait({vid}, "ImagePushed")
    if VERBOSE:
        print("    " + "  ".join(f"{what} +{at - t0:.3f}" for at, what in watcher.timeline.get(vid, [])))
    return done[vid] - t0


def commit(work: Path, message: str) -> str:
    sh("git", "-C", str(work), "add", "-A")
    sh("git", "-C", str(work), "-c", "user.name=B", "-c", "user.email=b@x", "commit", "-q", "-m", message)
    sh("git", "-C", str(work), "push", "-q", "origin", "HEAD:refs/heads/main")
    return sh("git", "-C", str(work), "rev-parse", "HEAD")


def raw_run(registry: str, config_dir: str, tmp: Path, case: str, nonce: str, i: int) -> float:
    ctx = tmp / f"raw-{case}-{i}"
    write_context(ctx, case, nonce)
    target = f"{registry}/bench/raw-{case}:r{i}-{nonce[:6]}"
    t0 = time.perf_counter()
    sh("docker", "build", "--no-cache", "-q", "-t", target, str(ctx))
    sh("docker", "--config", config_dir, "push", "-q", target)
    elapsed = time.perf_counter() - t0
    subprocess.run(["docker", "rmi", "-f", target], capture_output=True)
    return elapsed


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


async def bench(stack, settings) -> dict:
    import httpx

    from infra.local.stack import REGISTRY_PASSWORD, REGISTRY_USER
    from shared.auth import create_user
    from shared.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="fornax-bench-po-"))
    config_dir = str(tmp / "docker-config")
    sh(
        "docker",
        "--config",
        config_dir,
        "login",
        "-u",
        REGISTRY_USER,
        "--password-stdin",
        settings.registry_location,
        input=REGISTRY_PASSWORD,
    )
    store = Store(settings)
    token = create_user(store, "bench")
    http = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{stack.gateway_port}",
        timeout=60,
        headers={"Authorization": f"Bearer {token}"},
    )
    origin, work = tmp / "origin.git", tmp / "work"
    sh("git", "init", "-q", "--bare", "-b", "main", str(origin))
    sh("git", "init", "-q", "-b", "main", str(work))
    sh("git", "-C", str(work), "remote", "add", "origin", str(origin))
    write_context(work, "tiny", "init")
    commit(work, "init")
    repo = {"work": work, "url": str(origin)}
    secret = "bench-secret-123"
    resp = await http.post(
        "/api/v1/bench/services",
        json={"name": "bench", "webhook_secret": secret, "repository": {"url": str(origin), "vcs": "git"}},
    )
    resp.raise_for_status()
    service_id = resp.json()["service_id"]
    for _ in range(300):
        doc = store.services.find_one({"_id": service_id}) or {}
        if doc.get("status") not in (None, "accepted"):
            break
        await asyncio.sleep(0.1)
    watcher = Watcher(settings)
    await watcher.start()

    # Warm-up (first build, code paths, connections): not measured.
    await fornax_run(http, watcher, repo, service_id, secret, "tiny", uuid.uuid4().hex)
    raw_run(settings.registry_location, config_dir, tmp, "tiny", uuid.uuid4().hex, 99)

    results: dict = {}
    for case in CASES:
        fx, rw = [], []
        for i in range(RUNS):
            rw.append(raw_run(settings.registry_location, config_dir, tmp, case, uuid.uuid4().hex, i))
            fx.append(await fornax_run(http, watcher, repo, service_id, secret, case, uuid.uuid4().hex))
            print(f"  {case} run {i + 1}: raw {rw[-1]:.2f}s  fornax {fx[-1]:.2f}s", flush=True)
        results[case] = {"raw": rw, "fornax": fx}

    # Throughput: PARALLEL commits, their webhooks sent at once.
    shas = []
    for i in range(PARALLEL):
        write_context(work, "tiny", uuid.uuid4().hex)
        shas.append(commit(work, f"parallel {i}"))
    deliveries = [signed_push(str(origin), sha, secret) for sha in shas]
    ids = {version_id_for(d, service_id) for _, _, d in deliveries}
    t0 = time.time()
    await asyncio.gather(*(http.post("/webhooks/github", content=b, headers=h) for h, b, _ in deliveries))
    done = await watcher.wait(ids, "VersionSucceeded", timeout=600)
    elapsed = max(done.values()) - t0
    results["parallel"] = {"versions": PARALLEL, "seconds": elapsed, "per_minute": PARALLEL / elapsed * 60}
    await http.aclose()
    await watcher.consumer.stop()
    store.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return results


def main() -> int:
    from infra.local.images import ensure_busybox_image
    from infra.local.stack import Stack
    from shared.settings import Settings

    base = Path(tempfile.mkdtemp(prefix="fornax-bench-stack-"))
    stack = Stack.on_free_ports(base, extra_env={"FORNAX_WORKSPACE_ROOT": str(base / "workspaces")})
    try:
        stack.start_infra()
        os.environ.update(stack.env())
        settings = Settings()
        ensure_busybox_image()
        stack.start_services(("projector", "gateway", "builder"))
        print(
            f"pipeline overhead: {RUNS} runs per context, builder concurrency {settings.builder_concurrency}"
        )
        results = asyncio.run(bench(stack, settings))
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
    print("\ncontext   raw median  fornax median  difference  ratio")
    for case in CASES:
        r, f = median(results[case]["raw"]), median(results[case]["fornax"])
        print(f"{case:9} {r:9.2f}s {f:12.2f}s {f - r:+10.2f}s {f / r:6.2f}")
    p = results["parallel"]
    print(
        f"\n{p['versions']} webhooks at once, one Docker host: all succeeded in {p['seconds']:.1f}s "
        f"→ {p['per_minute']:.1f} builds/minute"
    )
    if not os.environ.get("BENCH_SKIP_CONFIG"):  # the config-file case, on its own stack
        import config_case

        print()
        return int(config_case.main())
    return 0


if __name__ == "__main__":
    sys.exit(main())
