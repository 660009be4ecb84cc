"""The ``/admin`` namespace (the dashboard) through the official JS client and
python-socketio's, in the three transport modes (CONTRACT.md "Namespace /admin",
"Presence and sessions")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from .._waiting import wait_until
from ..interop._peers import PEER_KINDS, TRANSPORT_MODES, Notice, Peer, open_peer
from ._site import (
    PATH,
    Site,
    chat_settings,
    conforms,
    connect_admin,
    connect_device,
    open_site,
)

pytestmark = [
    pytest.mark.parametrize("mode", list(TRANSPORT_MODES)),
    pytest.mark.parametrize("kind", PEER_KINDS),
]


@pytest.fixture
async def site(tmp_path: Path, presence_url: str | None) -> Any:
    chat = chat_settings(token_recheck_interval=0.2)
    async with open_site(
        f"sqlite:///{tmp_path / 'replyhq.db'}", chat=chat, redis_url=presence_url
    ) as opened:
        yield opened


async def _admin_event(peer: Peer, socket: str, name: str) -> Any:
    (payload,) = (await peer.next_event(socket, name)).args
    return conforms("/admin", "server_to_client", name, payload)


def _events(peer: Peer, socket: str, name: str) -> int:
    return sum(1 for n in peer.buffered(socket) if n.kind == "event" and n.name == name)


async def _quiet(peer: Peer, socket: str) -> list[str]:
    """Events ``socket`` got that no test took yet, once a round trip has flushed them."""
    assert await peer.emit_with_ack(socket, "ping") == ["pong"]
    return [n.name or "" for n in peer.buffered(socket) if n.kind == "event"]


async def test_handshake_refusals(kind: str, mode: str, site: Site) -> None:
    transports = TRANSPORT_MODES[mode]
    with trio.fail_after(30):
        async with open_peer(kind) as peer:  # type: ignore[arg-type]
            cases: list[tuple[Any, str]] = [
                (None, "MISSING_PARAMS"),
                ({"app_id": site.app_id}, "MISSING_PARAMS"),
                # The client API key ships in every app binary: it never opens /admin.
                ({"app_id": site.app_id, "admin_token": site.app.api_key}, "INVALID_CREDENTIALS"),
                (
                    {"app_id": "app_other", "admin_token": site.app.admin_token},
                    "INVALID_CREDENTIALS",
                ),
            ]
            for index, (auth, code) in enumerate(cases):
                result = await peer.connect(
                    f"s{index}", site.url, "/admin", auth, transports, path=PATH
                )
                assert (result.connected, result.message) == (False, code)


async def test_sessions_presence_and_conversations(kind: str, mode: str, site: Site) -> None:
    transports = TRANSPORT_MODES[mode]
    app_id = site.app_id
    with trio.fail_after(60):
        async with open_peer(kind) as peer:  # type: ignore[arg-type]
            await connect_admin(peer, "admin", site, transports)
            assert await peer.emit_with_ack("admin", "sessions:list", {"app_id": app_id}) == [
                {"success": True, "sessions": []}
            ]

            # A device's first connection: its session, then it comes online.
            first = (await connect_device(peer, "d1", site, "phone", transports)).args[0]
            started = await _admin_event(peer, "admin", "session:connect")
            assert {k: started[k] for k in ("app_id", "device_id", "connection_id")} == {
                "app_id": app_id,
                "device_id": "phone",
                "connection_id": first["connection_id"],
            }
            online = await _admin_event(peer, "admin", "presence:change")
            assert online == {
                "app_id": app_id,
                "device_id": "phone",
                "is_online": True,
                "active_connections": 1,
            }
            names = [n.name for n in peer.buffered("admin")]
            assert "presence:change" not in names

            # Its second connection: a session, no presence change.
            second = (await connect_device(peer, "d2", site, "phone", transports)).args[0]
            assert (await _admin_event(peer, "admin", "session:connect"))["connection_id"] == (
                second["connection_id"]
            )
            assert "presence:change" not in await _quiet(peer, "admin")
            (listed,) = await peer.emit_with_ack("admin", "sessions:list", {"app_id": app_id})
            conforms("/admin", "client_to_server", "sessions:list", listed, "ack")
            assert [s["connection_id"] for s in listed["sessions"]] == [
                first["connection_id"],
                second["connection_id"],
            ]
            assert {s["device_id"] for s in listed["sessions"]} == {"phone"}
            assert len({s["node_id"] for s in listed["sessions"]}) == 1

            # Another app's id is forbidden, wherever it is asked for.
            for event in ("sessions:list", "app:subscribe"):
                (refused,) = await peer.emit_with_ack("admin", event, {"app_id": "app_other"})
                assert (refused["success"], refused["error"]) == (False, "FORBIDDEN")
            assert await peer.emit_with_ack("admin", "app:subscribe", {"app_id": app_id}) == [
                {"success": True}
            ]

            # The admin watches a conversation of the app (any device's).
            cid = (await site.new_conversation("phone"))["id"]
            (joined,) = await peer.emit_with_ack(
                "admin", "conversation:join", {"conversation_id": cid}
            )
            assert joined == {"success": True, "last_message_id": None}
            assert await _admin_event(peer, "admin", "conversation:joined") == {
                "conversation_id": cid,
                "last_message_id": None,
            }
            (missing,) = await peer.emit_with_ack(
                "admin", "conversation:join", {"conversation_id": "conv_nope"}
            )
            assert missing["error"] == "CONVERSATION_NOT_FOUND"
            for device in ("d1", "d2"):
                await peer.emit_with_ack(device, "conversation:join", {"conversation_id": cid})
                await peer.next_event(device, "conversation:joined")

            # The device's message and typing reach the admin (once: it is in the app's
            # room and the conversation's).
            send = {"conversation_id": cid, "body": "hello?", "local_id": "u-1"}
            (sent,) = await peer.emit_with_ack("d1", "message:send", send)
            assert await _admin_event(peer, "admin", "message:new") == sent["message"]
            for device in ("d1", "d2"):
                assert (await peer.next_event(device, "message:new")).args == [sent["message"]]
            await peer.emit("d1", "typing:start", {"conversation_id": cid})
            typing = await _admin_event(peer, "admin", "user:typing")
            assert (typing["device_id"], typing["is_typing"]) == ("phone", True)
            await peer.emit("d1", "typing:stop", {"conversation_id": cid})
            assert (await _admin_event(peer, "admin", "user:typing"))["is_typing"] is False

            # The agent types and answers; the devices see it, as the agent.
            await peer.emit("admin", "typing:start", {"conversation_id": cid})
            for device in ("d1", "d2"):
                (agent_typing,) = (await peer.next_event(device, "agent:typing")).args
                conforms("/client", "server_to_client", "agent:typing", agent_typing)
                assert agent_typing == {"conversation_id": cid, "is_typing": True}
            answer = {"conversation_id": cid, "body": "Hi! How can we help?", "local_id": "a-1"}
            (ack,) = await peer.emit_with_ack("admin", "message:send", answer)
            conforms("/admin", "client_to_server", "message:send", ack, "ack")
            assert (ack["success"], ack["message"]["sender"]) == (True, "agent")
            for device in ("d1", "d2"):
                assert (await peer.next_event(device, "message:new")).args == [ack["message"]]
            assert await _admin_event(peer, "admin", "message:new") == ack["message"]
            await peer.emit("admin", "typing:stop", {"conversation_id": cid})
            for device in ("d1", "d2"):
                stopped = (await peer.next_event(device, "agent:typing")).args[0]
                assert stopped["is_typing"] is False
            # The device's receipt of the agent's message reaches the admin.
            receipt = {"conversation_id": cid, "message_id": ack["message"]["id"]}
            await peer.emit_with_ack("d1", "message:read", receipt)
            assert (await _admin_event(peer, "admin", "message:status"))["status"] == "read"

            # Leaving: the conversation's own events stop (the app's room still hears
            # messages).
            assert await peer.emit_with_ack(
                "admin", "conversation:leave", {"conversation_id": cid}
            ) == [{"success": True}]
            await peer.emit("d1", "typing:start", {"conversation_id": cid})
            await peer.emit_with_ack("d1", "typing:stop", {"conversation_id": cid})
            assert "user:typing" not in await _quiet(peer, "admin")

            # The device leaves connection by connection: sessions end, then it goes
            # offline, once.
            await peer.disconnect("d2")
            ended = await _admin_event(peer, "admin", "session:disconnect")
            assert (ended["connection_id"], ended["device_id"]) == (
                second["connection_id"],
                "phone",
            )
            assert "presence:change" not in await _quiet(peer, "admin")
            await peer.disconnect("d1")
            ended = await _admin_event(peer, "admin", "session:disconnect")
            assert ended["connection_id"] == first["connection_id"]
            assert await _admin_event(peer, "admin", "presence:change") == {
                "app_id": app_id,
                "device_id": "phone",
                "is_online": False,
                "active_connections": 0,
            }
            assert await peer.emit_with_ack("admin", "sessions:list", {"app_id": app_id}) == [
                {"success": True, "sessions": []}
            ]


async def test_bad_payloads_and_unknown_events(kind: str, mode: str, site: Site) -> None:
    transports = TRANSPORT_MODES[mode]
    with trio.fail_after(30):
        async with open_peer(kind) as peer:  # type: ignore[arg-type]
            await connect_admin(peer, "admin", site, transports)
            (bad,) = await peer.emit_with_ack(
                "admin", "message:send", {"conversation_id": "c", "body": "", "local_id": "x"}
            )
            assert (bad["success"], bad["error"], bad["field"]) == (
                False,
                "INVALID_PAYLOAD",
                "body",
            )
            await peer.emit("admin", "no:such:event", {})
            error = await _admin_event(peer, "admin", "error")
            assert error["code"] == "UNKNOWN_EVENT"
            assert await peer.emit_with_ack("admin", "ping") == ["pong"]  # still usable


async def test_a_revoked_token_is_told_and_disconnected(kind: str, mode: str, site: Site) -> None:
    transports = TRANSPORT_MODES[mode]
    with trio.fail_after(30):
        async with open_peer(kind) as peer:  # type: ignore[arg-type]
            await connect_admin(peer, "admin", site, transports)
            other = await site.store.create_admin_token(site.app_id)
            auth = {"app_id": site.app_id, "admin_token": other}
            kept = await peer.connect("kept", site.url, "/admin", auth, transports, path=PATH)
            assert kept.connected
            assert await site.store.revoke_admin_token(site.app.admin_token)
            expired = await _admin_event(peer, "admin", "error")
            assert expired["code"] == "AUTH_EXPIRED"
            gone: Notice = await peer.next_event("admin", kind="disconnect")
            assert gone.reason is not None
            # The same token cannot come back; the other token's socket stays.
            auth = {"app_id": site.app_id, "admin_token": site.app.admin_token}
            again = await peer.connect("again", site.url, "/admin", auth, transports, path=PATH)
            assert (again.connected, again.message) == (False, "INVALID_CREDENTIALS")
            assert await peer.emit_with_ack("kept", "ping") == ["pong"]


async def test_presence_per_device_through_reconnect_storms(
    kind: str, mode: str, site: Site
) -> None:
    """Seed 001's scenarios: several connections per device, closing one, closing all,
    rapid reconnect cycles (no ghost sessions), devices independent of each other."""
    transports = TRANSPORT_MODES[mode]
    app_id = site.app_id
    with trio.fail_after(90):
        async with open_peer(kind) as peer:  # type: ignore[arg-type]
            await connect_admin(peer, "admin", site, transports)
            for socket in ("a1", "a2", "a3"):
                await connect_device(peer, socket, site, "device-a", transports)
            await connect_device(peer, "b1", site, "device-b", transports)
            await peer.disconnect("a2")
            for cycle in range(10):  # device A reconnects over and over, B stays
                await connect_device(peer, f"r{cycle}", site, "device-a", transports)
                await peer.disconnect(f"r{cycle}")
            for socket in ("a1", "a3"):
                await peer.disconnect(socket)
            # A disconnect is the client's word; the server ends the session soon after.
            await wait_until(lambda: _events(peer, "admin", "session:disconnect") == 13)
            (listed,) = await peer.emit_with_ack("admin", "sessions:list", {"app_id": app_id})
            assert [s["device_id"] for s in listed["sessions"]] == ["device-b"]

            # The admin heard each crossing once: A online, B online, A offline — and
            # every session that ended, after it started.
            changes = []
            started: set[str] = set()
            ended: list[str] = []
            for notice in peer.buffered("admin"):
                if notice.kind != "event":
                    continue  # e.g. the upgrade from polling
                (payload,) = notice.args
                if notice.name == "presence:change":
                    changes.append((payload["device_id"], payload["is_online"]))
                elif notice.name == "session:connect":
                    started.add(payload["connection_id"])
                elif notice.name == "session:disconnect":
                    assert payload["connection_id"] in started
                    ended.append(payload["connection_id"])
            assert changes == [("device-a", True), ("device-b", True), ("device-a", False)]
            assert len(started) == 14
            assert len(ended) == len(set(ended)) == 13
