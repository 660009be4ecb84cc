"""Two nodes (two ``replyhq-trio serve`` processes) on one Redis and one store: what
CONTRACT.md says happens "on every node" does, through the official JS client on node 1
and the python-socketio client on node 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from ..interop._peers import Peer, open_peer
from ._nodes import PATH, Cluster, Node, open_cluster

WEBSOCKET = ("websocket",)


async def _event(peer: Peer, socket: str, name: str) -> dict[str, Any]:
    notice = await peer.next_event(socket, name, timeout=10)
    (payload,) = notice.args
    assert isinstance(payload, dict)
    return payload


async def _connect(
    peer: Peer, socket: str, node: Node, namespace: str, auth: dict[str, str], transports: Any
) -> None:
    result = await peer.connect(socket, node.url, namespace, auth, transports, path=PATH)
    assert result.connected, result
    await peer.next_event(socket, "connected")


async def test_devices_and_admins_on_two_nodes_hear_each_other(
    db_url: str, redis_url: str, tmp_path: Path
) -> None:
    async with open_cluster(db_url, redis_url, tmp_path) as cluster:
        one, two = await cluster.start(), await cluster.start()
        with trio.fail_after(90):
            async with open_peer("js") as js, open_peer("python") as py:
                await _run(cluster, one, two, js, py)


async def _run(cluster: Cluster, one: Node, two: Node, js: Peer, py: Peer) -> None:
    app_id = cluster.app["app_id"]
    # The dashboard on node 2 (python-socketio), the phone on node 1 (the JS client).
    await _connect(py, "admin", two, "/admin", cluster.admin_auth(), WEBSOCKET)
    await _connect(js, "phone", one, "/client", cluster.auth("phone"), ("polling", "websocket"))

    connect = await _event(py, "admin", "session:connect")
    assert (connect["app_id"], connect["device_id"]) == (app_id, "phone")
    online = await _event(py, "admin", "presence:change")
    assert (online["device_id"], online["is_online"], online["active_connections"]) == (
        "phone",
        True,
        1,
    )
    (listed,) = await py.emit_with_ack("admin", "sessions:list", {"app_id": app_id})
    assert listed["success"] is True
    (session,) = listed["sessions"]
    assert session["connection_id"] == connect["connection_id"]

    # A conversation, its messages and typing, both ways across the nodes.
    (created,) = await js.emit_with_ack("phone", "conversation:join", {"conversation_id": "none"})
    assert created["success"] is False  # not one of its conversations
    conversation_id = await cluster.new_conversation(one, "phone")
    (joined,) = await js.emit_with_ack(
        "phone", "conversation:join", {"conversation_id": conversation_id}
    )
    assert joined["success"] is True
    (watching,) = await py.emit_with_ack(
        "admin", "conversation:join", {"conversation_id": conversation_id}
    )
    assert watching["success"] is True

    await js.emit("phone", "typing:start", {"conversation_id": conversation_id})
    typing = await _event(py, "admin", "user:typing")
    assert (typing["device_id"], typing["is_typing"]) == ("phone", True)

    send = {"conversation_id": conversation_id, "body": "hello from node 1", "local_id": "m1"}
    (ack,) = await js.emit_with_ack("phone", "message:send", send)
    assert ack["success"] is True
    heard = await _event(py, "admin", "message:new")
    assert heard == ack["message"]
    assert await _event(js, "phone", "message:new") == ack["message"]  # its own, too

    reply = {"conversation_id": conversation_id, "body": "hi from node 2", "local_id": "a1"}
    (agent_ack,) = await py.emit_with_ack("admin", "message:send", reply)
    assert agent_ack["success"] is True
    answer = await _event(js, "phone", "message:new")
    assert answer["body"] == "hi from node 2"
    assert answer["sender"] == "agent"

    await py.emit("admin", "typing:start", {"conversation_id": conversation_id})
    agent_typing = await _event(js, "phone", "agent:typing")
    assert agent_typing["is_typing"] is True

    # The same device also on node 2: online until both connections are gone.
    await _connect(py, "phone-2", two, "/client", cluster.auth("phone"), WEBSOCKET)
    await _event(py, "admin", "session:connect")
    await js.disconnect("phone")
    await _event(py, "admin", "session:disconnect")
    await py.disconnect("phone-2")
    await _event(py, "admin", "session:disconnect")
    offline = await _event(py, "admin", "presence:change")
    assert (offline["is_online"], offline["active_connections"]) == (False, 0)
    changes = [n for n in py.buffered("admin") if n.name == "presence:change"]
    assert not changes, "one crossing each way, no more"
