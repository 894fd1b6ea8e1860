"""The deploy-target port: one `deploy(request) -> result` per target kind (Kubernetes, Docker host, fake).

Adapters never raise for an expected failure (bad image, timeout, forbidden, unreachable): they return
a DeployResult with a short, clear reason. Credentials never appear in a reason or detail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

_UNSAFE_NAME = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class DeployRequest:
    """What to run where: the version's image by digest, as `application` in `namespace`."""

    deployment_id: str
    service_id: str
    service_name: str
    version_id: str
    application: str
    image: str  # <registry>/<user>/<service>:<version name>, as pushed by the builder
    digest: str | None = None
    namespace: str | None = None
    timeout: float = 120.0
    labels: dict[str, str] = field(default_factory=dict)
    user_id: str = ""  # the service's owner (names a Docker-host container)

    @property
    def repository(self) -> str:
        return image_repository(self.image)

    @property
    def reference(self) -> str:
        """`<repo>@<digest>` (the exact image) when the digest is known, else the tagged image."""
        return f"{self.repository}@{self.digest}" if self.digest else self.image


@dataclass(frozen=True)
class DeployResult:
    ok: bool
    reason: str = ""  # why it failed (empty on success)
    detail: str = ""  # what now runs (e.g. published ports)

    @classmethod
    def success(cls, detail: str = "") -> DeployResult:
        return cls(True, "", detail)

    @classmethod
    def failure(cls, reason: str) -> DeployResult:
        return cls(False, reason[:1000], "")


class Target(Protocol):
    """A deploy target. `deploy` is idempotent for one request and finishes within request.timeout."""

    kind: str

    async def deploy(self, request: DeployRequest) -> DeployResult: ...


def image_repository(image: str) -> str:
    """`reg:5000/a/b:tag` or `reg:5000/a/b@sha256:..` -> `reg:5000/a/b` (a port is not a tag)."""
    image = image.split("@", 1)[0]
    head, sep, tail = image.rpartition(":")
    return head if sep and "/" not in tail else image


def k8s_name(text: str) -> str:
    """A DNS-1123 label made from `text` (Deployment and container names)."""
    name = _UNSAFE_NAME.sub("-", text.lower()).strip("-")
    return (name or "app")[:63].rstrip("-")
