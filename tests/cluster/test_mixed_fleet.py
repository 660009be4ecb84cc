"""A mixed fleet on one Redis: our node beside a Node.js socket.io server with the official
``@socket.io/redis-adapter``, and the official ``@socket.io/redis-emitter``. Broadcasts,
broadcasts asking for acks, room changes and socket listings cross between them both
ways, in the adapter's own wire format."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from .._raw import http
from .._waiting import wait_for
from ..interop._peers import Peer, open_peer, to_wire
from ..server.test_signals import _free_port
from ._nodes import PATH, Cluster, Node, open_cluster, stop_process

FIXTURE = Path(__file__).resolve().parents[1] / "interop" / "js" / "node_fleet.mjs"
WEBSOCKET = ("websocket",)


@asynccontextmanager
async def _node_server(redis_url: str, key: str, log: Path) -> AsyncIterator[int]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: scripts/test needs it for the JS peers")
    if not (FIXTURE.parent / "node_modules" / "@socket.io" / "redis-adapter").exists():
        pytest.fail("the Node fleet's packages are missing: run scripts/test (npm ci)")
    port = _free_port()
    with log.open("wb") as out:
        process = await trio.lowlevel.open_process(
            [node, str(FIXTURE), str(port), redis_url, key],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        await wait_for(lambda: _answers(port), timeout=20)
        yield port
    finally:
        await stop_process(process)


async def _answers(port: int) -> bool:
    try:
        return (await http(port, "GET", "/count?namespace=/client")).status == 200
    except OSError:
        return False


async def _call(port: int, route: str, body: dict[str, Any] | None = None) -> Any:
    method = "GET" if body is None else "POST"
    payload = b"" if body is None else orjson.dumps(to_wire(body))
    response = await http(port, method, route, payload, [("content-type", "application/json")])
    assert response.status == 200, response.body
    return orjson.loads(response.body)


async def _event(peer: Peer, socket: str, name: str) -> Any:
    return await peer.next_event(socket, name, timeout=10)


async def test_our_node_and_a_node_js_node_share_broadcasts(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    async with open_cluster(pg_url, redis_url, tmp_path) as cluster:
        ours = await cluster.start()
        key = f"{cluster.prefix}socket.io"
        async with _node_server(redis_url, key, tmp_path / "node.log") as theirs:
            with trio.fail_after(90):
                async with open_peer("js") as peer:
                    await _run(cluster, ours, theirs, peer)


async def _run(cluster: Cluster, ours: Node, theirs: int, peer: Peer) -> None:
    conversation = await cluster.new_conversation(ours, "phone")
    room = f"conversation:{conversation}"
    result = await peer.connect(
        "phone", ours.url, "/client", cluster.auth("phone"), WEBSOCKET, path=PATH
    )
    assert result.connected
    await _event(peer, "phone", "conversation:joined")  # in the conversation's room
    watcher = await peer.connect(
        "watcher", f"http://127.0.0.1:{theirs}", "/client", {"rooms": [room]}, WEBSOCKET, path=PATH
    )
    assert watcher.connected

    assert (await _call(theirs, "/count?namespace=/client"))["count"] == 2

    # Ours -> theirs: a device's message reaches a client of the Node.js server.
    send = {"conversation_id": conversation, "body": "from our node", "local_id": "m1"}
    (ack,) = await peer.emit_with_ack("phone", "message:send", send)
    assert ack["success"] is True
    heard = await _event(peer, "watcher", "message:new")
    assert heard.args == [ack["message"]]

    # Theirs -> ours: a broadcast to the room, binary included; one excluding the room.
    blob = bytes(range(256))
    await _call(
        theirs,
        "/emit",
        {"namespace": "/client", "rooms": [room], "event": "notice", "args": [{"b": blob}, 1.5]},
    )
    notice = await _event(peer, "phone", "notice")
    assert notice.args == [{"b": blob}, 1.5]
    await _call(
        theirs,
        "/emit",
        {"namespace": "/client", "except": [room], "event": "skipped", "args": []},
    )

    # The emitter -> ours.
    await _call(
        theirs,
        "/emitter",
        {"namespace": "/client", "rooms": [room], "event": "from-emitter", "args": [{"e": 1}]},
    )
    assert (await _event(peer, "phone", "from-emitter")).args == [{"e": 1}]
    assert not [n for n in peer.buffered("phone") if n.name == "skipped"]

    # A broadcast asking for acks, from theirs: our client's ack travels back.
    async with trio.open_nursery() as nursery:
        outcome: dict[str, Any] = {}

        async def ask() -> None:
            outcome.update(
                await _call(
                    theirs,
                    "/emit-ack",
                    {
                        "namespace": "/client",
                        "rooms": [room],
                        "event": "question",
                        "args": ["ready?"],
                        "timeout": 5000,
                    },
                )
            )

        nursery.start_soon(ask)
        for socket, answer in (("phone", "ours"), ("watcher", "theirs")):
            asked = await _event(peer, socket, "question")
            assert asked.args == ["ready?"]
            assert asked.ack_id is not None
            await peer.ack(socket, asked.ack_id, {"from": answer})
    assert "error" not in outcome, outcome
    assert sorted(r["from"] for r in outcome["responses"]) == ["ours", "theirs"]

    # Room changes and listings reach our sockets.
    fetched = await _call(theirs, "/fetch?namespace=/client")
    phone = next(s for s in fetched["sockets"] if s["id"] == result.sid)
    assert room in phone["rooms"]
    assert result.sid in phone["rooms"]
    await _call(theirs, "/join", {"namespace": "/client", "rooms": [room], "join": ["vip"]})

    async def phone_in_vip() -> bool:
        listed = await _call(theirs, "/fetch?namespace=/client")
        return any("vip" in s["rooms"] for s in listed["sockets"] if s["id"] == result.sid)

    await wait_for(phone_in_vip, timeout=10)
    await _call(
        theirs, "/emit", {"namespace": "/client", "rooms": ["vip"], "event": "vip", "args": []}
    )
    await _event(peer, "phone", "vip")
