"""The Docker host pool: builds go to the reachable host with the fewest running builds.

Load of a host = versions the read model shows `running` on it (SourceFetched records the host; that
counts every builder process) that this process is not building itself, plus this process's own
builds on it (counted in memory from the moment a host is picked, before the read model knows).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from . import engine

log = logging.getLogger(__name__)


class NoHost(Exception):
    """No Docker host of the pool answers."""


class HostPool:
    def __init__(
        self,
        hosts: list[str],
        store: Any,
        cert_path: str | None = None,
        connect: Callable[..., Any] = engine.connect,
    ) -> None:
        self.hosts = list(hosts)
        self.store = store
        self.cert_path = cert_path
        self._connect = connect
        self._clients: dict[str, Any] = {}
        self.local: Counter[str] = Counter()
        self.own: dict[str, str] = {}  # version id -> host, for builds of this process

    def client(self, host: str) -> Any:
        if host not in self._clients:
            self._clients[host] = self._connect(host, self.cert_path)
        return self._clients[host]

    def _load(self, host: str) -> int:
        query: dict[str, Any] = {"status": "running", "host": host}
        mine = list(self.own)
        if mine:
            query["_id"] = {"$nin": mine}
        # (the few running versions' ids, counted here: a count_documents is an aggregation, which a
        # Mongo-wire server on SQLite runs as a scan of every version ever made)
        return len(list(self.store.versions.find(query, {"_id": 1}))) + self.local[host]

    def _alive(self, host: str) -> bool:
        try:
            return bool(self.client(host).ping())
        except Exception as exc:  # noqa: BLE001 - any failure: not usable now
            log.warning("docker host %s does not answer: %s", host, exc)
            self._clients.pop(host, None)
            return False

    def _pick(self) -> str:
        if len(self.hosts) == 1:
            if not self._alive(self.hosts[0]):
                raise NoHost(f"the Docker host {self.hosts[0]} does not answer")
            return self.hosts[0]
        loads = sorted((self._load(h), i, h) for i, h in enumerate(self.hosts))
        for _, _, host in loads:
            if self._alive(host):
                return host
        raise NoHost(f"no Docker host answers (tried {', '.join(self.hosts)})")

    async def pick(self, version_id: str) -> str:
        """Choose and hold a host for the version (held until `release`)."""
        if version_id in self.own:
            return self.own[version_id]
        host = await asyncio.to_thread(self._pick)
        self.own[version_id] = host
        self.local[host] += 1
        return host

    def release(self, version_id: str) -> None:
        host = self.own.pop(version_id, None)
        if host is not None:
            self.local[host] -= 1
