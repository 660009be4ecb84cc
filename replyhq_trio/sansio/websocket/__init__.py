"""WebSocket framing (RFC 6455), server and client side."""

from ._frames import CloseReceived as CloseReceived
from ._frames import FrameDecoder as FrameDecoder
from ._frames import Opcode as Opcode
from ._frames import PingReceived as PingReceived
from ._frames import PongReceived as PongReceived
from ._frames import Role as Role
from ._frames import WebSocketEvent as WebSocketEvent
from ._frames import accept_key as accept_key
from ._frames import encode_binary as encode_binary
from ._frames import encode_close as encode_close
from ._frames import encode_frame as encode_frame
from ._frames import encode_ping as encode_ping
from ._frames import encode_pong as encode_pong
from ._frames import encode_text as encode_text
from ._frames import encode_text_utf8 as encode_text_utf8

__all__ = [
    "CloseReceived",
    "FrameDecoder",
    "Opcode",
    "PingReceived",
    "PongReceived",
    "Role",
    "WebSocketEvent",
    "accept_key",
    "encode_binary",
    "encode_close",
    "encode_frame",
    "encode_ping",
    "encode_pong",
    "encode_text",
    "encode_text_utf8",
]
