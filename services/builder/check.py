"""ServiceCreated / ServiceUpdated → reach the repository with its credentials → RepositoryChecked."""

from __future__ import annotations

import logging
from typing import Any

from shared.events import Event, RepositoryChecked, ServiceCreated, ServiceUpdated
from shared.events.services import RepositoryCheckedPayload
from shared.logwriter import mask

from .core import Builder
from .vcs import Probe

log = logging.getLogger(__name__)


async def on_service_event(b: Builder, event: Event) -> RepositoryChecked | None:
    """Probe the repository of a created or updated service; emit and return RepositoryChecked."""
    if not isinstance(event, ServiceCreated | ServiceUpdated):
        return None
    p: Any = event.payload
    repository = p.repository.model_dump() if p.repository is not None else None
    if repository is None:
        service = await b.state.service(event.aggregate_id)
        if service is None or service.get("deleted"):
            return None
        repository = service.get("repository") or {}
    spec = await b.state.repo_spec({"_id": event.aggregate_id}, repository)
    refused = b.url_refused(spec)
    probe = Probe("missing", refused) if refused else await b.vcs.probe(spec)
    message = mask(probe.message, [*spec.secrets(), b.registry_secret])[:1000]
    checked = RepositoryChecked.make(
        event.aggregate_id,
        RepositoryCheckedPayload(status=probe.status, message=message),  # type: ignore[arg-type]
        cause=event,
    )
    await b.emit(checked)
    log.info("service %s: repository %s", event.aggregate_id, probe.status)
    return checked
