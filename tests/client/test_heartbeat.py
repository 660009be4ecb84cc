"""Pings, the ping timeout, backpressure and interrupted sends.

The timing tests run over an in-memory transport on the autojump clock; two
real-socket tests check the same rules end to end with short real intervals.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from replyhq_trio.client import ConnectionClosed, DisconnectReason, open_client, open_client_on

from ._fake_server import OPEN_PACKET, FakeServer, joined
from ._memory import MemoryTransport


async def test_ping_is_answered_at_once(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with joined(server) as (_, peer, (sock,)):
            await peer.send("2")
            await peer.expect("3")
            # Also between a binary packet's text and its attachments.
            await sock.emit("upload", b"x")
            await peer.expect('451-/client,["upload",{"_placeholder":true,"num":0}]', b"x")
            await peer.send("2")
            await peer.expect("3")


async def test_ping_timeout_over_real_sockets(server: FakeServer) -> None:
    server.open_packet = {**OPEN_PACKET, "pingInterval": 100, "pingTimeout": 50}
    with trio.fail_after(5):
        async with open_client(server.url) as client:
            peer = await server.accept()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.accept_namespace)
                sock = await client.connect("/client")
            with pytest.raises(ConnectionClosed) as closed:
                await sock.receive()
            assert closed.value.reason is DisconnectReason.PING_TIMEOUT
        assert await peer.close_code() == 1000


async def _connect(transport: MemoryTransport) -> None:
    # Plays the server's side of joining /client.
    assert await transport.server_recv() == "40/client,"
    transport.server_send('40/client,{"sid":"s"}')


async def test_pings_keep_the_connection_alive(autojump_clock: trio.testing.MockClock) -> None:
    transport = MemoryTransport()
    with trio.fail_after(1000):
        async with open_client_on(transport) as client, trio.open_nursery() as nursery:
            nursery.start_soon(_connect, transport)
            sock = await client.connect("/client")
            for _ in range(10):
                await trio.sleep(25)  # pingInterval; the window is 25 + 20 s
                transport.server_send("2")
                assert await transport.server_recv() == "3"
            last_ping = trio.current_time()
            with pytest.raises(ConnectionClosed) as closed:
                await sock.receive()
            assert closed.value.reason is DisconnectReason.PING_TIMEOUT
            assert trio.current_time() - last_ping == pytest.approx(45)
            assert client.closed is not None


async def test_a_full_queue_holds_the_reader(autojump_clock: trio.testing.MockClock) -> None:
    transport = MemoryTransport()
    with trio.fail_after(10):
        async with open_client_on(transport, queue_size=2) as client, trio.open_nursery() as n:
            n.start_soon(_connect, transport)
            sock = await client.connect("/client")
            transport.server_send(*(f'42/client,["e{i}"]' for i in range(3)), "2")
            await trio.testing.wait_all_tasks_blocked()
            # Two events queued, the third waits with the reader: the ping is unread.
            assert transport.pending_from_client() == []
            assert (await sock.receive()).name == "e0"
            await trio.testing.wait_all_tasks_blocked()
            assert transport.pending_from_client() == ["3"]
            assert _names(await sock.receive(), await sock.receive()) == ["e1", "e2"]


def _names(*events: object) -> list[str]:
    return [getattr(event, "name", "") for event in events]


async def test_an_interrupted_send_ends_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = MemoryTransport(client_buffer=0)  # every client frame waits for the test
    with trio.fail_after(10):
        async with open_client_on(transport) as client, trio.open_nursery() as nursery:
            nursery.start_soon(_connect, transport)
            sock = await client.connect("/client")
            with trio.move_on_after(1) as scope:
                async with trio.open_nursery() as sending:
                    sending.start_soon(sock.emit, "upload", b"a", b"b")
                    assert await transport.server_recv() == (
                        '452-/client,["upload",{"_placeholder":true,"num":0},'
                        '{"_placeholder":true,"num":1}]'
                    )
                    assert await transport.server_recv() == b"a"
                    # The last attachment is never read, and the emit is cancelled.
            assert scope.cancelled_caught
            # Half a packet went out: nothing may follow it on this connection.
            assert client.closed is not None
            assert client.closed.reason is DisconnectReason.TRANSPORT_ERROR
            with pytest.raises(ConnectionClosed):
                await sock.emit("x")


async def test_a_cancelled_wait_for_the_send_lock_sends_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = MemoryTransport(client_buffer=0)
    with trio.fail_after(10):
        async with open_client_on(transport) as client, trio.open_nursery() as nursery:
            nursery.start_soon(_connect, transport)
            sock = await client.connect("/client")
            nursery.start_soon(sock.emit, "first")
            await trio.testing.wait_all_tasks_blocked()  # "first" holds the lock
            with trio.move_on_after(1):
                await sock.emit("second")
            assert await transport.server_recv() == '42/client,["first"]'
            assert client.closed is None
            nursery.start_soon(sock.emit, "third")
            assert await transport.server_recv() == '42/client,["third"]'
