"""ImageBuilt → push to the registry (credentials from settings) → ImagePushed with the digest.

A push error (wrong password, registry down) fails the version naming the reason; the daemon's own
retries are the only retries. A version already pushed (a repeated ImageBuilt) is left to the tag step.
"""

from __future__ import annotations

from typing import Any

from shared.events import Event, ImagePushed
from shared.events.versions import ImagePushedPayload

from .build import run_owned
from .core import Builder
from .engine import PushError
from .run import Run

PUSH_TIMEOUT = 600.0


def _pushed(doc: dict[str, Any]) -> bool:
    return bool(doc.get("digest")) and (doc.get("stages") or {}).get("push", {}).get("status") == "success"


async def on_image_built(b: Builder, event: Event) -> None:
    await run_owned(b, event, lambda r: push_image(b, r, event), skip=_pushed)


async def push_image(b: Builder, run: Run, event: Event) -> None:
    p: Any = event.payload
    run.host = p.host
    await run.open_log()

    async def push() -> str:
        return await b.registry.push(b.hosts.client(p.host), p.image, run.line_writer("push"))

    digest = await run.stage("push", push, timeout=PUSH_TIMEOUT, errors=(PushError,))
    await run.write("push", f"pushed {p.image}@{digest}", "system")
    pushed = run.make(ImagePushed, ImagePushedPayload(image=p.image, digest=digest))
    await run.publish_once(pushed)
    from .tag import tag_version

    run.cause = pushed
    await tag_version(b, run, pushed)
