"""Driving the compose stack from outside: a bounded webhook load through HAProxy, instance kills and
restarts, readiness waits. Used by tests/e2e/test_compose_scale.py and bench/scale/run.py."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from infra.compose.stack import ComposeStack
from tests.integration.gateway_helpers import github_push
from tests.waits import wait_until

# What a check may raise while a container or HAProxy is (re)starting: not yet.
NOT_YET: tuple[type[BaseException], ...] = (Exception,)


def docker(*args: str) -> str:
    res = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout.strip()


def container_ip(container: str) -> str:
    return docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container)


def hostname_of(container: str) -> str:
    return docker("inspect", "-f", "{{.Config.Hostname}}", container)


def wait_worker_ready(container: str, since: float, timeout: float = 90) -> None:
    """A Faust worker (builder, deployer, projector) restarted at `since` has joined its group again."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since - 1))
    wait_until(lambda: "Worker]: Ready" in subprocess.run(
        ["docker", "logs", "--since", stamp, container], capture_output=True, text=True).stderr,
        timeout, f"{container} to be ready", every=0.5, retry=NOT_YET)


@dataclass
class Result:
    delivery: str
    status: int | None  # None: no answer (connection error)
    error: str = ""
    at: float = 0.0


@dataclass
class Load:
    """`workers` threads, each sending signed GitHub tag pushes (they reach Kafka and the events archive
    but build nothing) one after another, pausing `pause` seconds between: bounded by construction."""

    url: str
    repo_url: str
    secret: str
    workers: int = 4
    pause: float = 0.02
    results: list[Result] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=15) as http:
            while not self._stop.is_set():
                delivery = str(uuid.uuid4())
                headers, body = github_push(self.repo_url, self.secret, ref=f"refs/tags/load-{delivery[:8]}",
                                            delivery=delivery)
                try:
                    status, error = http.post("/webhooks/github", content=body, headers=headers).status_code, ""
                except httpx.HTTPError as exc:
                    status, error = None, f"{type(exc).__name__}: {exc}"
                with self._lock:
                    self.results.append(Result(delivery, status, error, time.monotonic()))
                if self.pause:
                    time.sleep(self.pause)

    def start(self) -> Load:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.workers)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> list[Result]:
        self._stop.set()
        for t in self._threads:
            t.join(30)
        return self.results

    @property
    def accepted(self) -> list[str]:
        return [r.delivery for r in self.results if r.status == 202]

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.status != 202]


def archived_deliveries(store: Any, deliveries: list[str]) -> set[str]:
    """Which deliveries reached the events archive as PushReceived (through Kafka and the projector)."""
    found: set[str] = set()
    for i in range(0, len(deliveries), 500):
        chunk = deliveries[i:i + 500]
        for doc in store.events.find({"type": "PushReceived", "payload.delivery_id": {"$in": chunk}},
                                     {"payload": 1}):  # (a dotted projection comes back flat from nx-27017)
            found.add(doc["payload"]["delivery_id"])
    return found


def wait_all_archived(stack: ComposeStack, store: Any, deliveries: list[str], stall: float = 45.0,
                      bound: float = 300.0) -> None:
    """Every accepted delivery reaches the archive. The projector works through a backlog (each push also
    makes a version) at the machine's pace: this fails when the archive stops growing for `stall` seconds,
    or after `bound`, naming what is missing and what the projector logged last."""
    began = time.monotonic()
    count, changed = -1, began
    while True:
        found = archived_deliveries(store, deliveries)
        now = time.monotonic()
        if len(found) == len(deliveries):
            return
        if len(found) != count:
            count, changed = len(found), now
        if now - changed > stall or now - began > bound:
            missing = [d for d in deliveries if d not in found]
            projector = stack.containers("projector")
            logs = subprocess.run(["docker", "logs", "--tail", "30", projector[0]], capture_output=True,
                                  text=True).stderr if projector else ""
            raise AssertionError(f"{len(missing)} of {len(deliveries)} accepted deliveries not archived after "
                                 f"{now - began:.0f}s (none more for {now - changed:.0f}s): {missing[:5]}\n"
                                 f"projector's last lines:\n{logs}")
        time.sleep(0.5)


def server_down(stack: ComposeStack, server: str) -> bool:
    return stack.server_states().get(server, "").startswith(("DOWN", "MAINT"))


def server_up(stack: ComposeStack, server: str) -> bool:
    return stack.server_states().get(server) == "UP"
