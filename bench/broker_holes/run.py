"""Does a consumer tailing a partition on the durable local broker (Tansu on S3) get every record that
concurrent producers were told is stored? Per run: producers x records to one partition while a consumer
tails it, then a full read; prints the offsets the tail moved past without getting, with the fetch-hole
guard off and on (shared/fetch_holes.py).

    .venv/bin/python bench/broker_holes/run.py [--runs 3] [--producers 4] [--records 300] [--tail-wait-ms 500]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from infra.local.stack import Stack
    from shared import fetch_holes
    from tests.fixtures.broker_tail import tail_while_producing

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--records", type=int, default=300, help="per producer")
    parser.add_argument("--tail-wait-ms", type=int, default=500, help="the tail's fetch_max_wait_ms")
    parser.add_argument("--guard", type=float, default=2.0, help="the guard's wait (s) in its runs")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="fornax-bench-holes-"))
    stack = Stack.on_free_ports(base, durable=True, retention_seconds=None, topic_prefix="holes")
    bootstrap = f"127.0.0.1:{stack.kafka_port}"

    async def topic(name: str) -> str:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, 1, 1)])
        finally:
            await admin.close()
        return name

    print(f"{args.producers} producers x {args.records} records, one partition, tail fetch wait "
          f"{args.tail_wait_ms} ms, Tansu on S3 (SeaweedFS)")
    totals = {"off": 0, "on": 0}
    try:
        stack.start_kafka()
        for run in range(args.runs):
            for mode in ("off", "on"):
                fetch_holes.install(args.guard if mode == "on" else 0)
                waited, gone = fetch_holes.holes_waited, fetch_holes.holes_skipped
                name = asyncio.run(topic(f"holes-{run}-{mode}"))
                r = asyncio.run(tail_while_producing(bootstrap, name, args.producers, args.records,
                                                     tail_wait_ms=args.tail_wait_ms))
                totals[mode] += len(r.skipped)
                print(f"run {run + 1} guard {mode:3}: produced {r.produced} in {r.seconds:.1f}s, stored "
                      f"{len(r.stored)}, tail got {len(r.seen)}, skipped {len(r.skipped)} {r.skipped[:8]}; "
                      f"fetches held back {fetch_holes.holes_waited - waited}, holes read past "
                      f"{fetch_holes.holes_skipped - gone}", flush=True)
    finally:
        stack.stop_all()
        shutil.rmtree(base, ignore_errors=True)
    print(f"skipped in all runs: guard off {totals['off']}, guard on {totals['on']}")
    return 1 if totals["on"] else 0


if __name__ == "__main__":
    sys.exit(main())
