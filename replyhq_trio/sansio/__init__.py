"""The sans-IO protocol core: Engine.IO v4, Socket.IO v5 and WebSocket framing.

Pure: this package imports nothing that does I/O or reads a clock, and nothing
else of replyhq_trio (``tests/sansio/test_purity.py`` enforces it). Bytes, frames
and the current time go in; events and frames come out.
"""

from ._config import ProtocolConfig as ProtocolConfig
from ._connection import PreparedEmit as PreparedEmit
from ._connection import ServerConnection as ServerConnection
from ._connection import prepare_emit as prepare_emit
from ._engine import EngineConnection as EngineConnection
from ._errors import DisconnectReason as DisconnectReason
from ._errors import ErrorReply as ErrorReply
from ._errors import LocalProtocolError as LocalProtocolError
from ._errors import ProtocolError as ProtocolError
from ._errors import RemoteProtocolError as RemoteProtocolError
from ._errors import WebSocketCloseCode as WebSocketCloseCode
from ._errors import limit_exceeded as limit_exceeded
from ._events import Ack as Ack
from ._events import CloseConnection as CloseConnection
from ._events import Connect as Connect
from ._events import ConnectAccepted as ConnectAccepted
from ._events import ConnectionClosed as ConnectionClosed
from ._events import ConnectRejected as ConnectRejected
from ._events import Disconnect as Disconnect
from ._events import Emit as Emit
from ._events import Event as Event
from ._events import Message as Message
from ._events import ack_for as ack_for
from ._state import AttachmentState as AttachmentState
from ._state import EngineState as EngineState
from ._state import HeartbeatState as HeartbeatState
from ._state import NamespaceState as NamespaceState
from ._state import Transport as Transport
from ._state import UpgradeState as UpgradeState
from ._types import Frame as Frame
from .engineio import decode_payload as decode_payload
from .engineio import encode_payload as encode_payload

__all__ = [
    "Ack",
    "AttachmentState",
    "CloseConnection",
    "Connect",
    "ConnectAccepted",
    "ConnectRejected",
    "ConnectionClosed",
    "Disconnect",
    "DisconnectReason",
    "Emit",
    "EngineConnection",
    "EngineState",
    "ErrorReply",
    "Event",
    "Frame",
    "HeartbeatState",
    "LocalProtocolError",
    "Message",
    "NamespaceState",
    "PreparedEmit",
    "ProtocolConfig",
    "ProtocolError",
    "RemoteProtocolError",
    "ServerConnection",
    "Transport",
    "UpgradeState",
    "WebSocketCloseCode",
    "ack_for",
    "decode_payload",
    "encode_payload",
    "limit_exceeded",
    "prepare_emit",
]
