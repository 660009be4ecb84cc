"""Acks, and the session cap."""

from __future__ import annotations

import functools
from typing import Any

import trio
import trio.testing

from replyhq_trio.hub import AckTimeout, Socket, SocketGone
from replyhq_trio.sansio import ProtocolConfig

from .._socketpairs import SocketPairListener
from ._sessions import WEBSOCKET, join_websocket, server


async def test_emit_with_ack_fails_at_once_when_the_client_leaves_during_a_handler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """_connection.py on_event: a client DISCONNECT is only queued; the ack waiters of
    that namespace fail when the dispatcher reaches it. While a (non-concurrent) handler
    of that socket is busy, an emit_with_ack from elsewhere (another client's handler,
    an admin action) waits out its whole timeout although the core already dropped the
    ack id, instead of raising SocketGone "at once" (docs/server.md)."""
    srv = server(protocol=ProtocolConfig(ping_interval=1000, ping_timeout=1000))
    ns = srv.namespace("/n")
    sockets: list[Socket] = []
    busy = trio.Event()
    release = trio.Event()

    @ns.on_connected
    async def keep(socket: Socket) -> None:
        sockets.append(socket)

    @ns.on("work")
    async def work(socket: Socket, args: tuple[Any, ...]) -> None:
        busy.set()
        await release.wait()  # e.g. a slow store write

    listener = SocketPairListener()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: srv.serve(listeners=[listener]))
            ws = await join_websocket(listener, "/n")
            (socket,) = sockets
            await ws.send_text('42/n,["work"]')
            await busy.wait()
            outcome: list[str] = []
            answered = trio.Event()
            started = trio.current_time()

            async def ask() -> None:
                try:
                    await socket.emit_with_ack("question", timeout=300)
                except SocketGone:
                    outcome.append("gone")
                except AckTimeout:
                    outcome.append("timeout")
                outcome.append(f"after {trio.current_time() - started} s")
                answered.set()

            nursery.start_soon(ask)
            assert await ws.receive() == '42/n,0["question"]'
            await ws.send_text("41/n,")  # the client leaves the namespace
            await answered.wait()
            release.set()
            await ws.stream.aclose()
            srv.shutdown()
    assert outcome == ["gone", "after 0.0 s"], outcome


_HANDSHAKE = (
    f"GET {WEBSOCKET} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
).encode()


async def test_the_session_cap_holds_under_concurrent_handshakes() -> None:
    """_engineio.py _websocket_handshake: the cap is checked, then the 101 is sent (a
    checkpoint), and the session is added only in the takeover: handshakes that arrive
    together pass the check while the first one is being written. Which task runs first
    is up to Trio's scheduler (it shuffles batches), so this tries several times; with
    the check and the add in one step no attempt can overshoot."""
    counts: list[int] = []
    with trio.fail_after(60):
        for _ in range(20):
            srv = server(max_connections=1, protocol=ProtocolConfig(ping_interval=1000))
            listener = SocketPairListener()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(srv.serve, listeners=[listener]))
                streams = [await listener.connect() for _ in range(10)]
                await trio.testing.wait_all_tasks_blocked()
                for stream in streams:
                    await stream.send_all(_HANDSHAKE)
                await trio.testing.wait_all_tasks_blocked()
                counts.append(len(srv.sessions))
                for stream in streams:
                    await stream.aclose()
                srv.shutdown()
    assert max(counts) <= 1, f"live sessions with max_connections=1, per attempt: {counts}"
