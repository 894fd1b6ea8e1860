"""How every worker routes events to handlers: a `Router`, a table from event type to handler.

One router per consumer; handlers register by event type name (or class) and the consumer hands every
decoded event to `dispatch`. An event type with no handler is ignored (`dispatch` returns None), so a
consumer of a whole topic handles exactly the types in its table, and a unit test calls the same
table without Kafka:

    from shared.routing import Router

    ROUTES: Router[Callable[[ReadModelStore, Event], None]] = Router("notifier")

    @ROUTES.on("VersionRequested")
    def requested(store: ReadModelStore, event: Event) -> None: ...

    @ROUTES.on(VersionSucceeded, VersionFailed)           # classes work as well as names
    def finished(store: ReadModelStore, event: Event) -> None: ...

    ROUTES.dispatch(event, store)     # calls handler(store, event); None when the type is not routed

Handlers receive the consumer's context first and the event last: `dispatch(event, *context)` calls
`handler(*context, event)`. An async handler's coroutine is returned by `dispatch` for the caller to
await; `adispatch` awaits it (or returns a plain handler's result). In a Faust agent:

    @app.agent(topic(app, settings, "versions"))
    async def versions(stream):
        async for raw in stream:
            event = decoded(raw)                              # shared/faust_app.py: the one codec
            if event is not None and event.type in ROUTES:    # cheap skip of unrouted types
                await ROUTES.adispatch(event, context)

Registering a name that is not an event type (shared/events BY_TYPE) fails at import, and so does
registering a second handler for one type: one type, one handler per router.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .events import BY_TYPE, Event

H = TypeVar("H", bound=Callable[..., Any])


def type_name(etype: str | type[Event]) -> str:
    """The event type name of a name or an Event class; ValueError for anything not in BY_TYPE."""
    name = etype if isinstance(etype, str) else str(etype.model_fields["type"].default)
    if name not in BY_TYPE:
        raise ValueError(f"{name!r} is not an event type")
    return name


class Router(Generic[H]):
    """An event-type -> handler table."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._handlers: dict[str, H] = {}

    def add(self, handler: H, *types: str | type[Event]) -> H:
        for etype in types:
            name = type_name(etype)
            if name in self._handlers:
                raise ValueError(f"router {self.name}: {name} is already routed to {self._handlers[name]!r}")
            self._handlers[name] = handler
        return handler

    def on(self, *types: str | type[Event]) -> Callable[[H], H]:
        """Decorator: route these event types to the decorated handler."""

        def register(handler: H) -> H:
            return self.add(handler, *types)

        return register

    def handler(self, event_type: str) -> H | None:
        return self._handlers.get(event_type)

    @property
    def types(self) -> frozenset[str]:
        return frozenset(self._handlers)

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._handlers

    def __iter__(self) -> Iterator[str]:
        return iter(self._handlers)

    def dispatch(self, event: Event, *context: Any) -> Any:
        """`handler(*context, event)` for the event's type; None when the type is not routed."""
        handler = self._handlers.get(event.type)
        return None if handler is None else handler(*context, event)

    async def adispatch(self, event: Event, *context: Any) -> Any:
        """`dispatch`, awaiting an async handler's result."""
        result = self.dispatch(event, *context)
        return await result if inspect.isawaitable(result) else result
