"""Engine.IO v4 packets and long-polling payloads."""

from ._packets import RECORD_SEPARATOR as RECORD_SEPARATOR
from ._packets import EnginePacket as EnginePacket
from ._packets import EnginePacketType as EnginePacketType
from ._packets import decode_packet as decode_packet
from ._packets import decode_payload as decode_payload
from ._packets import encode_packet as encode_packet
from ._packets import encode_payload as encode_payload

__all__ = [
    "RECORD_SEPARATOR",
    "EnginePacket",
    "EnginePacketType",
    "decode_packet",
    "decode_payload",
    "encode_packet",
    "encode_payload",
]
