"""Events on fornax.logs: one LogLine per line, keyed by version id, `seq` per version."""

from __future__ import annotations

from typing import Literal

from .envelope import Event, Payload


class LogLinePayload(Payload):
    version_id: str
    seq: int
    stage: str
    stream: Literal["stdout", "stderr", "system"] = "stdout"
    text: str
    ts: float


class LogLine(Event):
    TOPIC = "logs"
    type: Literal["LogLine"] = "LogLine"
    payload: LogLinePayload
