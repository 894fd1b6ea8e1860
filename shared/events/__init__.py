"""Every Fornax event type, one discriminated union, and the codec with upcasting."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from .deploys import (
    DeployFailed,
    DeployRequested,
    DeploySkipped,
    DeployStarted,
    DeploySucceeded,
    RollbackRequested,
    TargetPinChanged,
)
from .envelope import Event, Payload, new_id, utcnow
from .logs import LogLine, LogLinePayload
from .services import (
    Repository,
    RepositoryChecked,
    ServiceCreated,
    ServiceDeleted,
    ServiceUpdated,
)
from .versions import (
    ImageBuilt,
    ImagePushed,
    SourceFetched,
    StageFinished,
    StageStarted,
    VersionCancelled,
    VersionFailed,
    VersionQueued,
    VersionRequested,
    VersionSucceeded,
    VersionTagged,
)
from .webhooks import PushReceived

EVENT_TYPES: tuple[type[Event], ...] = (
    PushReceived,
    ServiceCreated,
    RepositoryChecked,
    ServiceUpdated,
    ServiceDeleted,
    VersionRequested,
    VersionQueued,
    SourceFetched,
    StageStarted,
    StageFinished,
    ImageBuilt,
    ImagePushed,
    VersionTagged,
    VersionSucceeded,
    VersionFailed,
    VersionCancelled,
    DeployRequested,
    RollbackRequested,
    DeployStarted,
    DeploySucceeded,
    DeployFailed,
    DeploySkipped,
    TargetPinChanged,
    LogLine,
)
BY_TYPE: dict[str, type[Event]] = {cls.model_fields["type"].default: cls for cls in EVENT_TYPES}

AnyEvent = Annotated[
    PushReceived
    | ServiceCreated
    | RepositoryChecked
    | ServiceUpdated
    | ServiceDeleted
    | VersionRequested
    | VersionQueued
    | SourceFetched
    | StageStarted
    | StageFinished
    | ImageBuilt
    | ImagePushed
    | VersionTagged
    | VersionSucceeded
    | VersionFailed
    | VersionCancelled
    | DeployRequested
    | RollbackRequested
    | DeployStarted
    | DeploySucceeded
    | DeployFailed
    | DeploySkipped
    | TargetPinChanged
    | LogLine,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyEvent)

# (type, from_schema_version) -> function turning the old dict into the next version's dict.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}
CURRENT_VERSION: dict[str, int] = {name: 1 for name in BY_TYPE}


class EventDecodeError(ValueError):
    """The bytes are not a valid Fornax event (logged and skipped by consumers)."""


def upcast(data: dict[str, Any]) -> dict[str, Any]:
    """Bring an old event dict up to the current schema version, step by step."""
    etype = data.get("type")
    version = int(data.get("schema_version", 1))
    while isinstance(etype, str) and version < CURRENT_VERSION.get(etype, 1):
        step = UPCASTERS.get((etype, version))
        if step is None:
            break
        data = step(dict(data))
        version += 1
        data["schema_version"] = version
    return data


def decode(raw: bytes | str | dict[str, Any]) -> Event:
    """Parse one event from JSON bytes (or a dict); raises EventDecodeError on anything invalid."""
    try:
        if not UPCASTERS and not isinstance(raw, dict):
            # Nothing to upcast: parse and validate in one pass (the consumers' hot path, log lines).
            fast: Event = _ADAPTER.validate_json(raw)
            return fast
        data = raw if isinstance(raw, dict) else json.loads(raw)
        if not isinstance(data, dict):
            raise EventDecodeError("event is not a JSON object")
        data = {k: v for k, v in data.items() if k != "_id"}
        event: Event = _ADAPTER.validate_python(upcast(data))
        return event
    except EventDecodeError:
        raise
    except (ValueError, TypeError, ValidationError) as exc:
        raise EventDecodeError(str(exc)[:500]) from exc


__all__ = [
    "AnyEvent", "BY_TYPE", "EVENT_TYPES", "Event", "EventDecodeError", "Payload", "Repository",
    "decode", "new_id", "utcnow", "UPCASTERS", "CURRENT_VERSION", "LogLinePayload",
] + [cls.__name__ for cls in EVENT_TYPES]
