"""Retention for the durable local broker: delete the record batches every consumer group is done with.

Tansu keeps every record batch of a partition as one object in S3
(`clusters/<cluster>/topics/<topic>/partitions/<p:010>/records/<base offset:020>.batch`), has no retention
(it ignores `retention.ms`, and closes the connection on DeleteRecords), and lists a partition's whole
`records/` folder on every fetch that has data. So each fetch costs the store more the longer the stack has
run: producing and tailing one record cost SeaweedFS 10 ms of CPU on an empty partition and 60-110 ms on one
holding 1,600 batches, and 13 ms again once the consumed 1,500 were deleted (docs/logstream.md).

This process is the retention Tansu lacks, run beside the broker by the local stack (`make up`). Every
`--every` seconds, for each partition, it deletes the batches that lie wholly below the lowest offset
committed on that partition by any consumer group (read from the group offsets Tansu keeps in the same
store), and that are older than `--keep-seconds`. A group that committed on one partition of a topic counts
as 0 on the topic's other partitions until it commits there (it reads the whole topic). Nothing a group has
still to read is deleted, the last batch of a partition always stays (Tansu takes a partition's end from it),
and a topic no group has committed on keeps everything. A group that has never committed on a topic starts
at the oldest batch left, as on Kafka once retention has run; a reader with no group (the logstream's live
tail) that falls behind the archiver finds the lines it missed in the archive. The Fornax services keep
what they need in Mongo (the event archive, the log archive), not in the broker's history.

It talks to SeaweedFS's filer HTTP API (list a folder as JSON, DELETE an object) on 127.0.0.1.

`python -m infra.local.retention --filer http://127.0.0.1:18888 --bucket tansu [--every 5] [--keep-seconds 10]`
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import httpx

log = logging.getLogger("fornax.retention")

EVERY_SECONDS = 5.0
KEEP_SECONDS = 10.0
PAGE = 1000


@dataclass(frozen=True)
class Batch:
    base_offset: int
    name: str
    mtime: float  # seconds since the epoch


def deletable(batches: Iterable[Batch], committed: int, older_than: float) -> list[Batch]:
    """The batches wholly below `committed` (the next batch starts at or below it) and written before
    `older_than`. The last batch is never among them: it has no next batch."""
    ordered = sorted(batches, key=lambda b: b.base_offset)
    out = []
    for batch, following in zip(ordered, ordered[1:], strict=False):
        if following.base_offset > committed:
            break
        if batch.mtime < older_than:
            out.append(batch)
    return out


def lowest_committed(offsets: Iterable[tuple[str, str, int, int]],
                     partitions: dict[str, list[int]] | None = None) -> dict[tuple[str, int], int]:
    """(group, topic, partition, offset) rows -> the lowest committed offset per (topic, partition).

    A group that committed on some partition of a topic reads the whole topic (its members share the
    partitions), so a partition of that topic it has not committed on yet (`partitions` lists them) counts
    as 0 for it: it has still to read everything there. A negative offset (no position) counts as 0 too."""
    by_group: dict[tuple[str, str], dict[int, int]] = {}
    for group, topic, partition, offset in offsets:
        by_group.setdefault((group, topic), {})[partition] = max(offset, 0)
    known: dict[str, set[int]] = {}
    for (_group, topic), committed in by_group.items():
        known.setdefault(topic, set(partitions.get(topic, []) if partitions else [])).update(committed)
    low: dict[tuple[str, int], int] = {}
    for (_group, topic), committed in by_group.items():
        for partition in known[topic]:
            key = (topic, partition)
            low[key] = min(low.get(key, committed.get(partition, 0)), committed.get(partition, 0))
    return low


def _mtime(entry: dict) -> float:
    raw = entry.get("Mtime") or ""
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()  # unknown: treat as new (kept this pass)


class Filer:
    """The few filer calls retention needs."""

    def __init__(self, url: str, bucket: str, client: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/")
        self.root = f"/buckets/{bucket}"
        self.http = client or httpx.Client(timeout=10)

    def entries(self, path: str) -> Iterator[dict]:
        """A folder's entries, page by page (an absent folder has none)."""
        last = ""
        while True:
            r = self.http.get(f"{self.url}{path.rstrip('/')}/", params={"limit": PAGE, "lastFileName": last},
                              headers={"Accept": "application/json"})
            if r.status_code == 404:
                return
            r.raise_for_status()
            body = r.json()
            page = body.get("Entries") or []
            yield from page
            if not page or not body.get("ShouldDisplayLoadMore"):
                return
            last = page[-1]["FullPath"].rsplit("/", 1)[1]

    def names(self, path: str) -> list[str]:
        return [e["FullPath"].rsplit("/", 1)[1] for e in self.entries(path)]

    def read_json(self, path: str) -> dict | None:
        r = self.http.get(f"{self.url}{path}")
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return json.loads(r.content)

    def delete(self, path: str) -> None:
        r = self.http.delete(f"{self.url}{path}")
        if r.status_code not in (200, 202, 204, 404):
            r.raise_for_status()


@dataclass
class PassResult:
    partitions: int = 0
    deleted: int = 0
    kept: int = 0


class Retention:
    def __init__(self, filer: Filer, keep_seconds: float = KEEP_SECONDS) -> None:
        self.filer = filer
        self.keep_seconds = keep_seconds

    def committed(self, cluster: str) -> Iterator[tuple[str, str, int, int]]:
        """(group, topic, partition, offset) for every offset any group has committed."""
        groups = f"{self.filer.root}/clusters/{cluster}/groups/consumers"
        for group in self.filer.entries(groups):
            if _is_dir(group):  # (beside each group's folder lies its <group>.json)
                gpath = group["FullPath"]
                for topic in self.filer.names(f"{gpath}/offsets"):
                    for part in self.filer.names(f"{gpath}/offsets/{topic}/partitions"):
                        doc = self.filer.read_json(f"{gpath}/offsets/{topic}/partitions/{part}")
                        if doc is not None and isinstance(doc.get("offset"), int):
                            yield gpath.rsplit("/", 1)[1], topic, int(part[:10]), doc["offset"]

    def run_once(self, now: float | None = None) -> PassResult:
        now = time.time() if now is None else now
        result = PassResult()
        for cluster in self.filer.names(f"{self.filer.root}/clusters"):
            rows = list(self.committed(cluster))
            topics = f"{self.filer.root}/clusters/{cluster}/topics"
            partitions = {topic: [int(p[:10]) for p in self.filer.names(f"{topics}/{topic}/partitions")]
                          for topic in {row[1] for row in rows}}
            low = lowest_committed(rows, partitions)
            for (topic, partition), committed in sorted(low.items()):
                records = f"{topics}/{topic}/partitions/{partition:0>10}/records"
                batches = [Batch(int(e["FullPath"].rsplit("/", 1)[1][:20]), e["FullPath"], _mtime(e))
                           for e in self.filer.entries(records) if e["FullPath"].endswith(".batch")]
                gone = deletable(batches, committed, now - self.keep_seconds)
                for batch in gone:
                    self.filer.delete(batch.name)
                result.partitions += 1
                result.deleted += len(gone)
                result.kept += len(batches) - len(gone)
        return result


def _is_dir(entry: dict) -> bool:
    return bool(entry.get("Mode", 0) & (1 << 31))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.retention")
    parser.add_argument("--filer", required=True, help="SeaweedFS filer URL, e.g. http://127.0.0.1:18888")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--every", type=float, default=EVERY_SECONDS, help="seconds between passes")
    parser.add_argument("--keep-seconds", type=float, default=KEEP_SECONDS,
                        help="a consumed batch is deleted only once it is this old")
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request (17,000 in a chaos run)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    retention = Retention(Filer(args.filer, args.bucket), args.keep_seconds)
    while not stopping:
        started = time.monotonic()
        try:
            r = retention.run_once()
            if r.deleted:
                log.info("deleted %d consumed batches (%d kept) in %d partitions, %.2f s",
                         r.deleted, r.kept, r.partitions, time.monotonic() - started)
        except httpx.HTTPError as exc:  # the store restarting: try again next pass
            log.warning("retention pass failed: %s", exc)
        if args.once:
            break
        deadline = started + args.every
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
