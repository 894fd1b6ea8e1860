"""FakeBus: an event bus for unit tests that keeps what was published instead of sending it to Kafka.

Every event goes through the codec (`encode()` then `shared.events.decode`), as a consumer would see
it, so an already encoded event (the webhook hot path's) is checked the same way. With `project_into`
a store, published events are folded into it at once (an in-process projector), so read-your-writes
waits in the gateway end immediately.
"""

from __future__ import annotations

from typing import Any

from shared.bus import BusUnavailable, encoded
from shared.events import Event, decode
from shared.projections import apply
from shared.settings import Settings
from shared.store import ReadModelStore


class FakeBus:
    def __init__(self, settings: Settings | None = None, project_into: ReadModelStore | None = None) -> None:
        self.settings = settings or Settings()
        self.store = project_into
        self.events: list[Event] = []
        self.topics: list[str] = []
        self.down = False  # True: publish() raises BusUnavailable, as a lost broker does
        self._producer: Any = None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def publish(self, *events: Any) -> None:
        if self.down:
            raise BusUnavailable("fake broker is down")
        for raw, sent in zip(encoded(self.settings, events), events, strict=True):
            event = decode(raw)
            self.events.append(event)
            self.topics.append(sent.TOPIC)
            if self.store is not None:
                apply(self.store, event)

    def of_type(self, etype: str) -> list[Event]:
        return [e for e in self.events if e.type == etype]
