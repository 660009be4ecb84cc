"""What the client raises, and why a namespace or a connection ended."""

from __future__ import annotations

import copy
import enum
from typing import Any, TypeVar

import trio

__all__ = [
    "AckTimeout",
    "ClientError",
    "ConnectFailed",
    "ConnectRefused",
    "ConnectionClosed",
    "DisconnectReason",
    "Disconnected",
    "fresh",
]


class DisconnectReason(enum.StrEnum):
    """Why a namespace or the whole connection ended, as the client saw it.

    The values that also exist on the server (``protocol/PROTOCOL.md`` section 5) are
    spelt the same way, so a test can compare the two sides.
    """

    #: The server sent a Socket.IO DISCONNECT for the namespace.
    SERVER_DISCONNECT = "server_disconnect"
    #: This client sent a DISCONNECT (:meth:`Socket.disconnect`).
    CLIENT_DISCONNECT = "client_disconnect"
    #: The server closed the WebSocket (``code`` and ``detail`` say how) or sent the
    #: Engine.IO close packet ``1``.
    SERVER_CLOSE = "server_close"
    #: This client closed the connection (its ``open_client`` context was left).
    CLIENT_CLOSE = "client_close"
    #: No ping for ``pingInterval + pingTimeout`` (Engine.IO v4, "Heartbeat").
    PING_TIMEOUT = "ping_timeout"
    #: The TCP connection ended without a WebSocket close frame (code 1006).
    TRANSPORT_CLOSE = "transport_close"
    #: A send was interrupted mid-packet, so the stream can no longer be trusted.
    TRANSPORT_ERROR = "transport_error"
    #: The server sent something the protocol does not allow.
    PROTOCOL_ERROR = "protocol_error"


class ClientError(Exception):
    """Base class of everything the client raises about the connection or a namespace."""


class ConnectFailed(ClientError):
    """The connection or a namespace could not be set up, and the server did not refuse it.

    Network errors, an HTTP refusal of the WebSocket upgrade, a missing or malformed
    Engine.IO open packet, or no reply to a Socket.IO CONNECT in time. ``__cause__``
    holds the underlying error when there is one.
    """


class ConnectRefused(ClientError):
    """The server answered a CONNECT with CONNECT_ERROR.

    Attributes:
        message: The refusal's ``message`` (for ReplyHQ, a code such as
            ``"INVALID_CREDENTIALS"``; PROTOCOL.md section 6).
        data: The refusal's optional ``data``, or ``None``.
    """

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message, data)
        self.message = message
        self.data = data

    def __str__(self) -> str:
        return self.message if self.data is None else f"{self.message} ({self.data!r})"


class Disconnected(ClientError):
    """The namespace is no longer connected; its socket can neither send nor receive.

    Attributes:
        reason: Why it ended.
        namespace: The namespace, or ``None`` when the whole connection ended.
    """

    def __init__(self, reason: DisconnectReason, namespace: str | None = None) -> None:
        super().__init__(reason, namespace)
        self.reason = reason
        self.namespace = namespace

    def __str__(self) -> str:
        return f"{self.namespace} disconnected: {self.reason}"


class ConnectionClosed(Disconnected):
    """The Engine.IO connection ended, and with it every namespace on it.

    A subclass of :class:`Disconnected`, so ``except Disconnected`` covers both.

    Attributes:
        code: The WebSocket close code: the server's, or after a protocol error of
            the server, the one this client closes with.
        detail: The close frame's reason, or what went wrong.
    """

    def __init__(
        self, reason: DisconnectReason, code: int | None = None, detail: str | None = None
    ) -> None:
        super().__init__(reason)
        # args is what copy.copy (see fresh) passes back to __init__.
        self.args = (reason, code, detail)
        self.code = code
        self.detail = detail

    def __str__(self) -> str:
        text = f"connection closed: {self.reason}"
        if self.code is not None:
            text += f" (code {self.code})"
        if self.detail:
            text += f": {self.detail}"
        return text


class AckTimeout(ClientError, trio.TooSlowError):
    """No acknowledgement arrived within the timeout; the connection stays usable.

    Also a :class:`trio.TooSlowError`, like every other Trio timeout.
    """


_E = TypeVar("_E", bound=BaseException)


def fresh(exc: _E) -> _E:
    """A copy of ``exc`` to raise again: raising one instance from many places would
    pile every raise site onto its one traceback."""
    return copy.copy(exc)
