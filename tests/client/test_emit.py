"""Emitting, acknowledgements both ways, binary attachments (real sockets)."""

from __future__ import annotations

import pytest
import trio

from replyhq_trio.client import AckTimeout, ConnectionClosed, DisconnectReason
from replyhq_trio.sansio import LocalProtocolError

from ._fake_server import FakeServer, joined


async def test_emit_frames(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with joined(server, "/client", "/") as (_, peer, (sock, root)):
            await sock.emit("typing:start", {"conversation_id": "c1"})
            await sock.emit("ping")
            await root.emit("hello", 1, "two", None, [3.5])
            await peer.expect(
                '42/client,["typing:start",{"conversation_id":"c1"}]',
                '42/client,["ping"]',
                '42["hello",1,"two",null,[3.5]]',
            )


async def test_emit_with_ack(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with joined(server) as (_, peer, (sock,)), trio.open_nursery() as nursery:

            async def serve() -> None:
                await peer.expect('42/client,0["message:send",{"body":"hi","local_id":"l-1"}]')
                await peer.send('43/client,0[{"success":true,"message":{"id":"m1"}}]')
                await peer.expect('42/client,1["ping"]')
                await peer.send('43/client,1["pong",2]')

            nursery.start_soon(serve)
            reply = await sock.emit_with_ack("message:send", {"body": "hi", "local_id": "l-1"})
            assert reply == ({"success": True, "message": {"id": "m1"}},)
            assert await sock.emit_with_ack("ping") == ("pong", 2)


async def test_emit_with_ack_timeout_leaves_the_connection_usable(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with joined(server) as (_, peer, (sock,)):
            with pytest.raises(AckTimeout) as timed_out:
                await sock.emit_with_ack("slow", timeout=0.05)
            assert isinstance(timed_out.value, trio.TooSlowError)
            await peer.expect('42/client,0["slow"]')
            await peer.send('43/client,0["too late"]')  # dropped

            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.expect, '42/client,1["fast"]')
                nursery.start_soon(peer.send, '43/client,1["ok"]')
                assert await sock.emit_with_ack("fast") == ("ok",)


async def test_emit_with_ack_fails_at_once_when_the_connection_closes(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with joined(server) as (client, peer, (sock,)), trio.open_nursery() as nursery:

            async def close_after_the_emit() -> None:
                await peer.expect('42/client,0["message:send",{}]')
                await peer.close(1001, "going away")

            nursery.start_soon(close_after_the_emit)
            with pytest.raises(ConnectionClosed) as closed:
                await sock.emit_with_ack("message:send", {}, timeout=60)
            assert closed.value.reason is DisconnectReason.SERVER_CLOSE
            assert closed.value.code == 1001
            assert closed.value.detail == "going away"
            assert client.closed is not None
            with pytest.raises(ConnectionClosed):
                await sock.emit("after")


async def test_binary_emit_sends_attachments_as_binary_frames(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with joined(server) as (_, peer, (sock,)):
            await sock.emit("upload", b"\x00\x01", {"name": "a.bin", "data": b"xyz"})
            await peer.expect(
                '452-/client,["upload",{"_placeholder":true,"num":0},'
                '{"name":"a.bin","data":{"_placeholder":true,"num":1}}]',
                b"\x00\x01",
                b"xyz",
            )


async def test_binary_ack_from_the_server(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with joined(server) as (_, peer, (sock,)), trio.open_nursery() as nursery:

            async def serve() -> None:
                await peer.expect('42/client,0["download"]')
                await peer.send('461-/client,0[{"file":{"_placeholder":true,"num":0}}]', b"\xff")

            nursery.start_soon(serve)
            assert await sock.emit_with_ack("download") == ({"file": b"\xff"},)


async def test_server_event_with_an_ack_id_is_answered(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with joined(server) as (_, peer, (sock,)):
            await peer.send('42/client,7["question",1]', '42/client,8["binary?"]')
            question = await sock.receive()
            assert (question.name, question.args, question.ack_id) == ("question", (1,), 7)
            await question.ack("answer", {"n": 2})
            await (await sock.receive()).ack(b"\x01")
            await peer.expect(
                '43/client,7["answer",{"n":2}]',
                '461-/client,8[{"_placeholder":true,"num":0}]',
                b"\x01",
            )


async def test_local_errors(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with joined(server) as (_, peer, (sock,)):
            with pytest.raises(LocalProtocolError):
                await sock.emit("disconnect")
            with pytest.raises(LocalProtocolError):
                await sock.emit("not json", object())
            await peer.send('42/client,["no ack wanted"]')
            event = await sock.receive()
            with pytest.raises(LocalProtocolError):
                await event.ack()
            # Nothing reached the server.
            await sock.emit("last")
            await peer.expect('42/client,["last"]')
