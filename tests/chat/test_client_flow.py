"""The ``/client`` namespace through the official JS client and python-socketio's, in the
three transport modes, on SQLite and on PostgreSQL (CONTRACT.md "Namespace /client")."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from ..interop._peers import PEER_KINDS, TRANSPORT_MODES, Peer, open_peer
from ._site import PATH, TYPING_TIMEOUT, Site, conforms, connect_device, open_site

pytestmark = [
    pytest.mark.parametrize("mode", list(TRANSPORT_MODES)),
    pytest.mark.parametrize("kind", PEER_KINDS),
]


@pytest.fixture
async def site(db_url: str) -> Any:
    async with open_site(db_url) as opened:
        yield opened


async def _quiet(peer: Peer, socket: str) -> list[str]:
    """The names of the events ``socket`` got that no test took yet, after a round trip
    (a ``ping`` ack) has flushed whatever the server sent before it."""
    assert await peer.emit_with_ack(socket, "ping") == ["pong"]
    return [n.name or "" for n in peer.buffered(socket) if n.kind == "event"]


async def _in_a_conversation(
    peer: Peer, site: Site, sockets: tuple[str, ...], transports: tuple[str, ...]
) -> str:
    """Connect ``sockets`` as one device that has a conversation; they are put in it."""
    cid: str = (await site.new_conversation("phone"))["id"]
    for socket in sockets:
        await connect_device(peer, socket, site, "phone", transports)
        joined = await peer.next_event(socket, "conversation:joined")
        assert joined.args[0]["conversation_id"] == cid
    return cid


async def test_handshake_refusals(kind: str, mode: str, site: Site) -> None:
    transports = TRANSPORT_MODES[mode]
    with trio.fail_after(30):
        async with open_peer(kind) as peer:  # type: ignore[arg-type]
            missing = await peer.connect(
                "a", site.url, "/client", {"app_id": site.app_id}, transports, path=PATH
            )
            assert (missing.connected, missing.message) == (False, "MISSING_PARAMS")
            none = await peer.connect("b", site.url, "/client", None, transports, path=PATH)
            assert (none.connected, none.message) == (False, "MISSING_PARAMS")
            wrong = {**site.auth("d1"), "api_key": "not-the-key"}
            refused = await peer.connect("c", site.url, "/client", wrong, transports, path=PATH)
            assert (refused.connected, refused.message) == (False, "INVALID_CREDENTIALS")
            other_app = {**site.auth("d1"), "app_id": "app_unknown"}
            refused = await peer.connect("d", site.url, "/client", other_app, transports, path=PATH)
            assert (refused.connected, refused.message) == (False, "INVALID_CREDENTIALS")
            await connect_device(peer, "e", site, "d1", transports)


async def test_conversations_messages_and_receipts(kind: str, mode: str, site: Site) -> None:
    transports = TRANSPORT_MODES[mode]
    with trio.fail_after(60):
        async with open_peer(kind) as peer:  # type: ignore[arg-type]
            # A device without a conversation is joined to none.
            await connect_device(peer, "a", site, "phone", transports)
            assert await _quiet(peer, "a") == []

            conversation = await site.new_conversation("phone")
            cid = conversation["id"]
            assert await peer.emit_with_ack("a", "conversation:join", {"conversation_id": cid}) == [
                {"success": True, "last_message_id": None}
            ]
            joined = await peer.next_event("a", "conversation:joined")
            assert joined.args == [{"conversation_id": cid, "last_message_id": None}]

            # A second connection of the device is put in its latest conversation.
            await connect_device(peer, "b", site, "phone", transports)
            auto = await peer.next_event("b", "conversation:joined")
            assert auto.args == [{"conversation_id": cid, "last_message_id": None}]

            send = {"conversation_id": cid, "body": "hello", "local_id": "l-1"}
            (ack,) = await peer.emit_with_ack("a", "message:send", send)
            conforms("/client", "client_to_server", "message:send", ack, "ack")
            message = ack["message"]
            assert ack["success"] is True
            assert {k: message[k] for k in ("local_id", "conversation_id", "body", "sender")} == {
                "local_id": "l-1",
                "conversation_id": cid,
                "body": "hello",
                "sender": "user",
            }
            assert message["status"] == "sent"
            for socket in ("a", "b"):  # the sender's own connection too
                new = await peer.next_event(socket, "message:new")
                assert new.args == [conforms("/client", "server_to_client", "message:new", message)]

            # The same local_id again: the same message, and no second broadcast.
            assert await peer.emit_with_ack("a", "message:send", send) == [ack]
            send2 = {"conversation_id": cid, "body": "second", "local_id": "l-2"}
            (ack2,) = await peer.emit_with_ack("b", "message:send", send2)
            assert ack2["message"]["id"] > message["id"]
            for socket in ("a", "b"):
                assert (await peer.next_event(socket, "message:new")).args == [ack2["message"]]

            # An agent answers (REST); the device's receipts move that message's status
            # forward and tell the room.
            status_code, answer = await site.rest(
                "POST",
                f"/v1/conversations/{cid}/messages",
                {"body": "hi, how can we help?", "local_id": "agent-1"},
                headers=site.agent_headers(),
            )
            assert (status_code, answer["sender"], answer["status"]) == (201, "agent", "sent")
            for socket in ("a", "b"):
                assert (await peer.next_event(socket, "message:new")).args == [answer]
            receipt = {"conversation_id": cid, "message_id": answer["id"]}
            assert await peer.emit_with_ack("b", "message:delivered", receipt) == [
                {"success": True}
            ]
            for socket in ("a", "b"):
                status = await peer.next_event(socket, "message:status")
                (payload,) = status.args
                conforms("/client", "server_to_client", "message:status", payload)
                assert (payload["message_id"], payload["status"]) == (answer["id"], "delivered")
            assert await peer.emit_with_ack("b", "message:read", receipt) == [{"success": True}]
            assert (await peer.next_event("a", "message:status")).args[0]["status"] == "read"
            # Never backwards, and a repeat tells no one.
            assert await peer.emit_with_ack("b", "message:delivered", receipt) == [
                {"success": True}
            ]
            assert "message:status" not in await _quiet(peer, "a")
            # Receipts are the other side's: the device reading its own message moves
            # nothing.
            own = {"conversation_id": cid, "message_id": message["id"]}
            assert await peer.emit_with_ack("b", "message:read", own) == [{"success": True}]
            assert "message:status" not in await _quiet(peer, "a")

            # REST sees what was sent, in order, and its posts reach the sockets.
            history = await site.history(cid, "phone")
            assert [(m["id"], m["status"]) for m in history] == [
                (message["id"], "sent"),
                (ack2["message"]["id"], "sent"),
                (answer["id"], "read"),
            ]
            status_code, posted = await site.rest(
                "POST",
                f"/v1/conversations/{cid}/messages",
                {"body": "from rest", "local_id": "r-1"},
                headers=site.device_headers("phone"),
            )
            assert status_code == 201
            for socket in ("a", "b"):
                assert (await peer.next_event(socket, "message:new")).args == [posted]

            # A new connection is told where the conversation stands.
            await connect_device(peer, "c", site, "phone", transports)
            latest = await peer.next_event("c", "conversation:joined")
            assert latest.args == [{"conversation_id": cid, "last_message_id": posted["id"]}]


async def test_one_conversation_at_a_time_and_only_its_own(
    kind: str, mode: str, site: Site
) -> None:
    transports = TRANSPORT_MODES[mode]
    with trio.fail_after(60):
        async with open_peer(kind) as peer:  # type: ignore[arg-type]
            first = (await site.new_conversation("phone"))["id"]
            second = (await site.new_conversation("phone"))["id"]
            theirs = (await site.new_conversation("someone-else"))["id"]
            await connect_device(peer, "a", site, "phone", transports)
            await connect_device(peer, "b", site, "phone", transports)
            for socket in ("a", "b"):  # the latest one
                joined = await peer.next_event(socket, "conversation:joined")
                assert joined.args[0]["conversation_id"] == second

            not_found = [{"success": False, "error": "CONVERSATION_NOT_FOUND"}]
            for target in (theirs, "conv_does_not_exist"):
                (ack,) = await peer.emit_with_ack(
                    "a", "conversation:join", {"conversation_id": target}
                )
                assert {k: ack[k] for k in ("success", "error")} == not_found[0]
                send = {"conversation_id": target, "body": "x", "local_id": "nope"}
                (ack,) = await peer.emit_with_ack("a", "message:send", send)
                assert ack["error"] == "CONVERSATION_NOT_FOUND"
                await peer.emit("a", "typing:start", {"conversation_id": target})
                error = await peer.next_event("a", "error")
                assert error.args[0]["code"] == "CONVERSATION_NOT_FOUND"
                conforms("/client", "server_to_client", "error", error.args[0])

            # Joining the first conversation leaves the second: b's message in the
            # second no longer reaches a.
            assert await peer.emit_with_ack(
                "a", "conversation:join", {"conversation_id": first}
            ) == [{"success": True, "last_message_id": None}]
            send = {"conversation_id": second, "body": "still here?", "local_id": "s-1"}
            (ack,) = await peer.emit_with_ack("b", "message:send", send)
            assert (await peer.next_event("b", "message:new")).args == [ack["message"]]
            assert "message:new" not in await _quiet(peer, "a")
            # A device may still send into its own conversation it is not in.
            (ack,) = await peer.emit_with_ack("a", "message:send", {**send, "local_id": "s-2"})
            assert (await peer.next_event("b", "message:new")).args == [ack["message"]]
            assert await peer.emit_with_ack(
                "b", "conversation:leave", {"conversation_id": second}
            ) == [{"success": True}]
            send3 = {"conversation_id": second, "body": "gone", "local_id": "s-3"}
            assert (await peer.emit_with_ack("a", "message:send", send3))[0]["success"]
            assert "message:new" not in await _quiet(peer, "b")


async def test_typing_reaches_the_others_and_stops_by_itself(
    kind: str, mode: str, site: Site
) -> None:
    transports = TRANSPORT_MODES[mode]
    with trio.fail_after(60):
        async with open_peer(kind) as peer:  # type: ignore[arg-type]
            cid = await _in_a_conversation(peer, site, ("typist", "other"), transports)

            expected = {"conversation_id": cid, "device_id": "phone"}
            await peer.emit("typist", "typing:start", {"conversation_id": cid})
            started = await peer.next_event("other", "user:typing")
            assert started.args == [
                conforms(
                    "/client", "server_to_client", "user:typing", {**expected, "is_typing": True}
                )
            ]
            await peer.emit("typist", "typing:stop", {"conversation_id": cid})
            stopped = await peer.next_event("other", "user:typing")
            assert stopped.args == [{**expected, "is_typing": False}]

            # Silence after a start: it stops by itself, once.
            await peer.emit("typist", "typing:start", {"conversation_id": cid})
            assert (await peer.next_event("other", "user:typing")).args[0]["is_typing"] is True
            with trio.fail_after(TYPING_TIMEOUT + 5):
                expired = await peer.next_event("other", "user:typing", timeout=TYPING_TIMEOUT + 5)
            assert expired.args == [{**expected, "is_typing": False}]
            # The typist never hears its own typing.
            assert "user:typing" not in await _quiet(peer, "typist")
            assert "user:typing" not in await _quiet(peer, "other")


async def test_bad_payloads_and_unknown_events_leave_the_socket_usable(
    kind: str, mode: str, site: Site
) -> None:
    transports = TRANSPORT_MODES[mode]
    with trio.fail_after(60):
        async with open_peer(kind) as peer:  # type: ignore[arg-type]
            cid = await _in_a_conversation(peer, site, ("a",), transports)

            (ack,) = await peer.emit_with_ack("a", "message:send", {"conversation_id": cid})
            conforms("/client", "client_to_server", "message:send", ack, "ack")
            assert (ack["success"], ack["error"], ack["field"]) == (
                False,
                "INVALID_PAYLOAD",
                "body",
            )
            (ack,) = await peer.emit_with_ack(
                "a", "message:send", {"conversation_id": cid, "body": "", "local_id": "x"}
            )
            assert (ack["error"], ack["field"]) == ("INVALID_PAYLOAD", "body")
            (ack,) = await peer.emit_with_ack("a", "conversation:join", "not an object")
            assert ack["error"] == "INVALID_PAYLOAD"
            assert "field" not in ack  # the payload as a whole is wrong

            # Without an ack the error comes as an event.
            await peer.emit("a", "typing:start", {"conversation": cid})
            error = await peer.next_event("a", "error")
            assert error.args[0]["code"] == "INVALID_PAYLOAD"
            assert error.args[0]["field"] == "conversation_id"

            assert await peer.emit_with_ack("a", "no:such:event", 1) == [
                {
                    "success": False,
                    "error": "UNKNOWN_EVENT",
                    "message": "unknown event 'no:such:event'",
                }
            ]
            await peer.emit("a", "no:such:event")
            unknown = await peer.next_event("a", "error")
            assert unknown.args == [
                conforms(
                    "/client",
                    "server_to_client",
                    "error",
                    {"code": "UNKNOWN_EVENT", "message": "unknown event 'no:such:event'"},
                )
            ]

            # Still usable.
            send = {"conversation_id": cid, "body": "fine", "local_id": "ok-1"}
            assert (await peer.emit_with_ack("a", "message:send", send))[0]["success"] is True
            assert (await peer.state("a")).connected
