"""Disconnect handlers run to completion (within close_timeout), whoever ended the socket."""

from __future__ import annotations

import os

import trio
import trio.testing

from replyhq_trio.hub import Socket
from replyhq_trio.sansio import DisconnectReason, ProtocolConfig
from replyhq_trio.sansio.websocket import Opcode, encode_frame
from replyhq_trio.server import Server

from .._socketpairs import SocketPairListener
from ._sessions import join_websocket, server


def _presence_server() -> tuple[Server, list[str], list[Socket]]:
    srv = server(close_timeout=2.0, protocol=ProtocolConfig(ping_interval=1000))
    ns = srv.namespace("/n")
    done: list[str] = []
    sockets: list[Socket] = []

    @ns.on_connected
    async def keep(socket: Socket) -> None:
        sockets.append(socket)

    @ns.on_disconnect
    async def offline(socket: Socket, reason: DisconnectReason) -> None:
        await trio.lowlevel.checkpoint()  # a presence update in the store: it awaits
        done.append(reason.value)

    return srv, done, sockets


async def test_the_disconnect_handler_completes_when_the_client_leaves_then_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """What the JS client's socket.disconnect() sends: a DISCONNECT, then (no namespace
    left) the Engine.IO close. _connection.py _left runs the handler in the dispatcher,
    a task of the session nursery, after _forget() removed the socket; run() cancels
    that nursery as soon as the transport is released, so the handler is cancelled at
    its first await and on_close (shielded, bounded) never runs it again."""
    srv, done, _ = _presence_server()
    listener = SocketPairListener()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: srv.serve(listeners=[listener]))
            ws = await join_websocket(listener, "/n")
            await ws.send_raw(
                encode_frame(Opcode.TEXT, b"41/n,", mask=os.urandom(4))
                + encode_frame(Opcode.CLOSE, (1000).to_bytes(2, "big"), mask=os.urandom(4))
            )
            assert await ws.wait_closed() == 1000
            await srv.sessions.wait_empty()
            await trio.sleep(1)  # virtual (autojump): time for a handler still running
            await ws.stream.aclose()
            srv.shutdown()
    assert done == ["client_disconnect"]


async def test_the_disconnect_handler_completes_when_the_server_disconnects_then_the_client_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """_connection.py socket_left: the handler of a server-side socket.disconnect() runs
    in the session nursery too; the client answering with an Engine.IO close (the JS
    client does when no namespace is left) cancels it."""
    srv, done, sockets = _presence_server()
    listener = SocketPairListener()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: srv.serve(listeners=[listener]))
            ws = await join_websocket(listener, "/n")
            (socket,) = sockets
            socket.disconnect()
            assert await ws.receive() == "41/n,"
            await ws.send_close()
            assert await ws.wait_closed() == 1000
            await srv.sessions.wait_empty()
            await trio.sleep(1)  # virtual (autojump): time for a handler still running
            await ws.stream.aclose()
            srv.shutdown()
    assert done == ["server_disconnect"]
