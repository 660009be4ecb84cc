"""Receiving events, wait_for, several namespaces, and how namespaces end (real sockets)."""

from __future__ import annotations

import pytest
import trio

from replyhq_trio.client import (
    ConnectionClosed,
    Disconnected,
    DisconnectReason,
    Received,
    open_client,
)

from ._fake_server import FakeServer, joined


def _names(events: list[Received]) -> list[str]:
    return [event.name for event in events]


async def test_receive_in_order_with_binary_attachments(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with joined(server) as (_, peer, (sock,)):
            await peer.send(
                '42/client,["connected",{"connection_id":"c1"}]',
                '452-/client,["file",{"_placeholder":true,"num":0},'
                '{"nested":[{"_placeholder":true,"num":1}]}]',
                b"\x00\xff",
                b"two",
                '450-/client,["no attachments",{"a":1}]',
                '42/client,["message:new",{"id":"m1"}]',
            )
            first = await sock.receive()
            assert (first.name, first.args, first.ack_id) == (
                "connected",
                ({"connection_id": "c1"},),
                None,
            )
            binary = await sock.receive()
            assert binary.name == "file"
            assert binary.args == (b"\x00\xff", {"nested": [b"two"]})
            assert (await sock.receive()).args == ({"a": 1},)
            assert (await sock.receive()).name == "message:new"


async def test_wait_for_keeps_the_events_it_skips(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with joined(server) as (_, peer, (sock,)):
            for name in ("a", "b", "target", "c", "d"):
                await peer.send(f'42/client,["{name}",1]')
            assert (await sock.wait_for("target")).name == "target"
            # Found among the kept ones, which stay in order around it.
            assert (await sock.wait_for("b")).name == "b"
            assert _names([await sock.receive(), await sock.receive()]) == ["a", "c"]
            with pytest.raises(trio.TooSlowError):
                await sock.wait_for("never", timeout=0.05)
            # What the timed-out wait read is kept too.
            assert (await sock.receive()).name == "d"


async def test_namespaces_are_independent(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with joined(server, "/client", "/admin") as (client, peer, (device, admin)):
            assert set(client.sockets) == {"/client", "/admin"}
            await peer.send('42/admin,["session:connect",{"d":1}]', '42/client,["connected"]')
            assert (await device.receive()).name == "connected"
            assert (await admin.receive()).name == "session:connect"

            async with trio.open_nursery() as nursery:

                async def serve() -> None:
                    # Ack ids count per namespace, from 0 each.
                    await peer.expect('42/client,0["x"]', '42/admin,0["y"]')
                    await peer.send('43/admin,0["for admin"]', '43/client,0["for client"]')

                nursery.start_soon(serve)
                results: dict[str, tuple[object, ...]] = {}

                async def call(name: str, sock_name: str) -> None:
                    sock = client.sockets[sock_name]
                    results[sock_name] = await sock.emit_with_ack(name)

                nursery.start_soon(call, "x", "/client")
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(call, "y", "/admin")
            assert results == {"/client": ("for client",), "/admin": ("for admin",)}


async def test_server_disconnect_ends_one_namespace(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with joined(server, "/client", "/admin") as (client, peer, (device, admin)):
            async with trio.open_nursery() as nursery:

                async def serve() -> None:
                    await peer.expect('42/client,0["message:send"]')
                    await peer.send('42/client,["before"]', "41/client,")

                nursery.start_soon(serve)
                # The pending ack fails as soon as the DISCONNECT arrives.
                with pytest.raises(Disconnected) as ended:
                    await device.emit_with_ack("message:send", timeout=60)
            assert not isinstance(ended.value, ConnectionClosed)
            assert ended.value.reason is DisconnectReason.SERVER_DISCONNECT
            assert ended.value.namespace == "/client"
            # What arrived before is still delivered, then the end.
            assert (await device.receive()).name == "before"
            with pytest.raises(Disconnected):
                await device.receive()
            with pytest.raises(Disconnected):
                await device.emit("after")
            assert not device.connected
            assert set(client.sockets) == {"/admin"}

            await admin.emit("still here")
            await peer.expect('42/admin,["still here"]')


async def test_client_disconnect(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with joined(server) as (client, peer, (sock,)):
            await sock.disconnect()
            await sock.disconnect()  # idempotent
            await peer.expect("41/client,")
            with pytest.raises(Disconnected) as ended:
                await sock.emit("x")
            assert ended.value.reason is DisconnectReason.CLIENT_DISCONNECT
            assert client.sockets == {}
            # An event already in flight for the left namespace is dropped (the pong
            # shows that the reader got past it).
            await peer.send('42/client,["late"]', "2")
            await peer.expect("3")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.accept_namespace)
                again = await client.connect("/client")
            await peer.send('42/client,["fresh"]')
            assert (await again.receive()).name == "fresh"


async def test_events_before_the_connect_reply_are_kept(server: FakeServer) -> None:
    # python-socketio sends what its connect handler emits before the CONNECT reply;
    # the reference client buffers such events, and so do we.
    with trio.fail_after(5):
        async with open_client(server.url) as client, trio.open_nursery() as nursery:
            peer = await server.accept()

            async def serve() -> None:
                await peer.expect("40/client,")
                await peer.send('42/client,["connected",1]', '40/client,{"sid":"s"}')
                await peer.send('42/client,["after",2]')

            nursery.start_soon(serve)
            sock = await client.connect("/client")
            assert [(e.name, e.args) for e in [await sock.receive(), await sock.receive()]] == [
                ("connected", (1,)),
                ("after", (2,)),
            ]


async def test_server_shutdown_is_an_event_and_its_delay_is_noted(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with joined(server) as (client, peer, (sock,)):
            assert client.shutdown_delay is None
            await peer.send(
                '42/client,["server:shutdown",{"message":"bye","reconnect_delay_ms":1500}]'
            )
            event = await sock.wait_for("server:shutdown")
            assert event.args == ({"message": "bye", "reconnect_delay_ms": 1500},)
            assert client.shutdown_delay == 1.5


async def test_events_before_a_close_are_delivered_first(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with joined(server) as (client, peer, (sock,)):
            await peer.send('42/client,["last words"]')
            await peer.close(1001, "going away")
            assert (await sock.receive()).name == "last words"
            with pytest.raises(ConnectionClosed) as closed:
                await sock.receive()
            assert (closed.value.reason, closed.value.code) == (DisconnectReason.SERVER_CLOSE, 1001)
            assert client.closed is not None
            assert client.closed.code == 1001


async def test_engineio_close_packet(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with joined(server) as (_, peer, (sock,)):
            await peer.send("1")
            with pytest.raises(ConnectionClosed) as closed:
                await sock.receive()
            assert closed.value.reason is DisconnectReason.SERVER_CLOSE


async def test_tcp_reset_is_a_transport_close(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with joined(server) as (_, peer, (sock,)):
            # Drop TCP with no close frame, as a crashed server would.
            # (trio-websocket has no public way to drop TCP, so the test reaches in.)
            stream = peer.ws._stream
            await stream.aclose()
            with pytest.raises(ConnectionClosed) as closed:
                await sock.receive()
            assert (closed.value.reason, closed.value.code) == (
                DisconnectReason.TRANSPORT_CLOSE,
                1006,
            )
