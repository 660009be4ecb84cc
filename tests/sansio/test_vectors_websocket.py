"""WebSocket framing against protocol/vectors/websocket-frames.json."""

from __future__ import annotations

from typing import Any

import pytest

from replyhq_trio.sansio import RemoteProtocolError
from replyhq_trio.sansio.websocket import (
    CloseReceived,
    FrameDecoder,
    Opcode,
    PingReceived,
    PongReceived,
    Role,
    WebSocketEvent,
    accept_key,
    encode_binary,
    encode_close,
    encode_frame,
    encode_ping,
    encode_pong,
    encode_text,
)

from ._vectors import load, parts_to_bytes

DECODE = load("websocket-frames.json")["decode"]
ENCODE = load("websocket-frames.json")["encode"]


def _event(value: dict[str, Any]) -> WebSocketEvent:
    if "text" in value:
        text: str = value["text"]
        return text
    if "binary" in value:
        return parts_to_bytes(value["binary"])
    if "ping" in value:
        return PingReceived(bytes.fromhex(value["ping"]))
    if "pong" in value:
        return PongReceived(bytes.fromhex(value["pong"]))
    return CloseReceived(value["close"]["code"], value["close"]["reason"])


@pytest.mark.parametrize("vector", DECODE, ids=[v["name"] for v in DECODE])
def test_decodes_in_one_read(vector: dict[str, Any]) -> None:
    decoder = FrameDecoder(role=Role(vector["role"]))
    decoder.receive_data(parts_to_bytes(vector["bytes"]))
    assert list(decoder.events()) == [_event(e) for e in vector["events"]]


@pytest.mark.parametrize(
    "vector", [v for v in DECODE if len(parts_to_bytes(v["bytes"])) < 4096], ids=lambda v: v["name"]
)
def test_decodes_byte_by_byte(vector: dict[str, Any]) -> None:
    decoder = FrameDecoder(role=Role(vector["role"]))
    events: list[WebSocketEvent] = []
    for byte in parts_to_bytes(vector["bytes"]):
        decoder.receive_data(bytes([byte]))
        events.extend(decoder.events())
    assert events == [_event(e) for e in vector["events"]]


@pytest.mark.parametrize("vector", ENCODE, ids=[v["name"] for v in ENCODE])
def test_encodes(vector: dict[str, Any]) -> None:
    payload = parts_to_bytes(vector["payload"])
    mask = bytes.fromhex(vector["mask"]) if "mask" in vector else None
    opcode = Opcode[vector["opcode"].upper()]
    expected = parts_to_bytes(vector["bytes"])
    assert encode_frame(opcode, payload, mask=mask) == expected
    if mask is None:
        if opcode is Opcode.TEXT:
            shortcut = encode_text(payload.decode())
        elif opcode is Opcode.BINARY:
            shortcut = encode_binary(payload)
        elif opcode is Opcode.PING:
            shortcut = encode_ping(payload)
        elif opcode is Opcode.PONG:
            shortcut = encode_pong(payload)
        else:
            shortcut = encode_close(int.from_bytes(payload[:2], "big"))
        assert shortcut == expected


def test_stopping_early_loses_no_frame() -> None:
    decoder = FrameDecoder(role=Role.CLIENT)
    decoder.receive_data(encode_text("a") + encode_text("b") + encode_text("c"))
    events = decoder.events()
    assert next(events) == "a"
    del events
    decoder.receive_data(encode_text("d"))
    assert list(decoder.events()) == ["b", "c", "d"]


def test_masked_frames_round_trip_through_a_server_decoder() -> None:
    decoder = FrameDecoder(role=Role.SERVER)
    payload = bytes(range(256)) * 300
    decoder.receive_data(encode_frame(Opcode.BINARY, payload, mask=b"\x9a\x01\xfe\x33"))
    assert list(decoder.events()) == [payload]


def test_a_failed_decoder_keeps_failing() -> None:
    decoder = FrameDecoder(role=Role.SERVER)
    decoder.receive_data(b"\x81\x05Hello")  # unmasked: refused
    with pytest.raises(RemoteProtocolError) as first:
        list(decoder.events())
    decoder.receive_data(encode_frame(Opcode.TEXT, b"ok", mask=b"abcd"))
    with pytest.raises(RemoteProtocolError) as again:
        list(decoder.events())
    assert again.value is first.value


def test_close_reason_is_truncated_to_fit_a_control_frame() -> None:
    frame = encode_close(1001, "x" * 500)
    decoder = FrameDecoder(role=Role.CLIENT)
    decoder.receive_data(frame)
    assert list(decoder.events()) == [CloseReceived(1001, "x" * 123)]


def test_accept_key_of_rfc_6455_section_1_3() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
