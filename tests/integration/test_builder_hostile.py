"""Hostile versions against a real builder process run under a memory cap (a regression fails the
test instead of eating the machine): a fornax.yml alias bomb, 300 MB of output without a newline, and
a version whose processing kills its worker again and again. Each time the builder stays small, the
hostile version ends with a reason, and another user's version still gets built."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import docker
import pytest

from services.builder.pipeline import cleanup_version
from services.builder.state import BuilderState
from shared.auth import create_user
from tests.fixtures.hostile import alias_bomb
from tests.integration.builder_helpers import Api, GitRepo, dockerfile, remove_images
from tests.waits import wait_until

INSTANCE = "builder-capped"
MEMORY_CAP = 2 * 1024**3  # address space of the builder under test (RLIMIT_AS)
LOG_MAX_BYTES = 1024 * 1024
LOST_AFTER = 6.0


class CappedBuilder:
    """A builder process (instance INSTANCE) under RLIMIT_AS via prlimit, which execs it (same pid)."""

    def __init__(self, stack) -> None:
        self.stack = stack
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> None:
        ready = self.stack.base / "ready" / INSTANCE
        ready.unlink(missing_ok=True)
        env = {
            **self.stack.env(),
            "FORNAX_INSTANCE": INSTANCE,
            "FORNAX_LOG_MAX_BYTES": str(LOG_MAX_BYTES),
            "FORNAX_BUILDER_LOST_AFTER": str(LOST_AFTER),
            "FORNAX_BUILDER_REAP_EVERY": "1",
            "MALLOC_ARENA_MAX": "2",  # glibc reserves 64 MiB of address space per thread arena otherwise
        }
        argv = ["prlimit", f"--as={MEMORY_CAP}", "--", sys.executable, "-m", "services.builder"]
        self.proc, log = self.stack._spawn(INSTANCE, argv, env=env)  # no hook for prlimit
        if not wait:
            return
        wait_until(lambda: ready.exists() or self.proc.poll() is not None, 120, f"{INSTANCE} to be ready")
        assert self.proc.poll() is None, log.read_text()[-3000:]

    def peak_rss_mb(self) -> float:
        """VmHWM: the most resident memory the process ever had."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")

    def kill(self) -> None:
        self.stack.kill(INSTANCE)

    def stop(self) -> None:
        self.stack.stop(INSTANCE)


@pytest.fixture(scope="module")
def builder(stack, store, busybox_image):
    for name in ("projector", "gateway", "logstream"):
        stack.start_service(name)
    # Only the capped builder may take these versions (its memory is what is measured).
    for name in [n for n in list(stack.procs) if n.startswith("builder")]:
        stack.stop(name)
    b = CappedBuilder(stack)
    b.start()
    yield b
    b.stop()  # modules that need a builder start their own (Stack.start_service)
    # What a failing run (a regression that killed the builder mid-step) may have left.
    client = docker.from_env()
    try:
        for doc in store.versions.find({"user_id": {"$regex": "^hb-"}}, {"_id": 1}):
            cleanup_version(client, doc["_id"])
    finally:
        client.close()
    remove_images(f"127.0.0.1:{stack.registry_port}/hb-")


def _api(stack, store) -> Api:
    user = f"hb-{uuid.uuid4().hex[:6]}"
    return Api(stack.gateway_port, user, create_user(store, user))


def _service(api: Api, root: Path, files: dict[str, str]) -> str:
    repo = GitRepo(root)
    repo.commit(files)
    sid = api.create_service(f"svc-{uuid.uuid4().hex[:6]}", repo.url)["service_id"]
    api.wait_repo_status(sid)
    return sid


def _step(commands: list[str]) -> str:
    quoted = ", ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in commands)
    return f"integration:\n  image: fornax/busybox:latest\n  commands: [{quoted}]\n"


def test_builder_runs_under_the_cap(builder) -> None:
    limits = Path(f"/proc/{builder.proc.pid}/limits").read_text()
    line = next(ln for ln in limits.splitlines() if ln.startswith("Max address space"))
    assert str(MEMORY_CAP) in line
    assert os.path.basename(Path(f"/proc/{builder.proc.pid}/exe").resolve()).startswith("python")


@pytest.mark.timeout(240)
def test_alias_bomb_fails_fast_and_others_still_build(builder, stack, store, tmp_path: Path) -> None:
    alice, bob = _api(stack, store), _api(stack, store)
    bomb_sid = _service(alice, tmp_path / "a", {"fornax.yml": alias_bomb(), "Dockerfile": dockerfile()})
    # Bob's build prints 5 MB without a newline: the docker build reader cuts it like step output.
    fine_sid = _service(bob, tmp_path / "b", {"Dockerfile": dockerfile(
        f"RUN echo {uuid.uuid4().hex}; head -c 5000000 /dev/zero | tr '\\0' b; echo")})

    began = time.monotonic()
    bomb = alice.new_version(bomb_sid)
    fine = bob.new_version(fine_sid)
    doc = alice.wait_version(bomb, timeout=120)
    took = time.monotonic() - began
    print(f"alias bomb: {doc['status']} after {took:.1f}s: {doc.get('error')}; "
          f"builder peak RSS {builder.peak_rss_mb():.0f} MB")
    assert doc["status"] == "failed", doc
    assert doc["error"].startswith("fornax.yml: more than"), doc["error"]
    assert "config_max_nodes" in doc["error"]
    assert took < 30
    assert bob.wait_version(fine, timeout=180)["status"] == "success"
    assert builder.proc.poll() is None
    assert builder.peak_rss_mb() < 300

    def built_line() -> list[str]:
        return [d["text"] for d in store.logs.find({"version_id": fine, "stage": "build"})
                if d["text"].startswith("bbbb")]

    assert wait_until(built_line, 60, "the build log") == ["b" * 16384 + f"…[{5_000_000 - 16384} bytes truncated]"]


@pytest.mark.timeout(300)
def test_output_without_newline_is_bounded(builder, stack, store, tmp_path: Path) -> None:
    alice, bob = _api(stack, store), _api(stack, store)
    flood = [
        "head -c 300000000 /dev/zero | tr '\\0' a",
        "echo",
        # 2 MB in 100-byte lines: over the (test) per-version cap of 1 MiB; the step goes on.
        "yes 012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012 "
        "| head -n 20000",
        "echo still running > /workspace/after-flood",
    ]
    flood_sid = _service(alice, tmp_path / "a", {"fornax.yml": _step(flood)})
    small_sid = _service(bob, tmp_path / "b", {"fornax.yml": _step(["echo small"])})

    began = time.monotonic()
    big = alice.new_version(flood_sid, operations=["integration"])
    wait_until(lambda: (alice.version(big) or {}).get("status") == "running", 60, "the flood to start")
    small = bob.new_version(small_sid, operations=["integration"])
    small_doc = bob.wait_version(small, timeout=120)
    small_done = time.monotonic() - began
    doc = alice.wait_version(big, timeout=240)
    took = time.monotonic() - began
    peak = builder.peak_rss_mb()
    print(f"300 MB without a newline: {doc['status']} after {took:.1f}s; other user's version "
          f"{small_doc['status']} after {small_done:.1f}s; builder peak RSS {peak:.0f} MB")
    assert small_doc["status"] == "success", small_doc
    assert doc["status"] == "success", doc
    assert small_done < took  # the other user's version did not wait for the flood
    assert took < 180  # generous: ~15-35 s here; before, the builder had not finished after minutes
    assert peak < 250
    assert builder.proc.poll() is None

    def archived() -> list[dict] | None:
        docs = list(store.logs.find({"version_id": big}))
        # (the count of what was dropped is the last line the writer gives out)
        return docs if any("lines (" in d["text"] and "of output not kept" in d["text"] for d in docs) else None

    lines = wait_until(archived, 60, "the log to be archived")
    out = [d for d in lines if d["stream"] != "system"]
    kept = sum(len(d["text"].encode()) for d in out)
    print(f"stored: {len(lines)} lines, {kept} bytes of output")
    assert kept <= LOG_MAX_BYTES
    [long] = [d["text"] for d in out if d["text"].startswith("aaaa")]
    print(f"the long line: {len(long)} characters, ending {long[-40:]!r}")
    assert long == "a" * 16384 + f"…[{300_000_000 - 16384} bytes truncated]"
    system = [d["text"] for d in lines if d["stream"] == "system"]
    assert any(t.startswith(f"…[log limit of {LOG_MAX_BYTES} bytes reached") for t in system), system
    assert any("lines (" in t and "of output not kept" in t for t in system), system


async def test_attempts_count_each_process_once(store) -> None:
    vid = f"hb-{uuid.uuid4().hex}"
    first, again = BuilderState(store, "w@h:1", lost_after=0.0), BuilderState(store, "w@h:1", lost_after=0.0)
    def doc() -> dict | None:
        return store.builder_heartbeats.find_one({"_id": vid})

    try:
        assert await first.claim(vid), doc()
        assert await first.start_attempt(vid) == 1, doc()
        assert await first.start_attempt(vid) == 1, doc()  # the same process resuming its own work
        assert await again.claim(vid), doc()  # restarted under the same worker name (pid 1 in a container)
        assert await again.start_attempt(vid) == 2, doc()
    finally:
        store.builder_heartbeats.delete_one({"_id": vid})
    assert await first.start_attempt(vid) == 0  # nothing claimed: nothing counted


@pytest.mark.timeout(300)
def test_version_that_kills_its_worker_twice_fails(builder, stack, store, tmp_path: Path) -> None:
    alice = _api(stack, store)
    sid = _service(alice, tmp_path / "a", {"fornax.yml": _step(["sleep 120"])})
    vid = alice.new_version(sid, operations=["integration"])

    def started_again(seen: set[str]):
        """(worker, start) once the step was started anew (a StageStarted not seen yet)."""
        def check() -> tuple[str, str] | None:
            hb = store.builder_heartbeats.find_one({"_id": vid}) or {}
            stage = ((store.versions.find_one({"_id": vid}) or {}).get("stages") or {}).get("integration") or {}
            start = str(stage.get("start"))
            fresh = stage.get("status") == "running" and start not in seen and hb.get("worker")
            return (hb["worker"], start) if fresh else None
        return check

    began = time.monotonic()
    seen: set[str] = set()
    for attempt in (1, 2):
        worker, start = wait_until(started_again(seen), 120, f"attempt {attempt} to start the step")
        print(f"attempt {attempt} running in {worker} after {time.monotonic() - began:.1f}s; killing it")
        builder.kill()  # as the out-of-memory killer would
        seen.add(start)
        builder.start(wait=False)  # the version is resumed once its heartbeat is LOST_AFTER old
    doc = alice.wait_version(vid, timeout=120)
    print(f"after two crashes: {doc['status']} after {time.monotonic() - began:.1f}s: {doc.get('error')}")
    assert doc["status"] == "failed", doc
    assert "stopped its builder 2 times" in doc["error"] and "builder_max_crashes" in doc["error"]
    # its claim is marked done (no reaper resumes it again), then dropped once the read model shows the end
    wait_until(lambda: store.builder_heartbeats.find_one({"_id": vid}) is None, 60, "the done claim dropped")
