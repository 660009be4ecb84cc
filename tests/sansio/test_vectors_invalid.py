"""Every input of protocol/vectors/invalid.json is refused with the error it names."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from replyhq_trio.sansio import ProtocolConfig, RemoteProtocolError
from replyhq_trio.sansio.engineio import decode_packet as decode_engine_packet
from replyhq_trio.sansio.engineio import decode_payload
from replyhq_trio.sansio.socketio import decode_packet, reconstruct_binary
from replyhq_trio.sansio.websocket import FrameDecoder, Role

from ._vectors import config, load, parts_to_bytes, text_input

VECTORS = load("invalid.json")["vectors"]


def _run(vector: dict[str, Any]) -> None:
    layer = vector["layer"]
    overrides: dict[str, Any] = dict(vector.get("config", {}))
    if layer == "engineio-packet":
        decode_engine_packet(vector["input"])
    elif layer == "engineio-payload":
        cfg = config(overrides)
        decode_payload(
            vector["input"], max_packets=cfg.max_payload_packets, max_payload=cfg.max_payload
        )
    elif layer == "socketio-packet":
        packet = decode_packet(text_input(vector["input"]), config(overrides))
        attachments = [base64.b64decode(a) for a in vector.get("attachments", [])]
        if "attachments" in vector:
            assert packet.attachments == len(attachments)
            reconstruct_binary(packet.data, attachments)
    elif layer == "websocket":
        max_size = config(overrides).max_payload
        decoder = FrameDecoder(role=Role(vector["role"]), max_message_size=max_size)
        decoder.receive_data(parts_to_bytes(vector["input"]))
        list(decoder.events())
    else:
        raise AssertionError(f"unknown layer {layer}")


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_is_refused(vector: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        _run(vector)
    reply = caught.value.reply
    expected = vector["error"]
    assert reply.close is not None
    assert reply.close.value == expected["close"]
    if "http_status" in expected:
        assert reply.http_status == expected["http_status"]
    if "websocket_close_code" in expected:
        assert reply.websocket_close_code == expected["websocket_close_code"]


def test_there_are_enough_invalid_vectors() -> None:
    # The contract promises at least 30; keep the count honest as vectors change.
    assert len(VECTORS) >= 30


def test_limits_are_checked_before_buffering_a_websocket_payload() -> None:
    decoder = FrameDecoder(role=Role.SERVER, max_message_size=ProtocolConfig().max_payload)
    # A header announcing 2 GB: refused from its 14 bytes, with nothing else buffered.
    decoder.receive_data(bytes.fromhex("82ff000000007fffffff") + b"mask")
    with pytest.raises(RemoteProtocolError) as caught:
        list(decoder.events())
    assert caught.value.reply.websocket_close_code == 1009
