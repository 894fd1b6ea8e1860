"""Scale-out benchmark on the compose stack (docker-compose.yml + infra/compose/local.yml).

Run by hand: `.venv/bin/python bench/scale/run.py [--seconds 10] [--connections 32] [--rounds 2]`.
Builds the images if needed (cached by content hash), starts its own compose project on free ports,
then in the same run:
  - webhook throughput through HAProxy with 2 gateways, then with 1 (gateway-2 stopped), alternating;
    signed 4 KB GitHub tag pushes (they go through verification and the broker ack but build nothing);
  - kill -9 of gateway-1 under wrk load: seconds until HAProxy has it out of rotation, and how many
    requests failed.
Prints figures; never asserts. Tears the project down (containers, networks, volumes) at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from infra.compose.images import ensure_images  # noqa: E402
from infra.compose.stack import ComposeStack  # noqa: E402
from shared.auth import create_user  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.store import Store  # noqa: E402
from tests.e2e.compose_helpers import NOT_YET, docker, server_down, server_up  # noqa: E402
from tests.integration.builder_helpers import Api  # noqa: E402
from tests.waits import wait_until  # noqa: E402

INGEST = ROOT / "bench" / "webhook_ingest"


def _ingest() -> object:
    spec = importlib.util.spec_from_file_location("webhook_ingest_run", INGEST / "run.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is missing: apt-get install wrk", file=sys.stderr)
        return 1
    ingest = _ingest()
    started = time.monotonic()
    images = ensure_images()
    print(f"images ready in {time.monotonic() - started:.1f}s")
    home = Path(tempfile.mkdtemp(prefix="fornax-bench-scale-"))
    stack = ComposeStack(f"fxbench{os.getpid()}", home, images.env())
    try:
        started = time.monotonic()
        stack.up()
        print(f"compose stack up in {time.monotonic() - started:.1f}s")
        store = Store(Settings(mongo_url=f"mongodb://127.0.0.1:{stack.ports['mongo']}"))
        user = f"bench-{uuid.uuid4().hex[:6]}"
        api = Api(stack.ports["api"], user, create_user(store, user))
        repo_url = f"/srv/git/bench-{uuid.uuid4().hex[:6]}.git"  # never cloned: tag pushes build nothing
        secret = "bench-" + uuid.uuid4().hex
        api.create_service(f"bench-{uuid.uuid4().hex[:6]}", repo_url, webhook_secret=secret)
        data = json.loads(ingest.payload(repo_url))  # type: ignore[attr-defined]
        data["ref"] = "refs/tags/bench"
        body = json.dumps(data, separators=(",", ":")).encode()
        body_file = home / "body.json"
        body_file.write_bytes(body)
        env = {"BENCH_BODY": str(body_file),
               "BENCH_SIGNATURE": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}
        wait_until(lambda: api.http.post("/webhooks/github", content=body, headers={
            "Content-Type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": env["BENCH_SIGNATURE"]}).status_code == 202, 60, "the service at the gateways",
            retry=NOT_YET)
        url = f"{stack.api}/webhooks/github"
        run = uuid.uuid4().hex[:8]
        ingest.wrk(url, 3, args.connections, {**env, "BENCH_RUN": f"warm-{run}"})  # type: ignore[attr-defined]
        gw2 = stack.containers("gateway-2")[0]
        figures: dict[int, list[dict]] = {1: [], 2: []}
        for i in range(args.rounds):
            for gateways in (2, 1):
                if gateways == 1:
                    docker("stop", "-t", "5", gw2)
                    wait_until(lambda: server_down(stack, "gateways/gw2"), 30, "gw2 down", retry=NOT_YET)
                r = ingest.wrk(url, args.seconds, args.connections,  # type: ignore[attr-defined]
                               {**env, "BENCH_RUN": f"{gateways}-{run}-{i}"})
                figures[gateways].append(r)
                print(f"  round {i + 1}, {gateways} gateway(s): {r['rps']:.0f} req/s p50 {r['p50_ms']:.1f} ms "
                      f"p99 {r['p99_ms']:.1f} ms non-2xx {r['non_2xx']} socket errors {r['socket_errors']}")
                if gateways == 1:
                    docker("start", gw2)
                    wait_until(lambda: server_up(stack, "gateways/gw2"), 60, "gw2 back", retry=NOT_YET)
        best = {g: max(r["rps"] for r in rs) for g, rs in figures.items()}
        print(f"webhook throughput through HAProxy (best of {args.rounds}): 1 gateway {best[1]:.0f} req/s, "
              f"2 gateways {best[2]:.0f} req/s ({best[2] / best[1]:.2f}x) on {os.cpu_count()} CPUs")

        # kill -9 of a gateway under load
        gw1 = stack.containers("gateway-1")[0]
        result: dict = {}
        load = threading.Thread(target=lambda: result.update(ingest.wrk(  # type: ignore[attr-defined]
            url, 8, args.connections, {**env, "BENCH_RUN": f"kill-{run}"})))
        load.start()
        time.sleep(3)
        killed = time.monotonic()
        docker("kill", "-s", "KILL", gw1)
        wait_until(lambda: server_down(stack, "gateways/gw1"), 30, "gw1 down", every=0.02, retry=NOT_YET)
        out_after = time.monotonic() - killed
        load.join()
        docker("start", gw1)
        print(f"kill -9 gateway-1 under load: out of rotation after {out_after:.2f}s; {result.get('requests')} "
              f"requests, non-2xx {result.get('non_2xx')}, socket errors {result.get('socket_errors')}")
        store.close()
    finally:
        try:
            stack.down()
        finally:
            subprocess.run(["rm", "-rf", str(home)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
