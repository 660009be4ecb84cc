"""The official JS client and the python-socketio client against the server, in the
three ways they reach it: WebSocket only, long-polling only, polling then upgrade."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from ._app import NAMESPACE, SECRET
from ._peers import PEER_KINDS, SERVER_DISCONNECT, TRANSPORT_MODES, Peer, open_peer

PATH = "/v1/socket.io"
MODES = list(TRANSPORT_MODES)
pytestmark = [pytest.mark.parametrize("mode", MODES), pytest.mark.parametrize("kind", PEER_KINDS)]


async def _join(peer: Peer, socket: str, url: str, mode: str, name: str | None = None) -> Any:
    auth: dict[str, Any] = {"token": SECRET}
    if name is not None:
        auth["name"] = name
    result = await peer.connect(
        socket, url, NAMESPACE, auth, TRANSPORT_MODES[mode], path=PATH, timeout=5
    )
    assert result.connected, result
    return result


async def test_connect_with_auth_and_refusals(kind: str, mode: str, server_url: str) -> None:
    with trio.fail_after(30):
        async with open_peer(kind) as peer:  # type: ignore[arg-type]
            result = await _join(peer, "a", server_url, mode, name="ann")
            hello = await peer.next_event("a", "hello")
            assert hello.args == [{"sid": result.sid, "name": "ann"}]
            refused = await peer.connect(
                "b", server_url, NAMESPACE, {"token": "wrong"}, TRANSPORT_MODES[mode], path=PATH
            )
            assert not refused.connected
            assert refused.message == "INVALID_CREDENTIALS"
            assert refused.data == {"code": 1}
            missing = await peer.connect(
                "c", server_url, NAMESPACE, None, TRANSPORT_MODES[mode], path=PATH
            )
            assert (missing.connected, missing.message) == (False, "MISSING_PARAMS")
            unknown = await peer.connect(
                "d", server_url, "/nope", None, TRANSPORT_MODES[mode], path=PATH
            )
            assert (unknown.connected, unknown.message) == (False, "Invalid namespace")


async def test_events_acks_and_binary_both_ways(kind: str, mode: str, server_url: str) -> None:
    blob = bytes(range(256))
    with trio.fail_after(30):
        async with open_peer(kind) as peer:  # type: ignore[arg-type]
            await _join(peer, "a", server_url, mode)
            await peer.emit("a", "echo", 1, "two", {"three": [3.0, None]}, blob)
            echoed = await peer.next_event("a", "echo")
            assert echoed.args == [1, "two", {"three": [3.0, None]}, blob]
            assert await peer.emit_with_ack("a", "ack", "x", {"nested": blob}) == [
                "x",
                {"nested": blob},
            ]
            assert await peer.emit_with_ack("a", "ack") == []
            # A server emit that asks the client for an ack.
            await peer.emit("a", "ask", "ready?", b"\x00\x01")
            question = await peer.next_event("a", "question")
            assert question.args == ["ready?", b"\x00\x01"]
            assert question.ack_id is not None
            await peer.ack("a", question.ack_id, "yes", b"\xff")
            answer = await peer.next_event("a", "answer")
            assert answer.args == ["yes", b"\xff"]


async def test_rooms_and_broadcast_except_the_sender(kind: str, mode: str, server_url: str) -> None:
    with trio.fail_after(30):
        async with open_peer(kind) as peer:  # type: ignore[arg-type]
            for name in ("a", "b", "c"):
                await _join(peer, name, server_url, mode, name=name)
            assert await peer.emit_with_ack("a", "join", "room-1") == [True]
            assert await peer.emit_with_ack("b", "join", "room-1") == [True]
            # c stays outside the room.
            assert await peer.emit_with_ack("a", "say", "room-1", "hi", b"\x01") == [1]
            said = await peer.next_event("b", "said")
            assert said.args == ["a", "hi", b"\x01"]
            # The sender and the outsider got nothing: a round trip later, still nothing.
            assert await peer.emit_with_ack("a", "ack", "sync") == ["sync"]
            assert await peer.emit_with_ack("c", "ack", "sync") == ["sync"]
            assert [n.name for n in peer.buffered("a") if n.name == "said"] == []
            assert [n.name for n in peer.buffered("c") if n.name == "said"] == []


async def test_disconnects_from_either_side(kind: str, mode: str, server_url: str) -> None:
    with trio.fail_after(30):
        async with open_peer(kind) as peer:  # type: ignore[arg-type]
            await _join(peer, "watcher", server_url, mode, name="watcher")
            assert await peer.emit_with_ack("watcher", "join", "watchers") == [True]
            await _join(peer, "a", server_url, mode, name="a")
            await peer.disconnect("a")
            left = await peer.next_event("watcher", "left")
            # python-socketio closes its WebSocket without flushing the DISCONNECT it
            # queued, so the server sees the connection close first.
            expected = (
                {"client_disconnect"} if kind == "js" else {"client_disconnect", "client_close"}
            )
            assert left.args[0] == "a"
            assert left.args[1] in expected
            await _join(peer, "b", server_url, mode, name="b")
            await peer.emit("b", "kick")
            bye = await peer.next_event("b", kind="disconnect")
            assert bye.reason == SERVER_DISCONNECT[kind]  # type: ignore[index]
            left = await peer.next_event("watcher", "left")
            assert left.args == ["b", "server_disconnect"]


async def test_reconnect_after_the_transport_drops(kind: str, mode: str, server_url: str) -> None:
    with trio.fail_after(30):
        async with open_peer(kind) as peer:  # type: ignore[arg-type]
            result = await peer.connect(
                "a",
                server_url,
                NAMESPACE,
                {"token": SECRET, "name": "a"},
                TRANSPORT_MODES[mode],
                path=PATH,
                reconnection=True,
            )
            assert result.connected
            first = await peer.next_event("a", "hello")
            await peer.emit("a", "drop")
            await peer.next_event("a", kind="disconnect")
            second = await peer.next_event("a", "hello", timeout=10)
            assert second.args[0]["name"] == "a"
            assert second.args[0]["sid"] != first.args[0]["sid"]
            assert await peer.emit_with_ack("a", "ack", "back") == ["back"]


async def test_a_failing_handler_closes_only_its_connection(
    kind: str, mode: str, server_url: str
) -> None:
    with trio.fail_after(30):
        async with open_peer(kind) as peer:  # type: ignore[arg-type]
            await _join(peer, "a", server_url, mode)
            await _join(peer, "b", server_url, mode)
            await peer.emit("a", "boom")
            await peer.next_event("a", kind="disconnect")
            assert await peer.emit_with_ack("b", "ack", "still here") == ["still here"]
