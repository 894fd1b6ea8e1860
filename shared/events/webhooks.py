"""Events on fornax.webhooks."""

from __future__ import annotations

from typing import Literal

from .envelope import Event, Payload


class PushReceivedPayload(Payload):
    provider: Literal["github", "gitlab"]
    delivery_id: str
    service_id: str
    user_id: str
    repo_url: str
    ref: str
    branch: str | None = None
    tag: str | None = None
    deleted: bool = False
    after: str = ""
    before: str = ""
    pusher: str | None = None
    message: str | None = None


class PushReceived(Event):
    TOPIC = "webhooks"
    type: Literal["PushReceived"] = "PushReceived"
    payload: PushReceivedPayload
