"""The push step: ImageBuilt → push to the registry (credentials from settings) → ImagePushed with the digest.

A push error (wrong password, registry down) fails the version naming the reason; the daemon's own
retries are the only retries.
"""

from __future__ import annotations

from typing import Any

from shared.events import Event, ImagePushed
from shared.events.versions import ImagePushedPayload

from .core import Builder
from .engine import PushError
from .run import Run

PUSH_TIMEOUT = 600.0


async def push(b: Builder, run: Run, built: Event) -> list[Event]:
    """ImageBuilt → [ImagePushed]."""
    p: Any = built.payload
    run.host = p.host
    await run.open_log()

    async def registry_push() -> str:
        return await b.registry.push(b.hosts.client(p.host), p.image, run.line_writer("push"))

    digest = await run.stage("push", registry_push, timeout=PUSH_TIMEOUT, errors=(PushError,))
    await run.write("push", f"pushed {p.image}@{digest}", "system")
    return [run.make(ImagePushed, ImagePushedPayload(image=p.image, digest=digest))]
