"""Protocol errors and the replies they carry.

Every error the wire can cause is a :class:`ProtocolError`, never a ``ValueError``:
the I/O layer catches exactly one type and finds in it what to do next. The split
follows h11: :class:`RemoteProtocolError` means the peer broke the protocol,
:class:`LocalProtocolError` means our own code asked for something illegal.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from ._types import Frame

__all__ = [
    "DisconnectReason",
    "ErrorReply",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "WebSocketCloseCode",
    "limit_exceeded",
]


class DisconnectReason(enum.Enum):
    """Why a namespace or a whole connection ended.

    The values are stable strings: they appear in logs, metrics labels and the
    ``session:disconnect`` event, so they are part of the contract.
    """

    #: The client sent a Socket.IO DISCONNECT for the namespace.
    CLIENT_DISCONNECT = "client_disconnect"
    #: The server application disconnected the socket.
    SERVER_DISCONNECT = "server_disconnect"
    #: The client sent an Engine.IO close packet or closed its WebSocket cleanly.
    CLIENT_CLOSE = "client_close"
    #: The client did not answer a ping within the ping timeout.
    PING_TIMEOUT = "ping_timeout"
    #: No namespace was connected within the connect timeout.
    CONNECT_TIMEOUT = "connect_timeout"
    #: The transport ended without a close handshake (TCP reset, EOF, abandoned polling).
    TRANSPORT_CLOSE = "transport_close"
    #: Writing to the transport failed.
    TRANSPORT_ERROR = "transport_error"
    #: The peer broke the Engine.IO, Socket.IO or WebSocket protocol.
    PROTOCOL_ERROR = "protocol_error"
    #: The peer sent more than a configured limit allows.
    LIMIT_EXCEEDED = "limit_exceeded"
    #: The connection could not keep up with what was sent to it.
    SLOW_CONSUMER = "slow_consumer"
    #: The server is shutting down.
    SERVER_SHUTDOWN = "server_shutdown"
    #: A bug on the server's side (an application handler raised); logged with the
    #: connection id, and only that connection is closed.
    INTERNAL_ERROR = "internal_error"


class WebSocketCloseCode(enum.IntEnum):
    """Close codes of RFC 6455 section 7.4.1 that this server sends."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011


@attrs.frozen(kw_only=True)
class ErrorReply:
    """What the I/O layer must do after a :class:`ProtocolError`.

    Attributes:
        frames: Engine.IO frames to deliver to the peer on the session's current
            transport before anything else (for example a CONNECT_ERROR packet, or
            the Engine.IO close packet on long-polling).
        close: ``None`` when the connection survives the error (only the offending
            request was refused); otherwise the reason the whole connection ends.
        http_status: The status of the HTTP response, when the input arrived in a
            long-polling request body.
        websocket_close_code: The RFC 6455 close code, when the input arrived on a
            WebSocket and ``close`` is set.
    """

    frames: tuple[Frame, ...] = ()
    close: DisconnectReason | None = DisconnectReason.PROTOCOL_ERROR
    http_status: int = 400
    websocket_close_code: int = WebSocketCloseCode.PROTOCOL_ERROR

    @property
    def fatal(self) -> bool:
        """Whether the connection must close."""
        return self.close is not None


NO_REPLY = ErrorReply(close=None)


class ProtocolError(Exception):
    """A violation of the Engine.IO, Socket.IO or WebSocket protocol.

    Abstract: raise :class:`LocalProtocolError` or :class:`RemoteProtocolError`.

    Attributes:
        reply: What the I/O layer must send and whether the connection closes.
    """

    _default_reply: ErrorReply = NO_REPLY

    def __init__(self, message: str, reply: ErrorReply | None = None) -> None:
        if type(self) is ProtocolError:
            raise TypeError(
                "ProtocolError is abstract: raise LocalProtocolError or RemoteProtocolError"
            )
        super().__init__(message)
        self.reply = self._default_reply if reply is None else reply

    @property
    def fatal(self) -> bool:
        """Whether the connection is over (every later call on it fails fast)."""
        return self.reply.fatal


class LocalProtocolError(ProtocolError):
    """Our side asked for something the protocol does not allow in the current state.

    For example emitting on a namespace the client never connected to, or sending on
    a closed connection. A bug in the caller, or a race it must handle (a broadcast
    arriving just after the client left); the connection itself is unaffected unless
    it was already closed.
    """


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow.

    ``reply`` says what to send back and whether the connection closes; after a
    fatal one, every later call on the connection raises :class:`LocalProtocolError`.
    Without an explicit reply the error is fatal with reason ``PROTOCOL_ERROR``.
    """

    _default_reply = ErrorReply()


def limit_exceeded(
    message: str,
    *,
    http_status: int = 400,
    websocket_close_code: int = WebSocketCloseCode.POLICY_VIOLATION,
) -> RemoteProtocolError:
    """A fatal :class:`RemoteProtocolError` for input over one of the configured limits."""
    return RemoteProtocolError(
        message,
        ErrorReply(
            close=DisconnectReason.LIMIT_EXCEEDED,
            http_status=http_status,
            websocket_close_code=websocket_close_code,
        ),
    )
