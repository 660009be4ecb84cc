"""Exceptions of the server API."""

from __future__ import annotations

from typing import Any

from ..sansio import DisconnectReason

__all__ = ["AckTimeout", "ConnectRefused", "EventRefused", "SocketGone"]


class ConnectRefused(Exception):
    """Raised by a connect handler to refuse the namespace: the client gets CONNECT_ERROR.

    Args:
        message: The CONNECT_ERROR message (the official clients show it as ``err.message``).
        data: Optional details, sent as the CONNECT_ERROR ``data``.
        close: Then close the whole connection, unless it joined another namespace
            (for a client over a limit: what it holds open costs the server).
    """

    def __init__(self, message: str, data: Any = None, *, close: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        self.close = close


class SocketGone(Exception):
    """The socket is disconnected: nothing can be sent to it or awaited from it."""

    def __init__(self, reason: DisconnectReason | None) -> None:
        super().__init__(f"the socket is disconnected ({reason.value if reason else 'closing'})")
        self.reason = reason


class AckTimeout(TimeoutError):
    """The client did not acknowledge an emit in time."""


class EventRefused(Exception):
    """Raised by an event handler to refuse the event, telling the client why.

    Where the answer goes depends on the client, which the handler does not need to
    know: in the ack when the client asked for one, otherwise as the event ``event``
    with ``payload`` (CONTRACT.md: an error goes in the ack, else in an ``error``
    event).

    Args:
        ack: The ack value (the same rules as a handler's return value).
        event: The event to emit when no ack was asked for.
        payload: That event's payload.
        then_disconnect: Disconnect the socket for this reason once the client has been
            told (a repeat offender).
    """

    def __init__(
        self,
        ack: Any,
        event: str,
        payload: Any,
        *,
        then_disconnect: DisconnectReason | None = None,
    ) -> None:
        super().__init__(f"refused: {payload!r}")
        self.ack = ack
        self.event = event
        self.payload = payload
        self.then_disconnect = then_disconnect
