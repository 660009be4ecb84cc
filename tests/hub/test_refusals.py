"""EventRefused: the refusal goes in the ack when the client asked for one, else as an event."""

from __future__ import annotations

from typing import Any

import trio

from replyhq_trio.config import ServerConfig
from replyhq_trio.hub import EventRefused, Socket
from replyhq_trio.server import Server

from .._raw import open_websocket
from .._serving import serving

WEBSOCKET = "/v1/socket.io/?EIO=4&transport=websocket"


async def test_a_refusal_answers_in_the_ack_or_as_an_event() -> None:
    server = Server(ServerConfig(port=0, grace_period=0.05, close_timeout=0.2))
    ns = server.namespace("/x")

    @ns.on("pick")
    async def pick(socket: Socket, args: tuple[Any, ...]) -> str:
        if args[0] != "ok":
            raise EventRefused({"success": False}, "error", {"code": "NOPE"})
        return "fine"

    @ns.on_any
    async def anything(socket: Socket, name: str, args: tuple[Any, ...]) -> None:
        raise EventRefused({"success": False, "unknown": name}, "error", {"unknown": name})

    with trio.fail_after(5):
        async with serving(server) as port, open_websocket(port, WEBSOCKET) as ws:
            await ws.receive()
            await ws.send_text("40/x,")
            await ws.receive_skipping_pings()
            await ws.send_text('42/x,1["pick","no"]')
            assert await ws.receive_skipping_pings() == '43/x,1[{"success":false}]'
            await ws.send_text('42/x,["pick","no"]')
            assert await ws.receive_skipping_pings() == '42/x,["error",{"code":"NOPE"}]'
            await ws.send_text('42/x,2["pick","ok"]')
            assert await ws.receive_skipping_pings() == '43/x,2["fine"]'
            await ws.send_text('42/x,3["what"]')
            assert await ws.receive_skipping_pings() == '43/x,3[{"success":false,"unknown":"what"}]'
            await ws.send_text('42/x,["what"]')
            assert await ws.receive_skipping_pings() == '42/x,["error",{"unknown":"what"}]'


async def test_services_run_beside_the_server_and_end_with_it() -> None:
    server = Server(ServerConfig(port=0, grace_period=0.05))
    states: list[str] = []

    @server.add_service
    async def service(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        states.append("started")
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            states.append("stopped")

    with trio.fail_after(5):
        async with serving(server):
            assert states == ["started"]
    assert states == ["started", "stopped"]
