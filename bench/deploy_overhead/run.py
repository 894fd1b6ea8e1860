"""Deploy overhead on the Docker-host target (run by hand: `.venv/bin/python bench/deploy_overhead/run.py`).

Fornax: time from publishing VersionSucceeded (with a `deploy` spec for target `local`) until the
deployer's DeploySucceeded is seen on fornax.deploys — through the real broker, projector, deployer
and dockerd. By hand: `docker run -d` + `docker rm -f` of the same image (the CLI, as a person would).
Both in the same run on the same machine, RUNS times each; medians reported. Target: overhead < 1 s.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

RUNS = 5
STAGES: dict[str, list] = {}


async def wait_for_success(settings, consumer, deployment_id: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = await consumer.getmany(timeout_ms=100)
        for records in batch.values():
            for rec in records:
                event = json.loads(rec.value)
                p = event.get("payload") or {}
                if p.get("deployment_id") == deployment_id:
                    STAGES.setdefault(deployment_id, []).append(
                        (event["type"], event["occurred_at"], time.time())
                    )
                if p.get("deployment_id") == deployment_id and event["type"] in (
                    "DeploySucceeded",
                    "DeployFailed",
                ):
                    if event["type"] == "DeployFailed":
                        raise RuntimeError(f"deploy failed: {p.get('reason')}")
                    return
    raise TimeoutError(f"no DeploySucceeded for {deployment_id}")


async def fornax_runs(settings, store, image: str, digest: str) -> tuple[list[float], list[float]]:
    from aiokafka import AIOKafkaConsumer

    from services.deployer.handlers import auto_deployment_id
    from shared.bus import EventBus
    from shared.events.versions import DeploySpec
    from tests.fixtures.deploy_world import new_id, service_events, version_events

    service_id, user = new_id(), "bench"
    consumer = AIOKafkaConsumer(
        settings.topic("deploys"),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="latest",
        group_id=None,
    )
    await consumer.start()
    times, manual = [], []
    try:
        await consumer.seek_to_end()
        async with EventBus(settings) as bus:
            await bus.publish(*service_events(service_id, user, "benchapp"))
            for i in range(RUNS + 1):  # the first run warms up the deployer (imports, connections)
                vid = new_id()
                requested, pushed, succeeded = version_events(
                    service_id,
                    user,
                    vid,
                    f"b{i}",
                    image,
                    digest,
                    [DeploySpec(application="web", cluster="local")],
                )
                await bus.publish(requested, pushed)
                while (store.versions.find_one({"_id": vid}) or {}).get("digest") != digest:
                    await asyncio.sleep(0.05)
                t0 = time.perf_counter()
                STAGES[auto_deployment_id(vid, "local", None, "web")] = [("t0", None, time.time())]
                await bus.publish(succeeded)
                await wait_for_success(settings, consumer, auto_deployment_id(vid, "local", None, "web"))
                if i:
                    times.append(time.perf_counter() - t0)
                    # the same image by hand, interleaved so both see the same machine load
                    manual.append(manual_run(f"{image.rsplit(':', 1)[0]}@{digest}", i))
    finally:
        await consumer.stop()
        import docker

        from tests.fixtures.deploy_world import remove_deployed

        remove_deployed(docker.from_env(), service_id)
    return times, manual


def manual_run(image: str, i: int) -> float:
    name = f"fornax-bench-manual-{i}"
    t0 = time.perf_counter()
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "-p", "127.0.0.1::8080", image],
        check=True,
        capture_output=True,
    )
    subprocess.run(["docker", "rm", "-f", name], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> int:
    import os

    import docker

    from infra.local.images import ensure_busybox_image
    from infra.local.stack import Stack
    from shared.settings import Settings
    from shared.store import Store
    from tests.fixtures.deploy_world import HTTP_APP, build_and_push

    base = Path(tempfile.mkdtemp(prefix="fornax-bench-deploy-"))
    stack = Stack.on_free_ports(base)
    client = docker.from_env()
    image = None
    try:
        stack.start_infra()
        os.environ.update(stack.env())
        settings = Settings()
        store = Store(settings)
        stack.start_services(("projector", "deployer"))
        image, digest = build_and_push(
            client,
            settings,
            ensure_busybox_image(client),
            f"{settings.registry_location}/bench/benchapp",
            "v1",
            HTTP_APP,
        )
        fornax, manual = asyncio.run(fornax_runs(settings, store, image, digest))
    finally:
        if "-v" in sys.argv:
            print("\n".join((base / "logs" / "deployer.log").read_text().splitlines()[-400:]))
        stack.stop_all()
        if image:
            try:
                client.images.remove(image, force=True)
            except docker.errors.APIError:
                pass
        shutil.rmtree(base, ignore_errors=True)
    if "-v" in sys.argv:
        from datetime import datetime

        for stages in STAGES.values():
            start = stages[0][2]
            print(
                " ".join(
                    f"{t}@{(datetime.fromisoformat(o).timestamp() if o else seen) - start:.3f}"
                    f"(seen {seen - start:.3f})"
                    for t, o, seen in stages
                )
            )
    m_f, m_m = statistics.median(fornax), statistics.median(manual)
    print(f"runs: {RUNS} each (after one warm-up deploy)")
    print("fornax  VersionSucceeded -> DeploySucceeded (s): " + ", ".join(f"{t:.3f}" for t in fornax))
    print("by hand docker run + docker rm (s):              " + ", ".join(f"{t:.3f}" for t in manual))
    print(
        f"median fornax {m_f:.3f}s, by hand {m_m:.3f}s, overhead {m_f - m_m:+.3f}s (target < 1 s): "
        f"{'OK' if m_f - m_m < 1 else 'OVER TARGET'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
