"""Shutdown: bounded by grace_period + close_timeout, and it survives the application."""

from __future__ import annotations

import trio
import trio.testing

from replyhq_trio.hub import Socket, SocketGone
from replyhq_trio.sansio import DisconnectReason, ProtocolConfig

from .._socketpairs import SocketPairListener
from ._sessions import join_websocket, server

GRACE = 10.0
CLOSE = 2.0


async def test_shutdown_with_a_lagging_client_ends_by_grace_plus_close_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """_session.py run(): the transport release and on_close each get their own
    close_timeout, one after the other, both shielded; a client that does not read
    plus a disconnect handler that waits (a store that hangs) make the shutdown take
    grace + 2 * close_timeout."""
    srv = server(
        grace_period=GRACE,
        close_timeout=CLOSE,
        protocol=ProtocolConfig(ping_interval=1000, ping_timeout=1000),
    )
    ns = srv.namespace("/n")
    sockets: list[Socket] = []

    @ns.on_connected
    async def keep(socket: Socket) -> None:
        sockets.append(socket)

    @ns.on_disconnect
    async def gone(socket: Socket, reason: DisconnectReason) -> None:
        await trio.sleep(1000)  # e.g. a presence update against a store that hangs

    listener = SocketPairListener()
    finished: list[float] = []

    async def serve() -> None:
        await srv.serve(listeners=[listener])
        finished.append(trio.current_time())

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            ws = await join_websocket(listener, "/n", small=True)
            (target,) = sockets
            for _ in range(5):  # 1 MB: under max_backlog_bytes, over the kernel buffers
                await target.emit("blob", "x" * 200_000)
            assert target._connection.session.backlog_bytes > 0
            started = trio.current_time()
            srv.shutdown()
        await ws.stream.aclose()
    assert finished
    assert finished[0] - started <= GRACE + CLOSE, finished[0] - started


async def test_a_drain_hook_that_raises_does_not_abort_the_graceful_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """server.py _shut_down: an exception from a drain hook (the documented hook is a
    hub.emit, which publishes on the backplane: Redis down at shutdown) escapes into
    the connections nursery: the grace period is skipped, every session is cancelled
    at once and serve() raises, so the process exits non-zero."""
    srv = server(
        grace_period=GRACE,
        close_timeout=CLOSE,
        protocol=ProtocolConfig(ping_interval=1000, ping_timeout=1000),
    )
    srv.namespace("/n")

    @srv.on_drain
    async def announce() -> None:
        raise ConnectionError("backplane unavailable")

    listener = SocketPairListener()
    outcome: list[BaseException | None] = []

    async def serve() -> None:
        try:
            await srv.serve(listeners=[listener])
        except Exception as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            ws = await join_websocket(listener, "/n")
            started = trio.current_time()
            srv.shutdown()
            closed_by = await ws.wait_closed()
            closed_at = trio.current_time()
        await ws.stream.aclose()
    assert outcome == [None], (
        f"serve() raised {outcome!r}; client closed after {closed_at - started} s"
    )
    assert closed_by == 1001
    assert closed_at - started == GRACE  # the client had its grace period


async def test_an_emit_waiting_for_room_fails_when_the_session_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """_session.py _release_transport: when drain() uses up close_timeout (the client
    does not read), outlet.close() after it is skipped, and _finish() never closes the
    outlet either: an emit parked in Outlet.wait_for_room (backpressure) is never woken.
    Socket.emit should raise SocketGone once the socket is disconnected; it hangs, and
    with it the handler (and the whole event queue of the connection) that called it."""
    srv = server(
        close_timeout=CLOSE,
        max_backlog_bytes=64 * 1024,
        protocol=ProtocolConfig(ping_interval=1000, ping_timeout=1000),
    )
    ns = srv.namespace("/n")
    sockets: list[Socket] = []

    @ns.on_connected
    async def keep(socket: Socket) -> None:
        sockets.append(socket)

    listener = SocketPairListener()
    outcome: list[str] = []
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: srv.serve(listeners=[listener]))
            lagging = await join_websocket(listener, "/n", small=True)
            (target,) = sockets
            parked = trio.Event()
            gone = trio.Event()

            async def relay() -> None:  # e.g. another client's handler sending to it
                try:
                    while True:
                        if target._connection.session.backlog_bytes > 64 * 1024:
                            parked.set()
                        await target.emit("blob", "x" * 50_000)
                except SocketGone:
                    outcome.append("gone")
                    gone.set()

            nursery.start_soon(relay)
            await parked.wait()
            await trio.testing.wait_all_tasks_blocked()
            started = trio.current_time()
            target._connection.session.close(DisconnectReason.SERVER_DISCONNECT)
            with trio.move_on_after(100):
                await gone.wait()
            waited = trio.current_time() - started
            await lagging.stream.aclose()
            srv.shutdown()
            nursery.cancel_scope.cancel()
    assert outcome == ["gone"], f"the emit was still parked {waited} s after the close"
