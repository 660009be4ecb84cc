"""A namespace and the handlers the application registers on it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs

from ..sansio import DisconnectReason

if TYPE_CHECKING:
    from ._socket import Socket

__all__ = [
    "AnyEventHandler",
    "ConnectHandler",
    "ConnectedHandler",
    "DisconnectHandler",
    "EventHandler",
    "Namespace",
]

#: Runs before the client is admitted; raise ConnectRefused to refuse. May set
#: ``socket.data``. The argument is the CONNECT payload (``auth`` of the JS client).
ConnectHandler = Callable[["Socket", dict[str, Any] | None], Awaitable[None]]
#: Runs once the client is admitted; may emit.
ConnectedHandler = Callable[["Socket"], Awaitable[None]]
#: Handles one event. Gets the event's arguments; what it returns is the ack when the
#: client asked for one: ``None`` acks with no arguments, a tuple with its items, any
#: other value with that one value.
EventHandler = Callable[["Socket", tuple[Any, ...]], Awaitable[Any]]
#: Handles any event without a handler of its own; also gets the event's name.
AnyEventHandler = Callable[["Socket", str, tuple[Any, ...]], Awaitable[Any]]
#: Runs once after the socket left, whatever the reason.
DisconnectHandler = Callable[["Socket", DisconnectReason], Awaitable[None]]


@attrs.frozen
class Route:
    handler: EventHandler
    #: Run without waiting for the socket's earlier events (and let later ones start).
    concurrent: bool


class Namespace:
    """A Socket.IO namespace: its name and its handlers.

    Handlers are registered with the decorators below. Events of one socket are
    handled one at a time, in order, unless a handler was registered with
    ``concurrent=True``.
    """

    def __init__(self, name: str) -> None:
        if not name.startswith("/"):
            raise ValueError(f"a namespace starts with '/', got {name!r}")
        self.name = name
        self._routes: dict[str, Route] = {}
        self._any: AnyEventHandler | None = None
        self.connect_handler: ConnectHandler | None = None
        self.connected_handler: ConnectedHandler | None = None
        self.disconnect_handler: DisconnectHandler | None = None

    def on(self, event: str, *, concurrent: bool = False) -> Callable[[EventHandler], EventHandler]:
        """Register the handler of ``event``."""

        def register(handler: EventHandler) -> EventHandler:
            if event in self._routes:
                raise ValueError(f"{self.name}: {event!r} already has a handler")
            self._routes[event] = Route(handler, concurrent)
            return handler

        return register

    def on_any(self, handler: AnyEventHandler) -> AnyEventHandler:
        """Register the handler of every event that has none of its own."""
        self._any = handler
        return handler

    def on_connect(self, handler: ConnectHandler) -> ConnectHandler:
        self.connect_handler = handler
        return handler

    def on_connected(self, handler: ConnectedHandler) -> ConnectedHandler:
        self.connected_handler = handler
        return handler

    def on_disconnect(self, handler: DisconnectHandler) -> DisconnectHandler:
        self.disconnect_handler = handler
        return handler

    def route(self, event: str) -> Route | None:
        return self._routes.get(event)

    @property
    def any_handler(self) -> AnyEventHandler | None:
        return self._any

    @property
    def events(self) -> frozenset[str]:
        return frozenset(self._routes)
