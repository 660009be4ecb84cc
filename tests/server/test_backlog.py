"""What a client that does not read can make the server hold stays bounded.

Answers to the client (acks, pongs) are not written past the backlog's bound: the
server stops reading that client instead, so TCP holds the client back.
"""

from __future__ import annotations

import os
from typing import Any

import trio
import trio.testing

from replyhq_trio.hub import Socket
from replyhq_trio.sansio import ProtocolConfig
from replyhq_trio.sansio.websocket import Opcode, encode_frame
from replyhq_trio.transport import PollingQueue

from .._raw import RawWebSocket, http_on
from .._socketpairs import SocketPairListener
from ._sessions import POLLING, join_polling, join_websocket, server

BOUND = 64 * 1024
REPLY = 1000


async def _flood(
    ws: RawWebSocket, batch: bytes, rounds: int, done: trio.Event, scope: trio.CancelScope
) -> None:
    with scope:
        for _ in range(rounds):
            await ws.send_raw(batch)
        done.set()


async def test_acks_to_a_client_that_never_reads_stay_within_the_bound() -> None:
    srv = server(max_backlog_bytes=BOUND, protocol=ProtocolConfig(ping_interval=1000))
    ns = srv.namespace("/n")
    sockets: list[Socket] = []

    @ns.on_connected
    async def keep(socket: Socket) -> None:
        sockets.append(socket)

    @ns.on("get")
    async def get(socket: Socket, args: tuple[Any, ...]) -> str:
        return "y" * REPLY  # e.g. a page of history

    listener = SocketPairListener()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: srv.serve(listeners=[listener]))
            ws = await join_websocket(listener, "/n", small=True)
            (socket,) = sockets
            session = socket._connection.session
            batch = b"".join(
                encode_frame(Opcode.TEXT, f'42/n,{i}["get"]'.encode(), mask=os.urandom(4))
                for i in range(100)
            )
            flooded = trio.Event()
            flooding = trio.CancelScope()
            nursery.start_soon(_flood, ws, batch, 400, flooded, flooding)  # 40,000 requests
            await trio.testing.wait_all_tasks_blocked()
            # The server stopped reading; the client is held by TCP, not buffered.
            assert not flooded.is_set()
            assert not session.closed
            assert session.backlog_bytes <= BOUND + 2 * REPLY
            flooding.cancel()
            await ws.stream.aclose()
            srv.shutdown()


async def test_pongs_to_a_client_that_never_reads_stay_within_the_bound() -> None:
    srv = server(max_backlog_bytes=BOUND, protocol=ProtocolConfig(ping_interval=1000))
    srv.namespace("/n")
    listener = SocketPairListener()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: srv.serve(listeners=[listener]))
            ws = await join_websocket(listener, "/n", small=True)
            (session,) = list(srv.sessions)
            ping = encode_frame(Opcode.PING, b"p" * 125, mask=os.urandom(4))
            flooded = trio.Event()
            flooding = trio.CancelScope()
            nursery.start_soon(_flood, ws, ping * 800, 40, flooded, flooding)  # 4 MB of pings
            await trio.testing.wait_all_tasks_blocked()
            assert not flooded.is_set()
            assert session.backlog_bytes <= BOUND + 200
            flooding.cancel()
            await ws.stream.aclose()
            srv.shutdown()


async def test_acks_to_a_polling_client_that_never_polls_stay_within_the_bound() -> None:
    srv = server(max_backlog_bytes=BOUND, protocol=ProtocolConfig(ping_interval=1000))
    ns = srv.namespace("/n")

    @ns.on("get")
    async def get(socket: Socket, args: tuple[Any, ...]) -> str:
        return "y" * REPLY

    listener = SocketPairListener()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: srv.serve(listeners=[listener]))
            stream = await listener.connect()
            sid = await join_polling(stream, "/n")
            (session,) = list(srv.sessions)
            body = "\x1e".join(f'42/n,{i}["get"]' for i in range(500)).encode()
            answered = trio.Event()
            posting = trio.CancelScope()

            async def post() -> None:
                with posting:
                    await http_on(stream, "POST", f"{POLLING}&sid={sid}", body)
                    answered.set()

            nursery.start_soon(post)
            await trio.testing.wait_all_tasks_blocked()
            # The POST is held (no "ok" yet) while its answers wait for a poll.
            assert not answered.is_set()
            queue = session.polling
            assert isinstance(queue, PollingQueue)
            assert queue.queued_bytes <= BOUND + 2 * REPLY
            posting.cancel()
            await stream.aclose()
            srv.shutdown()


def test_the_polling_backlog_counts_the_bytes_a_client_receives() -> None:
    queue = PollingQueue(max_bytes=1000)
    queue.push(["4" + "\N{GRINNING FACE}" * 200])  # 801 bytes as UTF-8, 201 characters
    assert queue.queued_bytes == 801
    queue.push([b"\x00" * 150])  # "b" and 200 characters of base64
    assert queue.queued_bytes == 801 + 201
    assert queue.over_limit
