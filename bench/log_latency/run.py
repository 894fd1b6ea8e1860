"""Log latency benchmark (run by hand): `python bench/log_latency/run.py [--seconds 30]`.

Starts its own stack (Tansu, nx-27017, one logstream process) in a temp dir on free ports, then:
  A. a producer writes LogLines (shared.logwriter.LogWriter, the builders' path) at 1,000 lines/s for
     --seconds while 100 WebSocket subscribers watch that one version;
  B. 1,000 subscribers across 100 versions (10 each) while the producer writes 1,000 lines/s spread
     over the 100 versions;
  F. the floor: a bare `websockets` broadcast server (no Kafka, no Mongo) in its own process sends the
     same lines at the same rate with the same batching (one frame per version per window,
     `websockets.broadcast`) to 100 subscribers (and to 1,000 across 100 versions).
The producer and the floor batch lines over the stack's `log_flush_ms`, as the builder does: 10 ms, or 50 ms
on the durable stack (`--window-ms` overrides it).
Reports p50/p99/max latency from produce time (the line's `ts`) to receipt, lines lost (must be 0),
duplicates/out-of-order, and the logstream process's peak RSS (VmHWM). Subscribers run in several client
processes so the client side is not the bottleneck. Version docs are inserted into `versions` directly
(no projector in this stack); the end of a version is a real VersionSucceeded event on the bus.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import uuid
from array import array
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

RATE = 1000
WINDOW = 0.01  # the builder's log flush window: set from the stack's settings in main()
CLIENT_PROCS = 4


# -- subscribers (in client processes) ---------------------------------------------------------------
async def _subscribe(
    url: str, expected: int, lat: array, deadline: float, ready: Any
) -> tuple[int, int, int]:
    from websockets.asyncio.client import connect

    got, dups, last = 0, 0, 0
    async with connect(url, max_size=None, open_timeout=60, max_queue=None) as ws:
        try:
            while time.time() < deadline:
                frame = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.time()))
                now = time.time()
                data = json.loads(frame)
                if isinstance(data, dict):
                    if data.get("final"):
                        break
                    data = [data]
                for line in data:
                    if line["seq"] <= last:
                        dups += 1
                        continue
                    last = line["seq"]
                    got += 1
                    if line["seq"] == 1 and "bare" not in url:  # the warm-up line: subscribed for sure
                        with ready.get_lock():
                            ready.value += 1
                        continue
                    lat.append(now - line["ts"])
                if got >= expected and "bare" in url:
                    break
        except TimeoutError:
            pass
        except Exception:  # noqa: BLE001 - counted as lost lines
            pass
    return got, dups, last


def _client_proc(urls: list[tuple[str, int]], deadline: float, out: Any, ready: Any) -> None:
    async def main() -> list[Any]:
        lat = array("d")
        results = await asyncio.gather(*(_subscribe(u, n, lat, deadline, ready) for u, n in urls))
        return [results, lat.tobytes()]

    out.put(asyncio.run(main()))


def run_clients(urls: list[tuple[str, int]], deadline: float) -> tuple[Any, mp.Queue, list[mp.Process]]:
    ctx = mp.get_context("fork")
    q: mp.Queue = ctx.Queue()
    ready = ctx.Value("i", 0)
    procs = []
    for i in range(CLIENT_PROCS):
        share = urls[i::CLIENT_PROCS]
        if share:
            p = ctx.Process(target=_client_proc, args=(share, deadline, q, ready), daemon=True)
            p.start()
            procs.append(p)
    return ready, q, procs


def collect(q: mp.Queue, procs: list[mp.Process]) -> tuple[list[tuple[int, int, int]], array]:
    results: list[tuple[int, int, int]] = []
    lat = array("d")
    for _ in procs:
        res, raw = q.get()
        results += res
        part = array("d")
        part.frombytes(raw)
        lat.extend(part)
    for p in procs:
        p.join()
    return results, lat


def summary(
    name: str, results: list[tuple[int, int, int]], lat: array, expected: int, rss_mb: float | None
) -> str:
    values = sorted(lat)

    def pct(p: float) -> float:
        return values[min(len(values) - 1, int(p * len(values)))] * 1000 if values else float("nan")

    lost = sum(max(0, expected - got) for got, _, _ in results)
    dups = sum(d for _, d, _ in results)
    rss = f", peak RSS {rss_mb:.0f} MB" if rss_mb is not None else ""
    rss += f", load average {os.getloadavg()[0]:.1f}"
    return (
        f"{name}: {len(results)} subscribers, {expected} lines each expected; p50 {pct(0.5):.1f} ms, "
        f"p99 {pct(0.99):.1f} ms, max {values[-1] * 1000 if values else float('nan'):.1f} ms; "
        f"lost {lost}, duplicates {dups}{rss}"
    )


# -- the floor: bare websockets broadcast --------------------------------------------------------------
def _bare_server(port: int, seconds: float, versions: int, start_at: float, subscribers: int) -> None:
    """Each version's new lines, collected for at most WINDOW, go out as one frame to all its viewers
    (websockets' `broadcast`): the same batching the logstream does, without Kafka or Mongo."""
    from websockets.asyncio.server import broadcast, serve

    async def main() -> None:
        subs: dict[str, list[Any]] = {}
        done = asyncio.Event()

        async def handler(conn: Any) -> None:
            subs.setdefault(conn.request.path.split("/")[3], []).append(conn)
            await done.wait()

        async with serve(handler, "127.0.0.1", port, max_size=None, write_limit=64 * 1024, compression=None):
            while time.time() < start_at or sum(map(len, subs.values())) < subscribers:
                await asyncio.sleep(0.01)
            vids = sorted(subs)
            pending: dict[str, list[str]] = {v: [] for v in vids}
            last_flush: dict[str, float] = dict.fromkeys(vids, 0.0)
            t0 = time.monotonic()
            sent = 0
            total = int(RATE * seconds)
            while sent < total:
                due = min(total, int((time.monotonic() - t0) * RATE) + 1)
                while sent < due:
                    vid = vids[sent % len(vids)]
                    seq = sent // len(vids) + 1
                    pending[vid].append(
                        json.dumps(
                            {
                                "seq": seq,
                                "stage": "build",
                                "stream": "stdout",
                                "text": f"line {seq} of a build log, about sixty bytes long",
                                "ts": time.time(),
                            },
                            separators=(",", ":"),
                        )
                    )
                    sent += 1
                now = time.monotonic()
                for vid, lines in pending.items():
                    if lines and now - last_flush[vid] >= WINDOW:
                        broadcast(subs[vid], lines[0] if len(lines) == 1 else "[" + ",".join(lines) + "]")
                        pending[vid] = []
                        last_flush[vid] = now
                await asyncio.sleep(0.001)
            for vid, lines in pending.items():
                if lines:
                    broadcast(subs[vid], "[" + ",".join(lines) + "]")
            await asyncio.sleep(3)
            done.set()

    asyncio.run(main())


def floor(subscribers: int, versions: int, seconds: float) -> str:
    from infra.local.procs import free_port

    port = free_port()
    start_at = time.time() + 3 + subscribers / 300
    server = mp.get_context("fork").Process(
        target=_bare_server, args=(port, seconds, versions, start_at, subscribers), daemon=True
    )
    server.start()
    time.sleep(0.5)
    per_version = int(RATE * seconds) // versions
    vids = [f"bare{i}" for i in range(versions)]
    urls = [(f"ws://127.0.0.1:{port}/ws/{vids[i % versions]}/bare", per_version) for i in range(subscribers)]
    _, q, procs = run_clients(urls, start_at + seconds + 30)
    results, lat = collect(q, procs)
    server.join(10)
    if server.is_alive():
        server.kill()
    return summary(
        f"floor (bare websockets) {subscribers} subs / {versions} versions", results, lat, per_version, None
    )


# -- the real logstream ------------------------------------------------------------------------------
def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def produce(settings: Any, vids: list[str], seconds: float, warmup: bool = False) -> None:
    """`RATE` lines/s spread round-robin over `vids`, by LogWriter (one per version), on a fixed schedule."""
    from shared.bus import EventBus
    from shared.logwriter import LogWriter

    async with EventBus(settings) as bus:
        writers = [LogWriter(bus, vid, flush_every=WINDOW, start_seq=1 if warmup else 2) for vid in vids]
        if warmup:
            await bus.publish(*(_line(w) for w in writers))
            return
        total = int(RATE * seconds)
        t0 = time.monotonic()
        sent = 0
        pub_times: list[float] = []
        while sent < total:
            due = min(total, int((time.monotonic() - t0) * RATE) + 1)
            touched = set()
            while sent < due:
                i = sent % len(vids)
                w = writers[i]
                w._pending.append(_line(w))  # build without flushing per line
                touched.add(i)
                sent += 1
            # One broker round trip per tick for every version's new lines, as LogWriter's flush does.
            batch = [ev for i in touched for ev in writers[i]._pending]
            for i in touched:
                writers[i]._pending = []
            t_pub = time.monotonic()
            await bus.publish(*batch)
            pub_times.append(time.monotonic() - t_pub)
            # The next flush: once the next line is due, and at most once per window (LogWriter's loop).
            await asyncio.sleep(max(0.0, t0 + sent / RATE - time.monotonic(), t_pub + WINDOW - time.monotonic()))
        pub_times.sort()
        print(
            f"  producer: {len(pub_times)} publishes, "
            f"broker ack p50 {pub_times[len(pub_times) // 2] * 1000:.1f} ms, "
            f"p99 {pub_times[int(len(pub_times) * 0.99)] * 1000:.1f} ms",
            flush=True,
        )


def _line(writer: Any) -> Any:
    from shared.events import LogLine, LogLinePayload

    seq = writer.seq
    writer.seq += 1
    payload = LogLinePayload(
        version_id=writer.version_id,
        seq=seq,
        stage="build",
        stream="stdout",
        text=f"line {seq} of a build log, about sixty bytes long",
        ts=time.time(),
    )
    return LogLine.make(writer.version_id, payload)


async def end_versions(settings: Any, vids: list[str]) -> None:
    from shared.bus import EventBus
    from shared.events import VersionSucceeded
    from shared.events.versions import VersionSucceededPayload

    async with EventBus(settings) as bus:
        await bus.publish(*(VersionSucceeded.make(v, VersionSucceededPayload()) for v in vids))


def scenario(
    stack: Any,
    settings: Any,
    store: Any,
    token: str,
    user: str,
    subscribers: int,
    versions: int,
    seconds: float,
) -> str:
    vids = [uuid.uuid4().hex for _ in range(versions)]
    store.versions.insert_many(
        [{"_id": v, "user_id": user, "service_id": "bench", "status": "running"} for v in vids]
    )
    per_version = int(RATE * seconds) // versions + 1  # + the warm-up line
    urls = [
        (
            f"ws://127.0.0.1:{stack.logstream_port}/ws/versions/{vids[i % versions]}/logs?token={token}",
            per_version,
        )
        for i in range(subscribers)
    ]
    ready, q, procs = run_clients(urls, time.time() + seconds + 120 + subscribers / 20)
    # One warm-up line per version; measuring starts once every subscriber has received it.
    asyncio.run(produce(settings, vids, 0, warmup=True))
    deadline = time.time() + 120
    while ready.value < subscribers and time.time() < deadline:
        time.sleep(0.1)
    print(f"  {ready.value}/{subscribers} subscribers ready", flush=True)
    from infra.local.procs import cpu_seconds

    pids = {name: stack.procs[name].pid for name in ("logstream", "kafka", "mongo")}
    cpu0, t0 = {n: cpu_seconds(p) for n, p in pids.items()}, time.monotonic()
    asyncio.run(produce(settings, vids, seconds))
    cpu = {n: (cpu_seconds(p) - cpu0[n]) / (time.monotonic() - t0) for n, p in pids.items()}
    asyncio.run(end_versions(settings, vids))
    results, lat = collect(q, procs)
    rss = peak_rss_mb(stack.procs["logstream"].pid)
    return summary(f"logstream {subscribers} subs / {versions} versions", results, lat, per_version, rss) + (
        f"; CPU while producing (% of one core): logstream {cpu['logstream'] * 100:.0f}, "
        f"broker {cpu['kafka'] * 100:.0f}, Mongo-wire server {cpu['mongo'] * 100:.0f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--subs", type=int, default=100, help="subscribers of the one version in A")
    parser.add_argument("--keep", action="store_true", help="keep the stack directory (logs)")
    parser.add_argument("--b-subs", type=int, default=1000, help="subscribers across the 100 versions in B")
    parser.add_argument("--only", choices=["A", "B", "F"], action="append")
    parser.add_argument("--durable", action="store_true", help="the broker on S3 (SeaweedFS), as `make up` runs it")
    parser.add_argument("--window-ms", type=int, help="the writer's flush window (default: the stack's log_flush_ms)")
    parser.add_argument("--retention", type=float, default=10.0,
                        help="durable broker: seconds a consumed batch is kept (0: no retention process)")
    parser.add_argument("--env", action="append", default=[], metavar="FORNAX_X=V",
                        help="a setting for every process of the stack (repeatable)")
    args = parser.parse_args()
    from infra.local.stack import Stack

    global WINDOW
    base = Path(tempfile.mkdtemp(prefix="fornax-bench-logs-"))
    stack = Stack.on_free_ports(base, durable=args.durable, extra_env=dict(e.split("=", 1) for e in args.env),
                                retention_seconds=args.retention or None)
    WINDOW = (args.window_ms or int(stack.env().get("FORNAX_LOG_FLUSH_MS", "10"))) / 1000
    report = [
        f"log_latency: {RATE} lines/s for {args.seconds:.0f} s, {WINDOW * 1000:.0f} ms batches, "
        f"{os.cpu_count()} CPUs" + "".join(f", {e}" for e in args.env)
        + (f", retention {args.retention:g} s" if args.durable else "")
    ]
    only = set(args.only or ["A", "B", "F"])
    try:
        stack.start_kafka()
        stack.start_mongo()
        os.environ.update(stack.env())
        from shared.auth import create_user
        from shared.settings import Settings
        from shared.store import Store

        settings = Settings()
        store = Store(settings)
        store.ensure_indexes()
        user = "bench"
        token = create_user(store, user)
        # The floors first: a logstream scenario leaves nx-27017 busy archiving for a while.
        if "F" in only:
            report.append(floor(100, 1, args.seconds))
            print(report[-1], flush=True)
            report.append(floor(1000, 100, args.seconds))
            print(report[-1], flush=True)
        if "A" in only:
            stack.start_service("logstream")
            report.append(scenario(stack, settings, store, token, user, args.subs, 1, args.seconds))
            print(report[-1], flush=True)
            stack.stop("logstream")
        if "B" in only:
            stack.start_service("logstream")
            report.append(scenario(stack, settings, store, token, user, args.b_subs, 100, args.seconds))
            print(report[-1], flush=True)
            stack.stop("logstream")
        store.close()
    finally:
        stack.stop_all()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept {base}")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
