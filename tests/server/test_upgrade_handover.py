"""The upgrade from long-polling to a WebSocket hands over every queued frame."""

from __future__ import annotations

import trio

from replyhq_trio.hub import Socket
from replyhq_trio.sansio import ProtocolConfig

from .._raw import websocket_handshake
from .._socketpairs import SocketPairListener
from ._sessions import WEBSOCKET, join_polling, server


async def test_an_upgrade_hands_over_more_than_1024_queued_frames() -> None:
    """_session.py serve_upgraded -> send_frames(leftover) -> Outlet.writev: one
    os.writev with every leftover frame; past IOV_MAX (1024) the kernel answers EINVAL,
    the outlet takes it for a dead socket and the session ends (transport_error) with
    the frames lost. (The backlog writer caps at _MAX_IOV; the direct path does not.)"""
    srv = server(protocol=ProtocolConfig(ping_interval=1000, ping_timeout=1000))
    ns = srv.namespace("/n")
    sockets: list[Socket] = []

    @ns.on_connected
    async def keep(socket: Socket) -> None:
        sockets.append(socket)

    listener = SocketPairListener()
    count = 1100
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: srv.serve(listeners=[listener]))
            polling = await listener.connect()
            sid = await join_polling(polling, "/n")
            (socket,) = sockets
            for number in range(count):  # ~20 KB, far under max_backlog_bytes
                await socket.emit("m", number)
            ws = await websocket_handshake(await listener.connect(), f"{WEBSOCKET}&sid={sid}")
            await ws.send_text("2probe")
            assert await ws.receive() == "3probe"
            await ws.send_text("5")
            received = []
            try:
                for _ in range(count):
                    received.append(await ws.receive_skipping_pings())
            except (EOFError, ConnectionError):
                pass
            await ws.stream.aclose()
            await polling.aclose()
            srv.shutdown()
    assert len(received) == count, f"{len(received)} of {count} frames arrived"
    assert received[-1] == f'42/n,["m",{count - 1}]'
