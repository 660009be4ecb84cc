"""Handlers run inline in the WebSocket reader's task, and what must hold anyway.

An event's work starts in the reader's task; work that waits stays in that task (a
suspended coroutine cannot move) and a new reader reads on. These tests pin down what
the docs promise regardless: order, the reader never stalled by a handler, one bad
handler closing only its connection, context variables that do not leak, ``concurrent=``
routes, and a goodbye that no waiting handler holds back.
"""

from __future__ import annotations

import contextvars
import os
from typing import Any

import trio
import trio.testing

from replyhq_trio.hub import Socket
from replyhq_trio.sansio import DisconnectReason, ProtocolConfig
from replyhq_trio.sansio.websocket import Opcode, encode_frame

from .._raw import RawWebSocket
from .._socketpairs import SocketPairListener
from ._sessions import join_websocket, server


def _frames(*texts: str) -> bytes:
    # Several client frames in one write: the reader gets them in one read.
    return b"".join(encode_frame(Opcode.TEXT, t.encode(), mask=os.urandom(4)) for t in texts)


async def test_acks_keep_the_order_of_their_events_when_the_first_handler_waits() -> None:
    srv = server()
    ns = srv.namespace("/n")
    release = trio.Event()
    started = trio.Event()

    @ns.on("slow")
    async def slow(socket: Socket, args: tuple[Any, ...]) -> str:
        started.set()
        await release.wait()
        return "slow"

    @ns.on("fast")
    async def fast(socket: Socket, args: tuple[Any, ...]) -> Any:
        return args[0]

    listener = SocketPairListener()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: srv.serve(listeners=[listener]))
            ws = await join_websocket(listener, "/n")
            await ws.send_raw(
                _frames(
                    '42/n,1["fast",0]', '42/n,2["slow"]', '42/n,3["fast",3]', '42/n,4["fast",4]'
                )
            )
            assert await ws.receive_skipping_pings() == "43/n,1[0]"
            await started.wait()
            await ws.send_text('42/n,5["fast",5]')  # read by the next reader, queued
            await trio.testing.wait_all_tasks_blocked()
            release.set()
            answers = [await ws.receive_skipping_pings() for _ in range(4)]
            assert answers == ['43/n,2["slow"]', "43/n,3[3]", "43/n,4[4]", "43/n,5[5]"]
            # Reading went on in another task: later events are handled inline again.
            await ws.send_raw(_frames('42/n,6["fast",6]', '42/n,7["fast",7]'))
            assert await ws.receive_skipping_pings() == "43/n,6[6]"
            assert await ws.receive_skipping_pings() == "43/n,7[7]"
            await ws.stream.aclose()
            srv.shutdown()


async def test_a_waiting_handler_does_not_stall_pongs_pings_or_client_acks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    srv = server(protocol=ProtocolConfig(ping_interval=10, ping_timeout=5))
    ns = srv.namespace("/n")
    sockets: list[Socket] = []
    release = trio.Event()
    gone: list[DisconnectReason] = []

    @ns.on_connected
    async def keep(socket: Socket) -> None:
        sockets.append(socket)

    @ns.on("wait")
    async def wait(socket: Socket, args: tuple[Any, ...]) -> str:
        await release.wait()
        return "done"

    @ns.on_disconnect
    async def left(socket: Socket, reason: DisconnectReason) -> None:
        gone.append(reason)

    listener = SocketPairListener()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: srv.serve(listeners=[listener]))
            ws = await join_websocket(listener, "/n")
            (socket,) = sockets
            await ws.send_text('42/n,1["wait"]')
            await trio.testing.wait_all_tasks_blocked()
            # Engine.IO heartbeats for far longer than ping_timeout: answered pongs
            # keep the session open although the handler is still waiting.
            for _ in range(5):
                assert await ws.receive() == "2"
                await ws.send_text("3")
            # A WebSocket ping is answered by the reader.
            await ws.send_raw(encode_frame(Opcode.PING, b"hi", mask=os.urandom(4)))
            answer: list[tuple[Any, ...]] = []

            async def ask() -> None:
                answer.append(await socket.emit_with_ack("question", timeout=30))

            nursery.start_soon(ask)
            while True:
                frame = await ws.next_frame()
                if frame == '42/n,0["question"]':
                    break
            await ws.send_text("43/n,0[42]")  # the client's ack, read while the handler waits
            while not answer:
                await trio.testing.wait_all_tasks_blocked()
            assert answer == [(42,)]
            assert not gone
            release.set()
            assert await ws.receive_skipping_pings() == '43/n,1["done"]'
            await ws.stream.aclose()
            srv.shutdown()


async def test_a_handler_that_raises_inline_closes_only_its_connection() -> None:
    srv = server()
    ns = srv.namespace("/n")

    @ns.on("boom")
    async def boom(socket: Socket, args: tuple[Any, ...]) -> None:
        raise RuntimeError("a bug, before any await")

    @ns.on("boom-later")
    async def boom_later(socket: Socket, args: tuple[Any, ...]) -> None:
        await trio.lowlevel.checkpoint()
        raise RuntimeError("a bug, after waiting")

    @ns.on("echo")
    async def echo(socket: Socket, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return args

    listener = SocketPairListener()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: srv.serve(listeners=[listener]))
            bad = await join_websocket(listener, "/n")
            bad_later = await join_websocket(listener, "/n")
            good = await join_websocket(listener, "/n")
            # The events behind the bad one in the same read are not handled.
            await bad.send_raw(_frames('42/n,1["boom"]', '42/n,2["echo",1]'))
            await bad_later.send_raw(_frames('42/n,1["boom-later"]', '42/n,2["echo",1]'))
            assert await bad.wait_closed() == 1011
            assert await bad_later.wait_closed() == 1011
            await good.send_text('42/n,7["echo","still here"]')
            assert await good.receive_skipping_pings() == '43/n,7["still here"]'
            for ws in (bad, bad_later, good):
                await ws.stream.aclose()
            srv.shutdown()


async def test_context_variables_a_handler_sets_do_not_reach_later_events() -> None:
    srv = server()
    ns = srv.namespace("/n")
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    @ns.on("set")
    async def set_var(socket: Socket, args: tuple[Any, ...]) -> str:
        seen = var.get()
        var.set(args[0])
        if args[0] == "waits":
            await trio.lowlevel.checkpoint()  # carried in the reader's task
            assert var.get() == "waits"
        return seen

    listener = SocketPairListener()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: srv.serve(listeners=[listener]))
            ws = await join_websocket(listener, "/n")
            await ws.send_raw(
                _frames('42/n,1["set","a"]', '42/n,2["set","waits"]', '42/n,3["set","b"]')
            )
            await ws.send_text('42/n,4["set","c"]')
            answers = [await ws.receive_skipping_pings() for _ in range(4)]
            assert answers == [f'43/n,{n}["unset"]' for n in range(1, 5)]
            await ws.stream.aclose()
            srv.shutdown()


async def test_a_concurrent_route_still_runs_in_its_own_task() -> None:
    srv = server()
    ns = srv.namespace("/n")
    release = trio.Event()
    tasks: list[trio.lowlevel.Task] = []

    @ns.on("ask", concurrent=True)
    async def ask(socket: Socket, args: tuple[Any, ...]) -> str:
        tasks.append(trio.lowlevel.current_task())
        await release.wait()
        return "answered"

    @ns.on("where")
    async def where(socket: Socket, args: tuple[Any, ...]) -> bool:
        return trio.lowlevel.current_task() in tasks

    listener = SocketPairListener()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: srv.serve(listeners=[listener]))
            ws = await join_websocket(listener, "/n")
            await ws.send_raw(_frames('42/n,1["ask"]', '42/n,2["where"]'))
            # The next event is answered while the concurrent one waits, from another task.
            assert await ws.receive_skipping_pings() == "43/n,2[false]"
            release.set()
            assert await ws.receive_skipping_pings() == '43/n,1["answered"]'
            await ws.stream.aclose()
            srv.shutdown()


async def test_a_waiting_handler_does_not_hold_back_the_goodbye(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The first event's handler waits in the task that read it; the client leaves.
    The disconnect handler runs at once, the socket is closed, and the waiting handler
    is cancelled with the session's tasks, as a handler in a task of its own would be."""
    srv = server(close_timeout=5.0)
    ns = srv.namespace("/n")
    started = trio.Event()
    left = trio.Event()
    cancelled = trio.Event()
    log: list[str] = []

    @ns.on("forever")
    async def forever(socket: Socket, args: tuple[Any, ...]) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            log.append(f"handler ended at {trio.current_time():.0f}")
            cancelled.set()

    @ns.on_disconnect
    async def gone(socket: Socket, reason: DisconnectReason) -> None:
        log.append(f"disconnect {reason.value} at {trio.current_time():.0f}")
        left.set()

    listener = SocketPairListener()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: srv.serve(listeners=[listener]))
            ws: RawWebSocket = await join_websocket(listener, "/n")
            await ws.send_text('42/n,1["forever"]')
            await started.wait()
            begun = trio.current_time()
            await ws.send_close()
            assert await ws.wait_closed() == 1000
            await left.wait()
            await cancelled.wait()
            assert trio.current_time() == begun  # no timeout was waited out
            assert log == [
                f"disconnect client_close at {begun:.0f}",
                f"handler ended at {begun:.0f}",
            ]
            await ws.stream.aclose()
            srv.shutdown()
