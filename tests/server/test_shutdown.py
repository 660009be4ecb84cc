"""Graceful shutdown on the autojump clock, over socket pairs.

The drain hook runs first (the chat layer's ``server:shutdown``), clients that leave are
gone at once, and a client that never leaves is closed cleanly exactly when the grace
period ends: a DISCONNECT for its namespace, then a WebSocket close 1001.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from replyhq_trio.config import ServerConfig
from replyhq_trio.sansio import ProtocolConfig
from replyhq_trio.server import Server

from .._raw import RawWebSocket, WebSocketRejected, websocket_handshake
from .._socketpairs import SocketPairListener

GRACE = 10.0
TARGET = "/v1/socket.io/?EIO=4&transport=websocket"


def _server() -> Server:
    config = ServerConfig(
        port=0,
        grace_period=GRACE,
        protocol=ProtocolConfig(ping_interval=25, ping_timeout=60),
    )
    server = Server(config)
    server.namespace("/client")

    @server.on_drain
    async def announce() -> None:
        await server.hub.emit(
            "/client", "server:shutdown", {"message": "bye", "reconnect_delay_ms": 1000}
        )

    return server


async def _join(listener: SocketPairListener) -> RawWebSocket:
    ws = await websocket_handshake(await listener.connect(), TARGET)
    assert isinstance(await ws.receive(), str)  # the open packet
    await ws.send_text("40/client,")
    accepted = await ws.receive()
    assert isinstance(accepted, str)
    assert accepted.startswith("40/client,")
    return ws


async def test_a_client_that_never_leaves_is_closed_at_the_grace_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = _server()
    listener = SocketPairListener()
    finished_at: list[float] = []
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            await server.serve(listeners=[listener])
            finished_at.append(trio.current_time())

        nursery.start_soon(serve)
        leaver = await _join(listener)
        stayer = await _join(listener)
        started = trio.current_time()
        server.shutdown()

        notice = '42/client,["server:shutdown",{"message":"bye","reconnect_delay_ms":1000}]'
        assert await leaver.receive() == notice
        await leaver.send_close()
        assert await leaver.wait_closed() == 1000  # the server echoes the close at once
        assert trio.current_time() == started

        assert await stayer.receive() == notice
        assert await stayer.receive() == "41/client,"
        assert trio.current_time() == started + GRACE
        assert await stayer.wait_closed() == 1001
        await leaver.stream.aclose()
        await stayer.stream.aclose()
    assert finished_at
    assert finished_at[0] - started < GRACE + 1


async def test_new_connections_are_refused_while_draining(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = _server()
    listener = SocketPairListener()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: server.serve(listeners=[listener]))
        stayer = await _join(listener)
        idle = await listener.connect()  # accepted, no request yet
        await trio.testing.wait_all_tasks_blocked()
        server.shutdown()
        assert isinstance(await stayer.receive(), str)  # the notice
        assert server.draining
        # A connection accepted before the drain asks for a new session in vain.
        async with idle:
            with pytest.raises(WebSocketRejected) as refused:
                await websocket_handshake(idle, TARGET)
        assert refused.value.status == 503
        stayer_closed = await stayer.wait_closed()
        await stayer.stream.aclose()
    assert stayer_closed == 1001
