"""Socket.IO v5 on the wire, spoken by hand over a WebSocket (what the Kotlin SDK does):
the behaviours the official socket.io-protocol suite checks, on its application."""

from __future__ import annotations

import json

import pytest
import trio

from .._raw import RawWebSocket, open_websocket

SIO = "/socket.io/?EIO=4&transport=websocket"


async def _connect(ws: RawWebSocket, packet: str = "40") -> tuple[str, str]:
    opened = await ws.receive()
    assert isinstance(opened, str)
    assert opened.startswith("0")
    await ws.send_text(packet)
    accepted = await ws.receive_skipping_pings()
    auth = await ws.receive_skipping_pings()
    assert isinstance(accepted, str)
    assert isinstance(auth, str)
    return accepted, auth


async def test_connect_to_the_main_namespace(conformance_port: int) -> None:
    with trio.fail_after(5):
        async with open_websocket(conformance_port, SIO) as ws:
            accepted, auth = await _connect(ws)
    assert accepted.startswith("40")
    assert set(json.loads(accepted[2:])) == {"sid"}
    assert auth == '42["auth",{}]'


async def test_connect_with_a_payload(conformance_port: int) -> None:
    with trio.fail_after(5):
        async with open_websocket(conformance_port, SIO) as ws:
            _, auth = await _connect(ws, '40{"token":"123"}')
    assert auth == '42["auth",{"token":"123"}]'


async def test_connect_to_a_custom_namespace(conformance_port: int) -> None:
    with trio.fail_after(5):
        async with open_websocket(conformance_port, SIO) as ws:
            accepted, auth = await _connect(ws, '40/custom,{"token":"abc"}')
    assert accepted.startswith("40/custom,")
    assert set(json.loads(accepted[len("40/custom,") :])) == {"sid"}
    assert auth == '42/custom,["auth",{"token":"abc"}]'


async def test_an_unknown_namespace_is_refused(conformance_port: int) -> None:
    with trio.fail_after(5):
        async with open_websocket(conformance_port, SIO) as ws:
            await ws.receive()
            await ws.send_text("40/random")
            assert await ws.receive_skipping_pings() == '44/random,{"message":"Invalid namespace"}'


async def test_an_invalid_handshake_closes_the_connection(conformance_port: int) -> None:
    with trio.fail_after(5):
        async with open_websocket(conformance_port, SIO) as ws:
            await ws.receive()
            await ws.send_text("4abc")
            assert await ws.wait_closed() == 1002


async def test_a_connection_without_namespace_is_closed(conformance_port: int) -> None:
    with trio.fail_after(5):
        async with open_websocket(conformance_port, SIO) as ws:
            await ws.receive()
            started = trio.current_time()
            # Pings are answered, so only the connect timeout (1 s here) can end it.
            with pytest.raises(ConnectionError, match="closed by the server: 1000"):
                await _answer_pings_forever(ws)
            assert trio.current_time() - started >= 0.9


async def _answer_pings_forever(ws: RawWebSocket) -> None:
    while True:
        assert await ws.receive() == "2"
        await ws.send_text("3")


async def test_disconnecting_the_main_namespace_keeps_the_connection(conformance_port: int) -> None:
    with trio.fail_after(5):
        async with open_websocket(conformance_port, SIO) as ws:
            await _connect(ws)
            await ws.send_text("41")
            assert await ws.receive() == "2"  # the next ping still comes


async def test_leaving_a_custom_namespace_keeps_the_main_one(conformance_port: int) -> None:
    with trio.fail_after(5):
        async with open_websocket(conformance_port, SIO) as ws:
            await _connect(ws)
            await ws.send_text("40/custom")
            accepted = await ws.receive_skipping_pings()
            assert isinstance(accepted, str)
            assert accepted.startswith("40/custom,")
            assert await ws.receive_skipping_pings() == '42/custom,["auth",{}]'
            await ws.send_text("41/custom")
            await ws.send_text('42["message","message to main namespace"]')
            reply = await ws.receive_skipping_pings()
    assert reply == '42["message-back","message to main namespace"]'


async def test_events_and_acks(conformance_port: int) -> None:
    with trio.fail_after(5):
        async with open_websocket(conformance_port, SIO) as ws:
            await _connect(ws)
            await ws.send_text('42["message",1,"2",{"3":[true]}]')
            assert await ws.receive_skipping_pings() == '42["message-back",1,"2",{"3":[true]}]'
            await ws.send_text('42456["message-with-ack",1,"2",{"3":[false]}]')
            assert await ws.receive_skipping_pings() == '43456[1,"2",{"3":[false]}]'


async def test_binary_events_and_acks(conformance_port: int) -> None:
    placeholders = '{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}'
    with trio.fail_after(5):
        async with open_websocket(conformance_port, SIO) as ws:
            await _connect(ws)
            await ws.send_text(f'452-["message",{placeholders}]')
            await ws.send_binary(b"\x01\x02\x03")
            await ws.send_binary(b"\x04\x05\x06")
            got = [await ws.receive_skipping_pings() for _ in range(3)]
            assert got == [f'452-["message-back",{placeholders}]', b"\x01\x02\x03", b"\x04\x05\x06"]
            await ws.send_text(f'452-789["message-with-ack",{placeholders}]')
            await ws.send_binary(b"\x01\x02\x03")
            await ws.send_binary(b"\x04\x05\x06")
            got = [await ws.receive_skipping_pings() for _ in range(3)]
            assert got == [f"462-789[{placeholders}]", b"\x01\x02\x03", b"\x04\x05\x06"]


async def test_invalid_packets_close_the_connection(conformance_port: int) -> None:
    for packet in ("4abc", "42{}", '42abc["message-with-ack",1,"2",{"3":[false]}]'):
        with trio.fail_after(5):
            async with open_websocket(conformance_port, SIO) as ws:
                await _connect(ws)
                await ws.send_text(packet)
                assert await ws.wait_closed() == 1002, packet
