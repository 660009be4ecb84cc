"""Properties that must hold for every input, checked with Hypothesis.

Round trips: decode(encode(x)) == x for every codec. Robustness: no input, however
malformed, raises anything but a ProtocolError.
"""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replyhq_trio.sansio import (
    ConnectAccepted,
    ProtocolConfig,
    ProtocolError,
    ServerConnection,
    Transport,
)
from replyhq_trio.sansio.engineio import (
    EnginePacket,
    EnginePacketType,
    decode_packet,
    decode_payload,
    encode_packet,
    encode_payload,
)
from replyhq_trio.sansio.socketio import SocketPacket, SocketPacketType, reconstruct_binary
from replyhq_trio.sansio.socketio import decode_packet as decode_socket_packet
from replyhq_trio.sansio.socketio import encode_packet as encode_socket_packet
from replyhq_trio.sansio.websocket import FrameDecoder, Opcode, Role, encode_frame

from ._vectors import load
from .strategies import socket_packets

CONFIG = ProtocolConfig()
# Round trips are about the codec, not the limits (which have their own vectors).
UNLIMITED = ProtocolConfig(max_attachments=10_000, max_json_depth=10_000)
RELAXED = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])


def _normalise(value: Any) -> Any:
    # Encoding turns tuples into arrays and bytes-likes into bytes; compare on that.
    if isinstance(value, tuple | list):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return value


@RELAXED
@given(socket_packets())
def test_socketio_packets_round_trip(packet: SocketPacket) -> None:
    text, *attachments = encode_socket_packet(packet)
    assert isinstance(text, str)
    decoded = decode_socket_packet(text, UNLIMITED)
    assert decoded.namespace == packet.namespace
    assert decoded.id == packet.id
    assert decoded.attachments == len(attachments)
    data = decoded.data
    if decoded.type in (SocketPacketType.BINARY_EVENT, SocketPacketType.BINARY_ACK):
        data = reconstruct_binary(data, [a for a in attachments if isinstance(a, bytes)])
    assert _normalise(data) == _normalise(packet.data)


@given(
    st.sampled_from(list(EnginePacketType)),
    st.text(),
)
def test_engineio_text_packets_round_trip(kind: EnginePacketType, data: str) -> None:
    packet = EnginePacket(type=kind, data=data)
    assert decode_packet(encode_packet(packet)) == packet


@given(st.binary())
def test_engineio_binary_packets_round_trip(data: bytes) -> None:
    packet = EnginePacket(type=EnginePacketType.MESSAGE, data=data)
    assert decode_packet(encode_packet(packet)) == packet


_payload_frames = st.lists(
    st.builds(
        lambda kind, text: str(kind) + text,
        st.integers(min_value=0, max_value=6),
        st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x1e")),
    )
    | st.binary(max_size=64),
    min_size=1,
    max_size=20,
)


@given(_payload_frames)
def test_payloads_round_trip(frames: list[str | bytes]) -> None:
    body = encode_payload(frames)
    assert decode_payload(body, max_packets=1000, max_payload=10**9) == frames


@RELAXED
@given(
    st.binary(max_size=70_000),
    st.binary(min_size=4, max_size=4),
    st.integers(min_value=1, max_value=8),
    st.sampled_from([Opcode.TEXT, Opcode.BINARY]),
)
def test_websocket_fragmented_masked_messages_reassemble(
    payload: bytes, mask: bytes, pieces: int, opcode: Opcode
) -> None:
    if opcode is Opcode.TEXT:
        payload = payload.decode("latin-1").encode()  # any valid UTF-8
    step = max(1, len(payload) // pieces)
    chunks = [payload[i : i + step] for i in range(0, len(payload), step)] or [b""]
    wire = b""
    for index, chunk in enumerate(chunks):
        first = index == 0
        last = index == len(chunks) - 1
        wire += encode_frame(opcode if first else Opcode.CONTINUATION, chunk, fin=last, mask=mask)
        if not last:
            wire += encode_frame(Opcode.PING, b"p", mask=mask)
    decoder = FrameDecoder(role=Role.SERVER, max_message_size=10**6)
    decoder.receive_data(wire)
    events = list(decoder.events())
    message = events[-1]
    assert message == (payload.decode() if opcode is Opcode.TEXT else payload)
    assert len(events) == len(chunks)  # the pings, then the message


# --- robustness ----------------------------------------------------------------------


def _connected() -> ServerConnection:
    conn = ServerConnection(sid="s", transport=Transport.POLLING, config=CONFIG, now=0)
    conn.receive_frame("40", 0)
    conn.send(ConnectAccepted(namespace="/", sid="x"))
    conn.receive_frame("40/client,", 0)
    conn.send(ConnectAccepted(namespace="/client", sid="y"))
    return conn


_SEEDS = [v["text"] for v in load("socketio-packets.json")["vectors"]]


def _mutations() -> st.SearchStrategy[str]:
    @st.composite
    def mutate(draw: st.DrawFn) -> str:
        text: str = "4" + draw(st.sampled_from(_SEEDS))
        for _ in range(draw(st.integers(min_value=1, max_value=4))):
            position = draw(st.integers(min_value=0, max_value=len(text)))
            action = draw(st.sampled_from(["insert", "delete", "replace"]))
            char: str = draw(st.characters(codec="utf-8"))
            if action == "insert":
                text = text[:position] + char + text[position:]
            elif action == "delete":
                text = text[:position] + text[position + 1 :]
            else:
                text = text[:position] + char + text[position + 1 :]
        return text

    return mutate()


_any_frame = st.text() | st.binary() | _mutations()


@RELAXED
@given(st.lists(_any_frame, min_size=1, max_size=8))
def test_any_frames_yield_events_or_protocol_errors(frames: list[str | bytes]) -> None:
    conn = _connected()
    for frame in frames:
        try:
            conn.receive_frame(frame, 1.0)
        except ProtocolError:
            if conn.closed:
                return


@RELAXED
@given(st.text() | _mutations())
def test_any_text_decodes_or_raises_a_protocol_error(text: str) -> None:
    with contextlib.suppress(ProtocolError):
        decode_socket_packet(text, CONFIG, 1 if text.startswith("4") else 0)


@RELAXED
@given(st.text())
def test_any_body_splits_or_raises_a_protocol_error(body: str) -> None:
    with contextlib.suppress(ProtocolError):
        for frame in decode_payload(body, max_packets=100, max_payload=10_000):
            decode_packet(frame)


@RELAXED
@given(st.lists(st.binary(max_size=40), max_size=6), st.sampled_from(list(Role)))
def test_any_bytes_decode_or_raise_a_protocol_error(reads: list[bytes], role: Role) -> None:
    decoder = FrameDecoder(role=role, max_message_size=1000)
    with contextlib.suppress(ProtocolError):
        for data in reads:
            decoder.receive_data(data)
            list(decoder.events())
