"""Helpers for the pipeline tests: an in-memory log writer, version ids tracked for leak checks."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import docker

from services.builder.pipeline import DockerBackend, StageContext, cleanup_version


@dataclass
class MemoryLog:
    """A stand-in for LogWriter with the same `write` signature, keeping lines in order."""

    lines: list[tuple[str, str, str]] = field(default_factory=list)  # (stage, stream, text)

    async def write(self, stage: str, text: str, stream: str = "stdout") -> None:
        for line in text.splitlines() or [""]:
            self.lines.append((stage, stream, line))

    def texts(self, stage: str | None = None) -> list[str]:
        return [t for s, _, t in self.lines if stage is None or s == stage]


def labelled(client: docker.DockerClient, version_id: str) -> tuple[list, list]:
    selector = {"label": f"fornax.version={version_id}"}
    return client.containers.list(all=True, filters=selector), client.networks.list(filters=selector)


class Versions:
    """Hands out version ids for one test; at the end asserts nothing labelled with them remains."""

    def __init__(self, client: docker.DockerClient, tmp: Path, settings) -> None:
        self.client, self.tmp, self.settings = client, tmp, settings
        self.ids: list[str] = []

    def new_id(self) -> str:
        vid = f"pt{uuid.uuid4().hex[:12]}"
        self.ids.append(vid)
        return vid

    def context(self, log=None, *, user_id: str = "pipeline-user", version_id: str | None = None,
                settings=None, **kwargs) -> StageContext:
        vid = version_id or self.new_id()
        workspace = self.tmp / vid
        workspace.mkdir(parents=True, exist_ok=True)
        return StageContext(backend=DockerBackend(self.client), version_id=vid, user_id=user_id, workspace=workspace,
                            log=log if log is not None else MemoryLog(), settings=settings or self.settings,
                            cancelled=asyncio.Event(), **kwargs)

    def leaks(self) -> list[str]:
        """Everything still labelled with these ids after cleanup_version — must be empty."""
        found = []
        for vid in self.ids:
            cleanup_version(self.client, vid)
            containers, networks = labelled(self.client, vid)
            found += [f"container {c.name}" for c in containers] + [f"network {n.name}" for n in networks]
        return found
