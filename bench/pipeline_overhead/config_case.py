"""Config-file case of the pipeline overhead benchmark (run by hand:
`.venv/bin/python bench/pipeline_overhead/config_case.py`).

The repository's fornax.yml has one service container (`mongo`: busybox answering on a port) and one
CI command that reaches it by name; its Dockerfile is one COPY. Measured in the same run, RUNS times
each, interleaved so both see the same machine load; medians reported:

- by hand: `docker network create`, `docker run -d` (the service, with its alias), `docker run` (the CI
  command, workspace bind-mounted), `docker build`, `docker push` (then rm/network rm) — the docker CLI,
  as a person would type it, logged in with a throw-away --config dir;
- pipeline: the same work through Fornax's pipeline package in-process (load_config → run_stage
  integration with a real LogWriter on the broker → the builder's engine build + push → cleanup);
- system (when the builder is there): the whole system, from POST /versions until ImagePushed is on
  fornax.versions (adds clone, config, quota, events between the agents); "to success" goes on until
  VersionSucceeded (adds the git tag and one more agent hop).
"""

from __future__ import annotations

import asyncio
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

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
SERVICE_LOOP = "while true; do echo pong | nc -l -p 27017; done"
CI_COMMAND = ("for i in $(seq 1 50); do if echo ping | nc -w 2 mongo 27017 > reply; then break; fi; "
              "sleep 0.05; done; grep pong reply")


def fornax_yml(image: str) -> str:
    return f"""integration:
  image: {image}
  commands:
    - '{CI_COMMAND}'
  services:
    mongo:
      image: {image}
      commands: ['{SERVICE_LOOP}']
"""


def write_repo(path: Path, image: str) -> None:
    """The repository; a fresh nonce each time, so no build hits another run's layer cache."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "fornax.yml").write_text(fornax_yml(image))
    (path / "nonce.txt").write_text(uuid.uuid4().hex + "\n")
    (path / "Dockerfile").write_text(f"FROM {image}\nCOPY nonce.txt /app/nonce.txt\n")


def sh(*argv: str, config: str | None = None) -> str:
    cmd = ["docker", *(["--config", config] if config else []), *argv]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def by_hand(settings, image: str, ws: Path, config_dir: str, i: int) -> float:
    n = f"fornax-bench-hand-{uuid.uuid4().hex[:8]}"
    target = f"{settings.registry_location}/bench/hand:r{i}"
    write_repo(ws, image)
    t0 = time.perf_counter()
    try:
        sh("network", "create", n)
        sh("run", "-d", "--name", f"{n}-mongo", "--network", n, "--network-alias", "mongo",
           "--memory", "128m", "--cpu-shares", "128", image, "sh", "-c", SERVICE_LOOP)
        sh("run", "--rm", "--network", n, "-v", f"{ws}:/workspace", "-w", "/workspace",
           "--memory", "128m", "--cpu-shares", "128", image, "sh", "-e", "-c", CI_COMMAND)
        sh("build", "-q", "-t", target, str(ws))
        sh("push", "-q", target, config=config_dir)
        sh("rm", "-f", f"{n}-mongo")
        sh("network", "rm", n)
        return time.perf_counter() - t0
    finally:
        subprocess.run(["docker", "rm", "-f", f"{n}-mongo"], capture_output=True)
        subprocess.run(["docker", "network", "rm", n], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", target], capture_output=True)


async def through_pipeline(settings, client, bus, ws: Path, i: int, image: str) -> float:
    from services.builder.engine import DockerImageBuilder, DockerRegistry
    from services.builder.pipeline import DockerBackend, StageContext, cleanup_version, load_config, run_stage
    from shared.logwriter import LogWriter

    vid = f"bench{uuid.uuid4().hex[:10]}"
    target = f"{settings.registry_location}/bench/pipeline:r{i}"
    log = LogWriter(bus, vid)
    log.start()

    async def on_line(line: str) -> None:
        await log.write("build", line)

    write_repo(ws, image)

    t0 = time.perf_counter()
    try:
        config = load_config(ws)
        ctx = StageContext(DockerBackend(client), vid, "bench", ws, log, settings, asyncio.Event())
        await run_stage(ctx, config, "integration")
        dockerfile, context = config.dockerfile(ws)
        mem, cpu = config.container_limits(settings)
        await DockerImageBuilder().build(client, context=context, dockerfile=dockerfile, image=target,
                                         labels={"fornax.version": vid}, memory_mb=mem, cpu_shares=cpu,
                                         on_line=on_line)
        registry = DockerRegistry(settings.registry_location, settings.registry_username,
                                  settings.registry_password.get_secret_value())
        await registry.push(client, target, on_line)
        await asyncio.to_thread(cleanup_version, client, vid)
        await log.flush()
        return time.perf_counter() - t0
    finally:
        await log.close()
        await asyncio.to_thread(cleanup_version, client, vid)
        subprocess.run(["docker", "rmi", "-f", target], capture_output=True)


class SystemRunner:
    """POST /versions → status success, through gateway, builder and projector."""

    def __init__(self, stack, settings, store, image: str, base: Path) -> None:
        import httpx

        from shared.auth import create_user

        self.store = store
        self.user = f"bench{uuid.uuid4().hex[:6]}"
        token = create_user(store, self.user)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{stack.gateway_port}", timeout=30,
                                 headers={"Authorization": f"Bearer {token}"})
        self.image = image
        self.work = work = base / "repo-work"
        bare = base / "repo.git"
        write_repo(work, image)
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
        for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                     ["-c", "user.name=b", "-c", "user.email=b@example.invalid", "commit", "-qm", "bench"],
                     ["remote", "add", "origin", str(bare)], ["push", "-q", "origin", "HEAD:main"]):
            subprocess.run(["git", *args], cwd=work, check=True, capture_output=True)
        resp = self.http.post(f"/api/v1/{self.user}/services",
                              json={"name": "benchsvc",
                                    "repository": {"url": f"file://{bare}", "vcs": "git"}})
        resp.raise_for_status()
        self.service_id = resp.json()["service_id"]
        deadline = time.monotonic() + 30
        while self.http.get(f"/api/v1/{self.user}/services/{self.service_id}").status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError("service not projected")
            time.sleep(0.05)

    async def start_watch(self, settings) -> None:
        from aiokafka import AIOKafkaConsumer

        self.consumer = AIOKafkaConsumer(settings.topic("versions"),
                                         bootstrap_servers=settings.kafka_bootstrap,
                                         auto_offset_reset="latest", group_id=None)
        await self.consumer.start()
        await self.consumer.getmany(timeout_ms=200)  # settle at the end of the log
        self.seen: dict[tuple[str, str], float] = {}

    async def run(self, i: int) -> tuple[float, float]:
        """(seconds until ImagePushed is on fornax.versions, until VersionSucceeded)."""
        write_repo(self.work, self.image)
        commit = ["-c", "user.name=b", "-c", "user.email=b@example.invalid", "commit", "-qm", f"run {i}"]
        for args in (["add", "-A"], commit, ["push", "-q", "origin", "HEAD:main"]):
            subprocess.run(["git", *args], cwd=self.work, check=True, capture_output=True)
        t0 = time.perf_counter()
        resp = self.http.post(f"/api/v1/{self.user}/versions",
                              json={"service_id": self.service_id, "name": f"r{i}"})
        resp.raise_for_status()
        vid = resp.json()["version_id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (vid, "VersionSucceeded") in self.seen:
                return self.seen[(vid, "ImagePushed")] - t0, self.seen[(vid, "VersionSucceeded")] - t0
            batch = await self.consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            for records in batch.values():
                for rec in records:
                    e = json.loads(rec.value)
                    self.seen.setdefault((e["aggregate_id"], e["type"]), now)
                    if e["aggregate_id"] == vid and e["type"] == "VersionFailed":
                        raise RuntimeError(f"version {vid} failed: {e['payload']}")
        raise TimeoutError(f"version {vid} did not finish")

    def timeline(self) -> str:
        """Event offsets (s) of the last version, from the events archive: where the time goes."""
        doc = self.store.versions.find_one({"user_id": self.user}, sort=[("created_at", -1)])
        events = list(self.store.events.find({"aggregate_id": doc["_id"]}).sort("occurred_at", 1))
        from datetime import datetime

        def ts(e) -> float:
            v = e["occurred_at"]
            return (v if isinstance(v, datetime) else datetime.fromisoformat(v)).timestamp()

        t0 = ts(events[0])
        parts = []
        for e in events:
            stage = (e.get("payload") or {}).get("stage")
            parts.append(f"{ts(e) - t0:.3f} {e['type']}{'(' + stage + ')' if stage else ''}")
        return "\n".join(parts)


def builder_present() -> bool:
    return (ROOT / "services/builder/__main__.py").exists() and (ROOT / "services/builder/build.py").exists()


def median_line(name: str, values: list[float]) -> str:
    runs = ", ".join(f"{v:.3f}" for v in values)
    return f"{name:<10} median {statistics.median(values):.3f}s  runs: {runs}"


def main() -> int:
    import docker

    from infra.local.images import ensure_busybox_image
    from infra.local.stack import REGISTRY_PASSWORD, REGISTRY_USER, Stack
    from shared.bus import EventBus
    from shared.settings import Settings
    from shared.store import Store

    base = Path(tempfile.mkdtemp(prefix="fornax-bench-config-"))
    stack = Stack.on_free_ports(base, extra_env={"FORNAX_WORKSPACE_ROOT": str(base / "workspaces")})
    client = docker.from_env()
    config_dir = str(base / "docker-config")
    results: dict[str, list[float]] = {"by hand": [], "pipeline": [], "system": [], "to success": []}
    try:
        stack.start_infra()
        os.environ.update(stack.env())
        settings = Settings()
        store = Store(settings)
        image = ensure_busybox_image(client)
        ws = base / "ws"
        write_repo(ws, image)
        subprocess.run(["docker", "--config", config_dir, "login", settings.registry_location,
                        "-u", REGISTRY_USER, "--password-stdin"],
                       input=REGISTRY_PASSWORD, text=True, check=True, capture_output=True)
        system = None
        if builder_present():
            stack.start_services(("projector", "gateway", "builder"))
            system = SystemRunner(stack, settings, store, image, base)

        async def pipeline_runs() -> None:
            if system is not None:
                await system.start_watch(settings)
            async with EventBus(settings) as bus:
                for i in range(RUNS + 1):  # run 0 warms caches (image layers, imports, connections)
                    hand = by_hand(settings, image, ws, config_dir, i)
                    pipe = await through_pipeline(settings, client, bus, ws, i, image)
                    full = await system.run(i) if system is not None else None
                    if i:
                        results["by hand"].append(hand)
                        results["pipeline"].append(pipe)
                        if full is not None:
                            results["system"].append(full[0])
                            results["to success"].append(full[1])
            if system is not None:
                await system.consumer.stop()

        asyncio.run(pipeline_runs())
        if system is not None and "-v" in sys.argv:
            print(system.timeline())
    finally:
        stack.stop_all()
        for img in client.images.list(name=f"{os.environ.get('FORNAX_REGISTRY_LOCATION', '')}/*/*"):
            subprocess.run(["docker", "rmi", "-f", img.id], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    hand = statistics.median(results["by hand"])
    print(f"config case: one service container + one CI command, then build + push; {RUNS} runs each")
    for name, values in results.items():
        if values:
            print(median_line(name, values) + (f"  overhead {statistics.median(values) - hand:+.3f}s"
                                               if name != "by hand" else ""))
    if not results["system"]:
        print("system     not measured: the builder service is not there yet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
