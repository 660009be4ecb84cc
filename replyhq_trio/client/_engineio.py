"""The client's side of Engine.IO v4 over a WebSocket: the URL and the open packet.

The rest of Engine.IO on a WebSocket is three rules the reader applies inline:
answer each ping ``2`` with ``3`` at once, prefix Socket.IO packets with ``4``,
and send binary attachments as binary messages (PROTOCOL.md sections 1-2).
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Protocol

import orjson

from ..sansio import RemoteProtocolError

__all__ = ["DEFAULT_PATH", "MessageTransport", "engineio_url", "parse_open_packet"]

#: Where ReplyHQ serves Engine.IO (PROTOCOL.md section 1); python-socketio uses "/socket.io".
DEFAULT_PATH = "/v1/socket.io"

_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


class MessageTransport(Protocol):
    """A message-oriented connection: what the client needs of a WebSocket.

    ``trio_websocket.WebSocketConnection`` is one; a test may pass an in-memory fake.
    When the connection ends, both methods raise ``trio_websocket.ConnectionClosed``.
    """

    async def get_message(self) -> str | bytes: ...

    async def send_message(self, message: str | bytes) -> None: ...


def engineio_url(url: str, path: str = DEFAULT_PATH) -> str:
    """The WebSocket URL of the Engine.IO endpoint of the server at ``url``.

    ``url`` is the server's origin (``http``, ``https``, ``ws`` or ``wss``); its
    query string, if any, is kept. The trailing slash after ``path`` matters to
    the reference servers.

    Raises:
        ValueError: an unknown scheme, or ``url`` has a path (the namespace is not
            part of the URL here: pass it to :meth:`Client.connect`).
    """
    parts = urllib.parse.urlsplit(url)
    scheme = _SCHEMES.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"unsupported URL scheme in {url!r}")
    if parts.path not in ("", "/"):
        raise ValueError(f"{url!r} has a path; give the namespace to Client.connect")
    query = "EIO=4&transport=websocket"
    if parts.query:
        query += "&" + parts.query
    return f"{scheme}://{parts.netloc}{path.rstrip('/')}/?{query}"


def parse_open_packet(frame: str | bytes) -> dict[str, Any]:
    """Parse the Engine.IO open packet, the first message of a session.

    Raises:
        RemoteProtocolError: not an open packet, or ``sid``, ``pingInterval`` or
            ``pingTimeout`` missing or of the wrong type.
    """
    if not isinstance(frame, str) or frame[:1] != "0":
        raise RemoteProtocolError(f"expected the Engine.IO open packet, got {frame[:32]!r}")
    try:
        packet = orjson.loads(frame[1:])
    except orjson.JSONDecodeError as exc:
        raise RemoteProtocolError(f"open packet is not JSON: {exc}") from None
    if not isinstance(packet, dict):
        raise RemoteProtocolError("open packet is not an object")
    if not isinstance(packet.get("sid"), str):
        raise RemoteProtocolError("open packet without a sid")
    for key in ("pingInterval", "pingTimeout"):
        value = packet.get(key)
        if type(value) is not int or value <= 0:
            raise RemoteProtocolError(f"open packet without a positive integer {key}")
    return packet
