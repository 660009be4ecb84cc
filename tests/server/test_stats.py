"""The hub's counters that a chat test cannot reach through a client: server-to-client
acks timed out (the chat never waits on a client's ack) and events outside the names
counted by name (docs/operating.md "Metrics")."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from replyhq_trio.hub import OTHER_EVENT, AckTimeout, Socket
from replyhq_trio.sansio import ProtocolConfig

from .._socketpairs import SocketPairListener
from ._sessions import join_websocket, server


async def test_acks_timed_out_and_events_by_name_are_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    srv = server(protocol=ProtocolConfig(ping_interval=1000, ping_timeout=1000))
    stats = srv.hub.stats
    stats.count_events(received=["known"], sent=["question"])
    ns = srv.namespace("/n")
    sockets: list[Socket] = []

    @ns.on_connected
    async def keep(socket: Socket) -> None:
        sockets.append(socket)

    @ns.on("known")
    async def known(socket: Socket, args: tuple[Any, ...]) -> None:
        pass

    listener = SocketPairListener()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: srv.serve(listeners=[listener]))
            ws = await join_websocket(listener, "/n")
            (socket,) = sockets
            await ws.send_text('42/n,["known"]')
            await ws.send_text('42/n,["invented-1"]')
            await ws.send_text('42/n,["invented-2"]')
            outcome: list[str] = []
            try:
                await socket.emit_with_ack("question", timeout=5)
            except AckTimeout:
                outcome.append("timeout")
            await ws.stream.aclose()
            srv.shutdown()
    assert outcome == ["timeout"]
    assert stats.acks_timed_out == 1
    assert stats.received == {"known": 1, OTHER_EVENT: 2}
    assert stats.sent == {"question": 1, OTHER_EVENT: 0}
    assert stats.connected == {"/n": 1}
    # One departure, for whichever reason a dropped socket pair gives.
    assert [namespace for namespace, _ in stats.disconnected] == ["/n"]
    assert sum(stats.disconnected.values()) == 1
