"""An async Socket.IO v4 client for Trio, over trio-websocket (WebSocket transport only).

It is what the tests, the benchmarks and the shutdown drill use to talk to the
server. Socket.IO packets go through the sans-IO core's codecs
(:mod:`replyhq_trio.sansio.socketio`); the little Engine.IO a WebSocket client needs
is done here. ::

    async with open_client("http://127.0.0.1:8080") as client:
        sock = await client.connect("/client", auth={"app_id": ..., "device_id": ...})
        reply = await sock.emit_with_ack("message:send", {...}, timeout=5.0)
        event = await sock.wait_for("message:new", timeout=5.0)
"""

from ._connection import Client as Client
from ._engineio import DEFAULT_PATH as DEFAULT_PATH
from ._engineio import MessageTransport as MessageTransport
from ._engineio import engineio_url as engineio_url
from ._errors import AckTimeout as AckTimeout
from ._errors import ClientError as ClientError
from ._errors import ConnectFailed as ConnectFailed
from ._errors import ConnectionClosed as ConnectionClosed
from ._errors import ConnectRefused as ConnectRefused
from ._errors import Disconnected as Disconnected
from ._errors import DisconnectReason as DisconnectReason
from ._open import open_client as open_client
from ._open import open_client_on as open_client_on
from ._reconnect import Backoff as Backoff
from ._reconnect import run_with_reconnect as run_with_reconnect
from ._socket import Received as Received
from ._socket import Socket as Socket

__all__ = [
    "DEFAULT_PATH",
    "AckTimeout",
    "Backoff",
    "Client",
    "ClientError",
    "ConnectFailed",
    "ConnectRefused",
    "ConnectionClosed",
    "DisconnectReason",
    "Disconnected",
    "MessageTransport",
    "Received",
    "Socket",
    "engineio_url",
    "open_client",
    "open_client_on",
    "run_with_reconnect",
]
