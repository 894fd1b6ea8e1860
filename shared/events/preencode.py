"""Pre-encoding for hot paths: an event's JSON written in one call, generated from its model at start-up.

`PreEncoder(PushReceived)` reads the model once (envelope and payload field names in order, the type,
the schema version, the payload's defaults) and then writes `Event.encode()`'s bytes from plain
values with one `pydantic_core.to_json` call, without building and validating two models. Because
the layout comes from the model, a changed model (a new field, a new schema version with its
upcaster) changes what the hot path writes too; a model this cannot reproduce fails at start-up.

The values are not validated: the caller passes values of the payload's field types (checked
strings, booleans, None). A unit test holds the output equal to the model's encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined, to_json

from .envelope import Event, new_id, utcnow

# The envelope fields this writes, with what each is set to (see `PreEncoder.encode`).
_ENVELOPE = ("event_id", "type", "schema_version", "aggregate_id", "occurred_at", "correlation_id",
             "causation_id", "actor", "payload")


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """An event already serialized: what the bus uses of an Event (TOPIC, key(), encode())."""

    topic: str
    aggregate_id: str
    data: bytes

    @property
    def TOPIC(self) -> str:
        return self.topic

    def key(self) -> bytes:
        return self.aggregate_id.encode()

    def encode(self) -> bytes:
        return self.data


class PreEncoder:
    def __init__(self, event_cls: type[Event]) -> None:
        fields = event_cls.model_fields
        if tuple(fields) != _ENVELOPE:
            raise TypeError(f"{event_cls.__name__}: envelope fields {tuple(fields)} are not {_ENVELOPE}")
        payload_cls = fields["payload"].annotation
        if not (isinstance(payload_cls, type) and issubclass(payload_cls, BaseModel)):
            raise TypeError(f"{event_cls.__name__}: its payload is not a model")
        self.event_cls = event_cls
        self.topic = event_cls.TOPIC
        self.type = fields["type"].default
        self.schema_version = fields["schema_version"].default
        self.payload_fields = tuple(payload_cls.model_fields)
        self.defaults: dict[str, Any] = {}
        for name, info in payload_cls.model_fields.items():
            if info.default_factory is not None:
                raise TypeError(f"{event_cls.__name__}: payload field {name} has a default factory")
            if info.default is not PydanticUndefined:
                self.defaults[name] = info.default
        self._known = frozenset(self.payload_fields)

    def encode(self, aggregate_id: str, payload: dict[str, Any], *, actor: str | None = None,
               correlation_id: str | None = None, causation_id: str | None = None) -> EncodedEvent:
        """The event `event_cls.make(aggregate_id, payload, actor=..., correlation_id=...)` would be,
        encoded: a new event id, now as occurred_at, and as `Event.make` an empty actor is none."""
        names = self.payload_fields
        if len(payload) == len(names):  # every field given (a KeyError if one is not a payload field)
            body = {n: payload[n] for n in names}
        elif self._known.issuperset(payload):
            body = {n: payload[n] if n in payload else self.defaults[n] for n in names}
        else:
            raise TypeError(f"{self.type}: unknown payload fields {sorted(set(payload) - self._known)}")
        data = {
            "event_id": new_id(),
            "type": self.type,
            "schema_version": self.schema_version,
            "aggregate_id": aggregate_id,
            "occurred_at": utcnow(),
            "correlation_id": correlation_id or aggregate_id,
            "causation_id": causation_id,
            "actor": actor or None,
            "payload": body,
        }
        encoded = EncodedEvent(self.topic, aggregate_id, to_json(data))
        return encoded
