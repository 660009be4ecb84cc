"""Limits at the front door and on the write path: origins, the connection cap, slow
handshakes, and clients that do not read."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio
import trio.testing

from replyhq_trio.config import ServerConfig
from replyhq_trio.hub import Socket
from replyhq_trio.sansio import DisconnectReason, ProtocolConfig
from replyhq_trio.server import Server

from .._raw import (
    RawWebSocket,
    WebSocketRejected,
    http,
    http_on,
    open_websocket,
    websocket_handshake,
)
from .._serving import serving
from .._socketpairs import SocketPairListener

POLLING = "/v1/socket.io/?EIO=4&transport=polling"
WEBSOCKET = "/v1/socket.io/?EIO=4&transport=websocket"


def _server(**settings: Any) -> Server:
    settings.setdefault("grace_period", 0.05)
    settings.setdefault("close_timeout", 0.2)
    return Server(ServerConfig(port=0, **settings))


# --- origins ----------------------------------------------------------------------------


async def test_cross_origin_requests_are_refused_by_default() -> None:
    with trio.fail_after(5):
        async with serving(_server()) as port:
            plain = await http(port, "GET", POLLING)
            assert plain.status == 200
            assert "access-control-allow-origin" not in plain.headers
            same = await http(port, "GET", POLLING, headers=[("origin", "http://127.0.0.1")])
            assert same.status == 200
            other = await http(port, "GET", POLLING, headers=[("origin", "https://evil.example")])
            assert other.status == 403
            with pytest.raises(WebSocketRejected) as refused:
                async with open_websocket(port, WEBSOCKET, [("origin", "https://evil.example")]):
                    pass
            assert refused.value.status == 403


async def test_an_allowlisted_origin_gets_cors_headers() -> None:
    allowed = "https://dash.example.com"
    with trio.fail_after(5):
        async with serving(_server(cors_origins=(allowed,))) as port:
            ok = await http(port, "GET", POLLING, headers=[("origin", allowed)])
            assert ok.status == 200
            assert ok.headers["access-control-allow-origin"] == allowed
            assert ok.headers["access-control-allow-credentials"] == "true"
            preflight = await http(
                port,
                "OPTIONS",
                POLLING,
                headers=[("origin", allowed), ("access-control-request-method", "POST")],
            )
            assert preflight.status == 204
            assert "POST" in preflight.headers["access-control-allow-methods"]
            other = await http(port, "GET", POLLING, headers=[("origin", "https://else.example")])
            assert other.status == 403
            async with open_websocket(port, WEBSOCKET, [("origin", allowed)]) as ws:
                assert isinstance(await ws.receive(), str)


async def test_a_star_allows_every_origin_only_when_configured() -> None:
    with trio.fail_after(5):
        async with serving(_server(cors_origins=("*",))) as port:
            response = await http(port, "GET", POLLING, headers=[("origin", "https://any.example")])
            assert response.status == 200
            assert response.headers["access-control-allow-origin"] == "https://any.example"


# --- the connection cap and bad handshakes -----------------------------------------------


async def test_sessions_over_the_cap_get_503_and_bad_handshakes_cost_nothing() -> None:
    server = _server(max_connections=2)
    with trio.fail_after(5):
        async with serving(server) as port:
            for target in ("/v1/socket.io/?EIO=3&transport=polling", "/v1/socket.io/?EIO=4"):
                assert (await http(port, "GET", target)).status == 400
            assert len(server.sessions) == 0  # refused handshakes allocated no session
            assert (await http(port, "GET", POLLING)).status == 200
            async with open_websocket(port, WEBSOCKET) as ws:
                assert isinstance(await ws.receive(), str)
                assert len(server.sessions) == 2
                assert (await http(port, "GET", POLLING)).status == 503
                with pytest.raises(WebSocketRejected) as refused:
                    async with open_websocket(port, WEBSOCKET):
                        pass
                assert refused.value.status == 503


async def test_a_slow_handshake_is_dropped_at_its_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = _server(handshake_timeout=10.0)
    listener = SocketPairListener()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: server.serve(listeners=[listener]))
        client = await listener.connect()
        started = trio.current_time()
        await client.send_all(b"GET /v1/socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n")
        assert await client.receive_some(100) == b""  # never finished: closed
        assert trio.current_time() - started == 10.0
        await client.aclose()
        server.shutdown()


async def test_an_idle_keep_alive_connection_is_closed_at_its_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = _server(keep_alive_timeout=60.0)
    listener = SocketPairListener()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: server.serve(listeners=[listener]))
        client = await listener.connect()
        response = await http_on(client, "GET", POLLING)
        assert response.status == 200
        answered = trio.current_time()
        assert await client.receive_some(100) == b""
        assert trio.current_time() - answered == 60.0
        await client.aclose()
        server.shutdown()


# --- clients that do not read --------------------------------------------------------------


def _shrink(stream: trio.SocketStream) -> None:
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


async def test_a_slow_consumer_is_disconnected_and_the_others_keep_receiving() -> None:
    server = _server(max_backlog_bytes=64 * 1024, protocol=ProtocolConfig(ping_interval=60))
    hub = server.hub
    room = server.namespace("/room")
    reasons: list[DisconnectReason] = []

    @room.on_connected
    async def enter(socket: Socket) -> None:
        socket.join("all")

    @room.on_disconnect
    async def left(socket: Socket, reason: DisconnectReason) -> None:
        reasons.append(reason)

    listener = SocketPairListener()
    chunk = "x" * 16_000
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: server.serve(listeners=[listener]))
            reader = await _join(listener, "/room")
            sleeper_stream = await listener.connect()
            _shrink(sleeper_stream)
            sleeper = await websocket_handshake(sleeper_stream, WEBSOCKET)
            await _connect_namespace(sleeper, "/room")

            received = 0
            sent = 0
            while not reasons:
                await hub.emit("/room", "blob", chunk, to="all")
                sent += 1
                message = await reader.receive_skipping_pings()
                assert isinstance(message, str)
                received += 1
                assert sent < 2000, "the slow consumer was never disconnected"
            assert reasons == [DisconnectReason.SLOW_CONSUMER]
            assert hub.stats.slow_consumers == 1
            assert hub.stats.disconnected == {("/room", DisconnectReason.SLOW_CONSUMER): 1}
            # The reader was never held back: it got every broadcast so far.
            assert received == sent
            await hub.emit("/room", "blob", "after", to="all")
            assert await reader.receive_skipping_pings() == '42/room,["blob","after"]'
            await reader.stream.aclose()
            await sleeper_stream.aclose()
            server.shutdown()


async def test_an_emit_to_one_client_waits_for_room_instead_of_growing() -> None:
    server = _server(max_backlog_bytes=64 * 1024, protocol=ProtocolConfig(ping_interval=60))
    ns = server.namespace("/one")
    sockets: list[Socket] = []

    @ns.on_connected
    async def keep(socket: Socket) -> None:
        sockets.append(socket)

    listener = SocketPairListener()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: server.serve(listeners=[listener]))
            stream = await listener.connect()
            _shrink(stream)
            ws = await websocket_handshake(stream, WEBSOCKET)
            await _connect_namespace(ws, "/one")
            (target,) = sockets
            emitted = 0

            async def flood() -> None:
                nonlocal emitted
                for _ in range(200):
                    await target.emit("blob", "y" * 16_000)
                    emitted += 1

            nursery.start_soon(flood)
            await trio.testing.wait_all_tasks_blocked()
            assert 0 < emitted < 200  # parked on backpressure, not buffering 3 MB
            assert target._connection.session.backlog_bytes <= 64 * 1024 + 16_100
            for _ in range(200):
                assert isinstance(await ws.receive_skipping_pings(), str)
            assert emitted == 200
            await stream.aclose()
            server.shutdown()


async def _connect_namespace(ws: RawWebSocket, namespace: str) -> None:
    assert isinstance(await ws.receive(), str)
    await ws.send_text(f"40{namespace},")
    accepted = await ws.receive_skipping_pings()
    assert isinstance(accepted, str)
    assert accepted.startswith(f"40{namespace},")


async def _join(listener: SocketPairListener, namespace: str) -> RawWebSocket:
    ws = await websocket_handshake(await listener.connect(), WEBSOCKET)
    await _connect_namespace(ws, namespace)
    return ws


async def test_a_flooding_client_is_slowed_by_tcp_not_queued_without_bound() -> None:
    from replyhq_trio.hub import SocketIOConnection
    from replyhq_trio.hub._connection import MAX_QUEUED_EVENTS

    server = _server(protocol=ProtocolConfig(ping_interval=60))
    ns = server.namespace("/flood")
    release = trio.Event()
    handled: list[int] = []
    connections: list[SocketIOConnection] = []

    @ns.on_connected
    async def remember(socket: Socket) -> None:
        connections.append(socket._connection)

    @ns.on("n")
    async def slow(socket: Socket, args: tuple[Any, ...]) -> None:
        await release.wait()
        handled.append(args[0])

    listener = SocketPairListener()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: server.serve(listeners=[listener]))
            ws = await _join(listener, "/flood")
            sent_all = trio.Event()

            async def flood() -> None:
                for number in range(1000):
                    await ws.send_text(f'42/flood,["n",{number}]')
                sent_all.set()

            nursery.start_soon(flood)
            await trio.testing.wait_all_tasks_blocked()
            (connection,) = connections
            queued = connection._queue
            assert queued is not None
            # The server stopped reading at the bound; the client is held by TCP.
            assert len(queued) <= MAX_QUEUED_EVENTS
            assert not sent_all.is_set()
            release.set()
            while len(handled) < 1000:  # bounded by fail_after
                await trio.testing.wait_all_tasks_blocked()
            assert handled == list(range(1000))
            assert sent_all.is_set()
            await ws.stream.aclose()
            server.shutdown()
