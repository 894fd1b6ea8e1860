"""Webhook ingest benchmark: the gateway's /webhooks/github (verify + broker ack) vs a bare endpoint.

Run by hand: `.venv/bin/python bench/webhook_ingest/run.py [--seconds 12] [--connections 32] [--rounds 3]`.
Starts its own stack (Tansu + nx-27017 + the gateway only, on free ports), creates a user and a service,
then drives both endpoints with wrk in the same run: signed 4 KB GitHub push payloads, a unique
X-GitHub-Delivery per request. Prints requests/s, p50/p99 and the ratio; target >= 50 % and p99 < 25 ms.
Both endpoints run on uvicorn's default HTTP protocol (httptools when installed, else h11; the report
names it), and "cpu us/req" is each server process's CPU time divided by the requests it answered.
Figures: README.md beside this file.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import importlib.util
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

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from infra.local.procs import cpu_seconds, free_port, port_open, wait_for  # noqa: E402
from infra.local.stack import Stack  # noqa: E402
from shared.auth import create_user  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.store import Store  # noqa: E402

HERE = Path(__file__).resolve().parent
FIXTURE = ROOT / "tests" / "fixtures" / "webhooks" / "github_push.json"


def payload(repo_url: str, size: int = 4096) -> bytes:
    """The recorded GitHub push re-pointed at `repo_url`, padded to exactly `size` bytes."""
    data = json.loads(FIXTURE.read_text())
    data["repository"]["clone_url"] = repo_url
    data["head_commit"]["message"] += "\n\n"
    body = json.dumps(data, separators=(",", ":")).encode()
    pad = size - len(body)
    if pad > 0:
        data["head_commit"]["message"] += "x" * pad
        body = json.dumps(data, separators=(",", ":")).encode()
    return body


def fold_service(settings: Settings, store: Store, service_id: str) -> None:
    """Fold the service's ServiceCreated into the read model, as the projector would (it is not running)."""
    from aiokafka import AIOKafkaConsumer

    from shared.events import decode
    from shared.projections import apply

    async def run() -> None:
        consumer = AIOKafkaConsumer(
            settings.topic("services"),
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await consumer.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for rec in records:
                        event = decode(rec.value)
                        if event.aggregate_id == service_id:
                            apply(store, event)
                            return
            raise RuntimeError("ServiceCreated not found on the services topic")
        finally:
            await consumer.stop()

    asyncio.run(run())


def wrk(url: str, seconds: int, connections: int, env: dict[str, str], threads: int = 2) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "-s",
            str(HERE / "post.lua"),
            url,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCH "))
    return json.loads(line.removeprefix("BENCH "))


def count_pushes(settings: Settings, prefix: str) -> int:
    from aiokafka import AIOKafkaConsumer

    async def run() -> int:
        consumer = AIOKafkaConsumer(
            settings.topic("webhooks"),
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await consumer.start()
        n, idle = 0, 0
        try:
            while idle < 4:
                batches = await consumer.getmany(timeout_ms=500, max_records=10000)
                got = sum(len(r) for r in batches.values())
                idle = idle + 1 if got == 0 else 0
                for records in batches.values():
                    n += sum(1 for rec in records if prefix.encode() in rec.value)
        finally:
            await consumer.stop()
        return n

    return asyncio.run(run())


COLUMNS = {
    "rps": "req/s",
    "p50_ms": "p50 ms",
    "p90_ms": "p90 ms",
    "p99_ms": "p99 ms",
    "max_ms": "max ms",
    "non_2xx": "non-2xx",
    "socket_errors": "errors",
    "cpu_us": "cpu us/req",
    "broker_cpu_us": "broker us/req",
}


def row(label: str, r: dict[str, float]) -> str:
    cells = "".join(f"{r[k]:14.2f}" if k.endswith("_ms") else f"{r[k]:14.0f}" for k in COLUMNS)
    return f"{label:14}{cells}"


def report(
    args: argparse.Namespace, rounds: list[dict[str, dict[str, float]]], published: int, answered: float
) -> tuple[float, float]:
    """Print every round and the medians; returns (median throughput ratio, median gateway p99)."""
    parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    print(
        f"webhook ingest: 4096-byte signed GitHub pushes, {args.connections} connections, "
        f"{args.seconds}s per measurement, {len(rounds)} alternating rounds, {os.cpu_count()} cores, "
        f"HTTP parser {parser} (both endpoints)"
    )
    print(f"{'endpoint':14}" + "".join(f"{c:>14}" for c in COLUMNS.values()))
    for i, results in enumerate(rounds, 1):
        for name, r in results.items():
            print(row(f"{name} #{i}", r))
    medians = {
        name: {k: statistics.median(r[name][k] for r in rounds) for k in COLUMNS} for name in rounds[0]
    }
    for name, r in medians.items():
        print(row(f"{name} median", r))
    ratios = [r["gateway"]["rps"] / r["bare"]["rps"] for r in rounds]
    ratio, p99 = statistics.median(ratios), medians["gateway"]["p99_ms"]
    print(
        f"gateway / bare throughput per round: {', '.join(f'{x:.0%}' for x in ratios)}; median {ratio:.0%} "
        f"(target >= 50%); gateway median p99 {p99:.1f} ms (target < 25 ms)"
    )
    print(
        f"PushReceived events on the broker for the measured gateway runs: {published} "
        f"(requests answered 202: {answered:.0f})"
    )
    print(
        f"load average at the end: {os.getloadavg()[0]:.2f} (other processes on the machine skew the figures)"
    )
    return ratio, p99


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/gateway measurements")
    parser.add_argument("--durable", action="store_true", help="the broker on S3 (SeaweedFS), as `make up` runs it")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is missing: apt-get install wrk", file=sys.stderr)
        return 1

    base = Path(tempfile.mkdtemp(prefix="fornax-bench-webhook-"))
    stack = Stack.on_free_ports(base, durable=args.durable)
    bare_port = free_port()
    bare = None
    try:
        stack.start_kafka()
        stack.start_mongo()
        stack.start_service("gateway")
        settings = Settings(**{k.removeprefix("FORNAX_").lower(): v for k, v in stack.env().items()})
        store = Store(settings)
        token = create_user(store, "bench")
        repo = "https://git.example.test/bench/webhook-ingest.git"
        resp = httpx.post(
            f"http://127.0.0.1:{stack.gateway_port}/api/v1/bench/services",
            headers={"Authorization": f"Bearer {token}"},
            json={"name": "ingest", "repository": {"url": repo}},
            timeout=30,
        )
        resp.raise_for_status()
        service_id, secret = resp.json()["service_id"], resp.json()["webhook_secret"]
        fold_service(settings, store, service_id)

        body = payload(repo)
        body_file = base / "body.json"
        body_file.write_bytes(body)
        signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        check = httpx.post(
            f"http://127.0.0.1:{stack.gateway_port}/webhooks/github",
            content=body,
            headers={
                "X-GitHub-Event": "push",
                "X-Hub-Signature-256": signature,
                "Content-Type": "application/json",
                "X-GitHub-Delivery": "check",
            },
        )
        assert check.status_code == 202, check.text

        bare_log = open(base / "bare.log", "wb")
        bare = subprocess.Popen(
            [sys.executable, str(HERE / "bare.py"), "--port", str(bare_port)],
            stdout=bare_log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: port_open(bare_port), 30, "bare endpoint", bare, base / "bare.log")

        run_id = uuid.uuid4().hex[:8]
        env = {"BENCH_BODY": str(body_file), "BENCH_SIGNATURE": signature}
        pids = {"bare": bare.pid, "gateway": stack.procs["gateway"].pid}
        broker_pid = stack.procs["kafka"].pid
        urls = {
            "bare": f"http://127.0.0.1:{bare_port}/webhooks/github",
            "gateway": f"http://127.0.0.1:{stack.gateway_port}/webhooks/github",
        }
        for name, url in urls.items():
            wrk(url, args.warmup, args.connections, {**env, "BENCH_RUN": f"warm-{name}-{run_id}"})
        # Alternate the two endpoints so that load from other processes hits both alike.
        rounds: list[dict[str, dict[str, float]]] = []
        for i in range(args.rounds):
            results: dict[str, dict[str, float]] = {}
            for name, url in urls.items():
                cpu0, broker0 = cpu_seconds(pids[name]), cpu_seconds(broker_pid)
                r = wrk(url, args.seconds, args.connections, {**env, "BENCH_RUN": f"{name}-{run_id}-{i}"})
                r["cpu_us"] = (cpu_seconds(pids[name]) - cpu0) / r["requests"] * 1e6
                r["broker_cpu_us"] = (cpu_seconds(broker_pid) - broker0) / r["requests"] * 1e6
                results[name] = r
            rounds.append(results)
        published = count_pushes(settings, f'"delivery_id":"gateway-{run_id}-')
        store.close()
    finally:
        if bare is not None:
            bare.terminate()
            bare.wait(10)
        stack.stop_all()
        shutil.rmtree(base, ignore_errors=True)

    answered = sum(r["gateway"]["requests"] for r in rounds)
    ratio, p99 = report(args, rounds, published, answered)
    ok = ratio >= 0.5 and p99 < 25 and all(r["gateway"]["non_2xx"] == 0 for r in rounds)
    print("target met" if ok else "target NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
