"""Nothing lost, nothing doubled: replays of a ``local_id`` from many connections at once
yield one message, and a device whose connection is cut mid-stream catches up with
``last_message_id`` and ``GET ...?after=`` without a gap or a duplicate."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator

import orjson
import pytest
import trio

from .._proxy import TcpProxy
from .._raw import open_websocket
from .._waiting import wait_until
from ..interop._peers import TRANSPORT_MODES, WEBSOCKET, Peer, open_peer
from ._site import PATH, Site, connect_device, open_site


@pytest.fixture
async def site(db_url: str) -> AsyncIterator[Site]:
    async with open_site(db_url) as opened:
        yield opened


@pytest.mark.parametrize("kind", ["js", "python"])
async def test_replays_from_many_connections_make_one_message(kind: str, site: Site) -> None:
    cid = (await site.new_conversation("phone"))["id"]
    route = f"/v1/conversations/{cid}/messages"
    local_ids = [f"retry-{n}" for n in range(15)]
    acks: dict[str, list[str]] = {local_id: [] for local_id in local_ids}
    with trio.fail_after(60):
        async with open_peer(kind) as peer:  # type: ignore[arg-type]
            sockets = ["a", "b", "c"]
            for socket in sockets:
                await connect_device(peer, socket, site, "phone", WEBSOCKET)
                await peer.next_event(socket, "conversation:joined")

            async def by_socket(socket: str, local_id: str) -> None:
                send = {"conversation_id": cid, "body": f"body of {local_id}", "local_id": local_id}
                (ack,) = await peer.emit_with_ack(socket, "message:send", send)
                assert ack["success"] is True, ack
                acks[local_id].append(ack["message"]["id"])

            async def by_rest(local_id: str) -> None:
                status, message = await site.rest(
                    "POST",
                    route,
                    {"body": f"body of {local_id}", "local_id": local_id},
                    headers=site.device_headers("phone"),
                )
                assert status in (200, 201), message
                acks[local_id].append(message["id"])

            async with trio.open_nursery() as nursery:
                for local_id in local_ids:  # every local_id four times at once
                    for socket in sockets:
                        nursery.start_soon(by_socket, socket, local_id)
                    nursery.start_soon(by_rest, local_id)

            assert all(len(set(ids)) == 1 and len(ids) == 4 for ids in acks.values()), acks
            history = await site.history(cid, "phone")
            assert sorted(m["local_id"] for m in history) == sorted(local_ids)
            # Each socket got each message exactly once.
            assert await peer.emit_with_ack("a", "ping") == ["pong"]
            for socket in sockets:
                assert await peer.emit_with_ack(socket, "ping") == ["pong"]
                news = [n for n in peer.buffered(socket) if n.name == "message:new"]
                assert sorted(n.args[0]["id"] for n in news) == sorted(m["id"] for m in history)


@pytest.mark.parametrize("mode", ["websocket", "polling"])
@pytest.mark.parametrize("kind", ["js", "python"])
async def test_a_cut_connection_catches_up_without_gap_or_duplicate(
    kind: str, mode: str, site: Site
) -> None:
    cid = (await site.new_conversation("phone"))["id"]
    total, cut_after = 120, 40
    posted: list[str] = []
    seen: list[str] = []
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            proxy = TcpProxy(nursery, site.port)
            await proxy.up()
            try:
                async with open_peer(kind) as peer:  # type: ignore[arg-type]
                    await _cut_mid_stream(
                        peer,
                        proxy,
                        site,
                        cid,
                        TRANSPORT_MODES[mode],
                        total,
                        cut_after,
                        posted,
                        seen,
                    )
            finally:
                nursery.cancel_scope.cancel()
        # The agent is done: catch up from the last message seen before the cut.
        caught_up = await site.history(cid, "phone", after=seen[-1])
        recovered = seen + [m["id"] for m in caught_up]
        assert recovered == posted  # every message, in order, once
        assert len(set(recovered)) == total


async def _cut_mid_stream(
    peer: Peer,
    proxy: TcpProxy,
    site: Site,
    cid: str,
    transports: tuple[str, ...],
    total: int,
    cut_after: int,
    posted: list[str],
    seen: list[str],
) -> None:
    result = await peer.connect(
        "device",
        f"http://127.0.0.1:{proxy.port}",
        "/client",
        site.auth("phone"),
        transports,
        path=PATH,
        reconnection=True,
    )
    assert result.connected, result
    await peer.next_event("device", "conversation:joined")

    cut, written_while_away, back = trio.Event(), trio.Event(), trio.Event()

    async def agent() -> None:
        # An agent writes over REST (not through the proxy): before the cut, while the
        # device is away, and after it is back.
        for n in range(total):
            if n == total // 2:
                await cut.wait()
            if n == total * 3 // 4:
                written_while_away.set()
                await back.wait()
            status, message = await site.rest(
                "POST",
                f"/v1/conversations/{cid}/messages",
                {"body": f"update {n}", "local_id": f"agent-{n}"},
                headers=site.agent_headers(),
            )
            assert status == 201, message
            posted.append(message["id"])

    async with trio.open_nursery() as flow:
        flow.start_soon(agent)
        while len(seen) < cut_after:
            notice = await peer.next_event("device", "message:new", timeout=30)
            seen.append(notice.args[0]["id"])
        await proxy.down()
        await peer.next_event("device", kind="disconnect", timeout=30)
        # What arrived before the disconnect was seen too.
        seen.extend(n.args[0]["id"] for n in peer.buffered("device") if n.name == "message:new")
        cut.set()
        await written_while_away.wait()
        await proxy.up()
        await peer.next_event("device", kind="connect", timeout=30)
        rejoined = await peer.next_event("device", "conversation:joined")
        assert rejoined.args[0]["conversation_id"] == cid
        back.set()


async def test_message_new_reaches_the_room_in_id_order(site: Site) -> None:
    """Six writers at once (a device and an agent, over REST): the room sees every
    message in id order, so "the last id I have" is always a safe sync cursor."""
    cid = (await site.new_conversation("phone"))["id"]
    writers, each = 6, 40
    with trio.fail_after(120):
        async with open_peer("python") as peer:
            await connect_device(peer, "listener", site, "phone", WEBSOCKET)
            await peer.next_event("listener", "conversation:joined")

            async def writer(n: int) -> None:
                headers = site.agent_headers() if n % 2 else site.device_headers("phone")
                for i in range(each):
                    status, _ = await site.rest(
                        "POST",
                        f"/v1/conversations/{cid}/messages",
                        {"body": f"{n}-{i}", "local_id": f"{n}-{i}"},
                        headers=headers,
                    )
                    assert status == 201

            async with trio.open_nursery() as nursery:
                for n in range(writers):
                    nursery.start_soon(writer, n)
            seen = [
                (await peer.next_event("listener", "message:new")).args[0]["id"]
                for _ in range(writers * each)
            ]
    assert seen == sorted(seen)
    assert seen == [m["id"] for m in await site.history(cid, "phone")]


async def test_a_message_stored_is_broadcast_even_if_its_sender_vanishes(site: Site) -> None:
    """Phones that send and lose their network at once (a TCP reset, no goodbye), cut
    at many different moments: every message that was stored reaches the room."""
    cid = (await site.new_conversation("phone"))["id"]
    target = f"{PATH}/?EIO=4&transport=websocket"

    async def send_and_vanish(n: int, go: trio.Event) -> None:
        async with open_websocket(site.port, target) as ws:
            await ws.receive()  # the open packet
            await ws.send_text("40/client," + orjson.dumps(site.auth("phone")).decode())
            while "conversation:joined" not in str(await ws.receive_skipping_pings()):
                pass
            await go.wait()
            send = {"conversation_id": cid, "body": f"m{n}", "local_id": f"l{n}"}
            await ws.send_text("42/client,1" + orjson.dumps(["message:send", send]).decode())
            for _ in range(n % 12):  # let the server get that much further first
                await trio.lowlevel.checkpoint()
            ws.stream.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )

    with trio.fail_after(120):
        async with open_peer("python") as peer:
            await connect_device(peer, "listener", site, "phone", WEBSOCKET)
            await peer.next_event("listener", "conversation:joined")
            for round_ in range(4):
                go = trio.Event()
                async with trio.open_nursery() as nursery:
                    for n in range(round_ * 48, round_ * 48 + 48):
                        nursery.start_soon(send_and_vanish, n, go)
                    await wait_until(lambda: len(site.server.sessions) == 49)
                    go.set()
            # Every vanished session is torn down, its handlers done.
            await wait_until(lambda: len(site.server.sessions) == 1)
            assert await peer.emit_with_ack("listener", "ping") == ["pong"]
            seen = {
                n.args[0]["local_id"] for n in peer.buffered("listener") if n.name == "message:new"
            }
            stored = {m["local_id"] for m in await site.history(cid, "phone")}
    assert stored, "no message was stored: the test cut too early to mean anything"
    assert stored == seen
