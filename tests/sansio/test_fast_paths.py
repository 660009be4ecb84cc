"""The hot paths' shortcuts against the general paths they skip.

Each shortcut must be byte for byte (or event for event) what the general path gives:
the ack's WebSocket frame built in one step (``encode_ack_websocket``) against
``encode_message`` + ``encode_text``, and the decoder's inline path for small masked
text frames against its general frame parser (the same decoder with the inline path
turned off).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replyhq_trio.sansio import (
    CloseConnection,
    ConnectAccepted,
    LocalProtocolError,
    ProtocolConfig,
    RemoteProtocolError,
    ServerConnection,
    Transport,
)
from replyhq_trio.sansio._connection import encode_ack_websocket
from replyhq_trio.sansio.socketio import SocketPacketType
from replyhq_trio.sansio.socketio._packets import encode_message
from replyhq_trio.sansio.websocket import (
    FrameDecoder,
    Opcode,
    Role,
    encode_binary,
    encode_frame,
    encode_text,
    encode_text_utf8,
)
from replyhq_trio.sansio.websocket._frames import _apply_mask

from .strategies import json_values, json_values_with_bytes, namespaces

RELAXED = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])

ack_ids = st.integers(min_value=0, max_value=10**15)
ack_args = st.lists(json_values_with_bytes(), max_size=4).map(tuple)


def _general_ack(namespace: str, ack_id: int, args: tuple[Any, ...]) -> bytes:
    frames = encode_message(SocketPacketType.ACK, namespace, args, ack_id)
    return b"".join(encode_text(f) if isinstance(f, str) else encode_binary(f) for f in frames)


def _has_bytes(value: Any) -> bool:
    if isinstance(value, bytes):
        return True
    if isinstance(value, list | tuple):
        return any(_has_bytes(v) for v in value)
    if isinstance(value, dict):
        return any(_has_bytes(v) for v in value.values())
    return False


# --- the ack's frame in one step ------------------------------------------------------


@RELAXED
@given(namespaces, ack_ids, ack_args)
def test_ack_frame_is_the_general_paths_bytes(
    namespace: str, ack_id: int, args: tuple[Any, ...]
) -> None:
    fast = encode_ack_websocket(namespace, ack_id, args)
    if _has_bytes(args):
        assert fast is None  # attachments: the general path's job
    else:
        assert fast == _general_ack(namespace, ack_id, args)


@pytest.mark.parametrize(
    ("namespace", "ack_id", "args", "wire"),
    [
        ("/", 0, (), b"\x81\x05430[]"),
        ("/", 12, ({"n": 1, "text": "hello"},), b'\x81\x1c4312[{"n":1,"text":"hello"}]'),
        ("/chat", 7, (True,), b"\x81\x0f43/chat,7[true]"),
        ("/", 1, ("é",), b'\x81\x09431["\xc3\xa9"]'),
        # 126 bytes and more: the 16-bit length form.
        ("/", 5, ("x" * 200,), b"\x81\x7e\x00\xcf435[" + b'"' + b"x" * 200 + b'"]'),
    ],
)
def test_ack_frame_vectors(namespace: str, ack_id: int, args: tuple[Any, ...], wire: bytes) -> None:
    assert encode_ack_websocket(namespace, ack_id, args) == wire
    assert _general_ack(namespace, ack_id, args) == wire


def test_ack_frame_of_a_value_json_cannot_carry_is_left_to_the_general_path() -> None:
    assert encode_ack_websocket("/", 1, (object(),)) is None
    with pytest.raises(LocalProtocolError):
        _general_ack("/", 1, (object(),))


def _connection(transport: Transport = Transport.WEBSOCKET) -> ServerConnection:
    conn = ServerConnection(sid="s", transport=transport, config=ProtocolConfig(), now=0)
    conn.frames_to_send()  # the open packet
    conn.receive_frame("40", 0)
    conn.send(ConnectAccepted(namespace="/", sid="x"))
    return conn


@RELAXED
@given(ack_ids, st.lists(json_values(), max_size=4).map(tuple))
def test_send_ack_websocket_is_send_ack_framed(ack_id: int, args: tuple[Any, ...]) -> None:
    fast = _connection().send_ack_websocket("/", ack_id, args)
    frames = _connection().send_ack("/", ack_id, args)
    assert fast == b"".join(encode_text(f) for f in frames if isinstance(f, str))


def test_send_ack_websocket_defers_to_send_ack_when_it_must() -> None:
    conn = _connection()
    # A ping fell due and waits in the outbox: send_ack puts it first.
    conn.handle_timer(10**6)
    assert conn.send_ack_websocket("/", 1, ()) is None
    assert conn.send_ack("/", 1, ()) == ["2", "431[]"]
    # A namespace not joined: send_ack raises.
    assert conn.send_ack_websocket("/other", 1, ()) is None
    with pytest.raises(LocalProtocolError):
        conn.send_ack("/other", 1, ())
    # Binary data: attachments.
    assert conn.send_ack_websocket("/", 2, (b"\x00",)) is None
    # A closed connection: send_ack raises.
    conn.send(CloseConnection())
    assert conn.send_ack_websocket("/", 3, ()) is None
    with pytest.raises(LocalProtocolError):
        conn.send_ack("/", 3, ())


def test_encode_text_utf8_is_encode_text() -> None:
    for text in ("", "a", "é" * 62, "é" * 63, "x" * 125, "x" * 126, "x" * 70_000):
        assert encode_text_utf8(text.encode()) == encode_text(text)


# --- the decoder's inline path --------------------------------------------------------


def _outcome(decoder: FrameDecoder, reads: list[bytes], stop_after: int | None) -> list[Any]:
    # Everything the decoder yields, read by read, and the error it ends with. With
    # ``stop_after``, each drain stops after that many events (the session stops early
    # when it must), so the rest comes out of the next call.
    out: list[Any] = []
    try:
        for data in [*reads, b""]:
            decoder.receive_data(data)
            while True:
                for taken, event in enumerate(decoder.events(), 1):
                    out.append(event)
                    if stop_after is not None and taken >= stop_after:
                        break
                else:
                    break
    except RemoteProtocolError as exc:
        out.append(("error", str(exc), exc.reply.websocket_close_code))
    return out


def _general_decoder(max_message_size: int) -> FrameDecoder:
    decoder = FrameDecoder(role=Role.SERVER, max_message_size=max_message_size)
    decoder._small_limit = -1  # the inline path off: every frame takes the general one
    return decoder


masks = st.binary(min_size=4, max_size=4)
_frames = st.one_of(
    # The inline path's frame, with text of any length around the 7-bit limit.
    st.builds(
        lambda text, mask: encode_frame(Opcode.TEXT, text.encode(), mask=mask),
        st.text(max_size=70),
        masks,
    ),
    st.builds(
        lambda n, mask: encode_frame(Opcode.TEXT, b"x" * n, mask=mask),
        st.integers(min_value=118, max_value=130),
        masks,
    ),
    # Invalid UTF-8, unmasked, binary, control and fragmented frames.
    st.builds(
        lambda data, mask: encode_frame(Opcode.TEXT, data, mask=mask),
        st.binary(max_size=20),
        masks,
    ),
    st.builds(lambda text: encode_frame(Opcode.TEXT, text.encode()), st.text(max_size=10)),
    st.builds(
        lambda data, mask: encode_frame(Opcode.BINARY, data, mask=mask),
        st.binary(max_size=20),
        masks,
    ),
    st.builds(lambda mask: encode_frame(Opcode.PING, b"p", mask=mask), masks),
    st.builds(
        lambda text, mask, fin: encode_frame(Opcode.TEXT, text.encode(), fin=fin, mask=mask),
        st.text(max_size=10),
        masks,
        st.booleans(),
    ),
    st.builds(
        lambda text, mask, fin: encode_frame(
            Opcode.CONTINUATION, text.encode(), fin=fin, mask=mask
        ),
        st.text(max_size=10),
        masks,
        st.booleans(),
    ),
    st.binary(min_size=1, max_size=8),  # noise
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_frames, min_size=1, max_size=8),
    st.data(),
    st.sampled_from([1_000_000, 125, 60, 0]),
    st.none() | st.integers(min_value=1, max_value=3),
)
def test_inline_path_decodes_as_the_general_path(
    frames: list[bytes], data: st.DataObject, max_message_size: int, stop_after: int | None
) -> None:
    wire = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=4)))
    reads = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    fast = _outcome(
        FrameDecoder(role=Role.SERVER, max_message_size=max_message_size), reads, stop_after
    )
    general = _outcome(_general_decoder(max_message_size), reads, stop_after)
    assert fast == general


@pytest.mark.parametrize(
    "wire",
    [
        encode_frame(Opcode.TEXT, b'42["echo",{"n":1}]', mask=b"abcd"),
        encode_frame(Opcode.TEXT, b"", mask=b"abcd"),
        encode_frame(Opcode.TEXT, b"y" * 125, mask=b"\x00\xff\x10\x01"),
        encode_frame(Opcode.TEXT, b"y" * 126, mask=b"\x00\xff\x10\x01"),
        encode_frame(Opcode.TEXT, b"\xff", mask=b"abcd"),  # not UTF-8
        encode_frame(Opcode.TEXT, b"ab", mask=None),  # unmasked from a client
        # A text frame inside a fragmented message.
        encode_frame(Opcode.TEXT, b"a", fin=False, mask=b"abcd")
        + encode_frame(Opcode.TEXT, b"b", mask=b"abcd"),
        encode_frame(Opcode.TEXT, b"1", mask=b"abcd") * 5,
    ],
)
@pytest.mark.parametrize("max_message_size", [1_000_000, 125, 1])
def test_inline_path_vectors(wire: bytes, max_message_size: int) -> None:
    fast = _outcome(FrameDecoder(role=Role.SERVER, max_message_size=max_message_size), [wire], None)
    general = _outcome(_general_decoder(max_message_size), [wire], None)
    assert fast == general
    assert fast  # every vector yields something (an event or an error)


@pytest.mark.parametrize(
    "size", [1, 3, 4, 65535, 65536, 65537, 65539, 131072, 200_003, 262_144, 1_000_000]
)
def test_large_payloads_unmask_in_chunks_as_one_xor(size: int) -> None:
    # The chunked path (over 64 KiB) against the definition of RFC 6455 section 5.3.
    payload = bytes((index * 7 + size) & 0xFF for index in range(size))
    mask = bytes([0x9C, 0x01, 0xFE, 0x37])
    expected = bytes(byte ^ mask[index & 3] for index, byte in enumerate(payload))
    assert _apply_mask(payload, mask) == expected
    assert _apply_mask(memoryview(payload), memoryview(mask)) == expected
