"""The common event envelope: every event on every topic carries these fields."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    # Millisecond precision, as BSON dates have: an archived event folds to the same read model.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class Payload(BaseModel):
    """Base of every payload; unknown fields from newer producers are ignored, not fatal."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Event(BaseModel):
    """Envelope: ids, type, schema version, timestamps, causality, actor, payload."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    TOPIC: ClassVar[str] = ""

    event_id: str = Field(default_factory=new_id)
    type: str
    schema_version: int = 1
    aggregate_id: str
    occurred_at: datetime = Field(default_factory=utcnow)
    correlation_id: str | None = None
    causation_id: str | None = None
    actor: str | None = None
    payload: Any

    @classmethod
    def make(
        cls,
        aggregate_id: str,
        payload: Payload,
        *,
        cause: Event | None = None,
        actor: str | None = None,
        correlation_id: str | None = None,
    ) -> Self:
        """Build an event, inheriting correlation id and actor from the event that caused it."""
        return cls(  # type: ignore[call-arg]  # each concrete event type gives `type` its default
            aggregate_id=aggregate_id,
            payload=payload,
            causation_id=cause.event_id if cause else None,
            correlation_id=correlation_id or (cause.correlation_id if cause else None) or aggregate_id,
            actor=actor or (cause.actor if cause else None),
        )

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    def key(self) -> bytes:
        return self.aggregate_id.encode()

    def to_doc(self) -> dict[str, Any]:
        """The event as a Mongo document for the `events` archive."""
        doc = self.model_dump(mode="json")
        doc["_id"] = self.event_id
        doc["occurred_at"] = self.occurred_at
        return doc
