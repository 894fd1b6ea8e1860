"""The container-backend port: what the stage runner asks of a container engine.

The runner decides everything that matters for isolation — the per-version network, the memory,
CPU and pids limits, the labels that fencing and cleanup select on, the image checks and the output
caps — and hands the engine a ContainerSpec; a backend only carries it out. DockerBackend
(docker_backend.py) is the production one; tests steer a fake (tests/fakes/backend.py).

A container handle is the backend's own object: the runner only passes it back.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

Container = Any  # a backend's container handle (opaque to the runner)


class BackendError(Exception):
    """The engine refused an operation; the message says why (shown in the stage error)."""


class ObjectNotFound(BackendError):
    """The container, or the path asked for inside it, does not exist."""


@dataclass(frozen=True)
class ContainerSpec:
    """One container of a stage, as the runner wants it run."""

    name: str
    image: str
    environment: dict[str, str]
    labels: dict[str, str]
    network: str
    memory_mb: int  # memory and memory+swap limit
    cpu_shares: int
    pids_limit: int
    nano_cpus: int  # CPU quota, in billionths of a CPU
    entrypoint: list[str] | None = None
    command: list[str] | None = None
    working_dir: str | None = None
    binds: list[str] = field(default_factory=list)  # "<host path>:<container path>:<mode>"
    alias: str | None = None  # a DNS name on `network` besides the container name


class ContainerBackend(Protocol):
    """The operations a stage needs. Every container runs with an init process as PID 1, so a
    graceful stop reaches `sh` scripts."""

    async def ensure_network(self, version_id: str) -> str:
        """The version's own network (named network_name(version_id), labelled with the version),
        created if missing; its name."""
        ...

    async def ensure_image(self, image: str, auth: dict[str, str] | None) -> None:
        """The image must be present; pulled only with `auth` (never a login stored on the host).
        StageFailed naming the image when it is not available."""
        ...

    async def create(self, spec: ContainerSpec) -> Container:
        """Create (not start) the container, replacing a leftover of the same name."""
        ...

    async def start(self, container: Container) -> None: ...

    def output(self, container: Container) -> AsyncGenerator[bytes, None]:
        """The container's stdout+stderr from its start, in chunks as produced, until it ends or is
        removed. A slow reader holds the producer back (a bounded buffer), it never piles up."""
        ...

    async def wait(self, container: Container) -> int:
        """Its exit code, once it ended (-1 if unknown)."""
        ...

    async def oom_killed(self, container: Container) -> bool:
        """Whether the memory limit killed it (False when that cannot be told)."""
        ...

    async def copy_from(self, container: Container, path: str, into: IO[bytes]) -> None:
        """Write a tar archive of `path` inside the container to `into`; ObjectNotFound if missing."""
        ...

    async def remove(self, container: Container, graceful: bool = False) -> None:
        """Remove it (idempotent); graceful: SIGTERM first, SIGKILL after a short grace."""
        ...

    async def cleanup(self, version_id: str, epoch: int | None = None) -> None:
        """Remove every container and the network labelled with the version (idempotent); with
        `epoch`, only its containers labelled with that claim epoch, and no network."""
        ...
