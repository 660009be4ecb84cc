"""Long-polling rules: one POST at a time, and where the server's goodbye goes."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from replyhq_trio.hub import Socket
from replyhq_trio.sansio import DisconnectReason, ProtocolConfig

from .._raw import http_on
from .._socketpairs import SocketPairListener
from ._sessions import POLLING, join_polling, server


async def test_a_server_close_reaches_the_pending_poll() -> None:
    """A session the server closes while a GET is held gets its goodbye on that GET: a
    Socket.IO DISCONNECT per namespace, then the Engine.IO close packet."""
    srv = server(close_timeout=5.0, protocol=ProtocolConfig(ping_interval=1000))
    srv.namespace("/n")
    listener = SocketPairListener()
    polls: list[Any] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: srv.serve(listeners=[listener]))
            stream = await listener.connect()
            sid = await join_polling(stream, "/n")

            async def poll() -> None:
                polls.append(await http_on(stream, "GET", f"{POLLING}&sid={sid}"))

            async with trio.open_nursery() as polling:
                polling.start_soon(poll)
                await trio.testing.wait_all_tasks_blocked()
                (session,) = list(srv.sessions)
                session.close(DisconnectReason.SERVER_DISCONNECT)
            await stream.aclose()
            srv.shutdown()
    assert [(p.status, p.text) for p in polls] == [(200, "41/n,\x1e1")]


async def test_a_server_close_between_polls_forgets_the_session() -> None:
    """With no GET held, the session leaves the table at once (as the reference server
    does, and as its protocol suite checks): the next GET gets 400 and the client
    reconnects."""
    srv = server(close_timeout=5.0, protocol=ProtocolConfig(ping_interval=1000))
    srv.namespace("/n")
    listener = SocketPairListener()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: srv.serve(listeners=[listener]))
            stream = await listener.connect()
            sid = await join_polling(stream, "/n")
            (session,) = list(srv.sessions)
            session.close(DisconnectReason.SERVER_DISCONNECT)
            await trio.testing.wait_all_tasks_blocked()
            poll = await http_on(stream, "GET", f"{POLLING}&sid={sid}")
            await stream.aclose()
            srv.shutdown()
    assert poll.status == 400
    assert "Session ID unknown" in poll.text


async def test_a_second_post_while_the_first_is_held_by_backpressure_is_refused() -> None:
    """_engineio.py _post: post_pending is cleared once the body is read, before its
    frames are fed (which awaits the handler's backpressure), so a concurrent POST is
    taken as a new one and its frames interleave with the first's. Engine.IO (and
    engine.io's onDataRequest, whose dataReq covers onData) ends the session."""
    srv = server(protocol=ProtocolConfig(ping_interval=1000))
    ns = srv.namespace("/n")
    release = trio.Event()
    handled: list[int] = []

    @ns.on("n")
    async def slow(socket: Socket, args: tuple[Any, ...]) -> None:
        await release.wait()
        handled.append(args[0])

    listener = SocketPairListener()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: srv.serve(listeners=[listener]))
            stream = await listener.connect()
            sid = await join_polling(stream, "/n")
            (session,) = list(srv.sessions)
            first = "\x1e".join(f'42/n,["n",{i}]' for i in range(100)).encode()
            nursery.start_soon(http_on, stream, "POST", f"{POLLING}&sid={sid}", first)
            await trio.testing.wait_all_tasks_blocked()  # the first POST waits for room
            other = await listener.connect()
            second_done = trio.Event()

            async def second() -> None:
                await http_on(other, "POST", f"{POLLING}&sid={sid}", b'42/n,["n",1000]')
                second_done.set()

            nursery.start_soon(second)
            await trio.testing.wait_all_tasks_blocked()
            overlap_closed = session.closed
            release.set()
            await second_done.wait()
            await trio.testing.wait_all_tasks_blocked()
            await stream.aclose()
            await other.aclose()
            srv.shutdown()
    position = handled.index(1000) if 1000 in handled else None
    assert overlap_closed, f"session still open; the second POST's event was handled {position}th"
