"""When the store goes away the server says so at once and recovers when it returns;
when the network to it is cut (nothing comes back) it says so within the store's timeout
and still shuts down in time; at shutdown every device is told when to come back, spread
over a window."""

from __future__ import annotations

from socket import SO_RCVBUF, SOL_SOCKET
from urllib.parse import urlsplit, urlunsplit

import orjson
import trio

from replyhq_trio.backends import PostgresStore

from .._proxy import TcpProxy, open_stall_proxy
from .._raw import http, websocket_handshake
from .._waiting import wait_until
from ..interop._peers import POLLING, SERVER_DISCONNECT, WEBSOCKET, open_peer
from ._site import PATH, conforms, connect_device, open_site


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}"))


async def test_an_unreachable_store_is_reported_at_once_and_recovered_from(pg_url: str) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            proxy = TcpProxy(nursery, urlsplit(pg_url).port or 5432)
            await proxy.up()
            try:
                async with (
                    open_site(_via(pg_url, proxy.port), store_timeout=1.0) as site,
                    open_peer("js") as peer,
                ):
                    cid = (await site.new_conversation("phone"))["id"]
                    await connect_device(peer, "a", site, "phone", WEBSOCKET)
                    await peer.next_event("a", "conversation:joined")
                    send = {"conversation_id": cid, "body": "hi", "local_id": "l-1"}

                    await proxy.down()
                    with trio.fail_after(10):  # the store's timeout, not a hang
                        (ack,) = await peer.emit_with_ack("a", "message:send", send)
                    assert (ack["success"], ack["error"]) == (False, "STORE_UNAVAILABLE")
                    conforms("/client", "client_to_server", "message:send", ack, "ack")
                    status, body = await site.rest(
                        "POST",
                        f"/v1/conversations/{cid}/messages",
                        {"body": "hi", "local_id": "r-1"},
                        headers=site.device_headers("phone"),
                    )
                    assert (status, body["error"]["code"]) == (503, "STORE_UNAVAILABLE")
                    ready = await http(site.port, "GET", "/readyz")
                    assert ready.status == 503
                    assert orjson.loads(ready.body)["checks"]["store"] == "unavailable"
                    assert (await http(site.port, "GET", "/healthz")).status == 200
                    refused = await peer.connect(
                        "b", site.url, "/client", site.auth("phone"), WEBSOCKET, path=PATH
                    )
                    assert (refused.connected, refused.message) == (False, "STORE_UNAVAILABLE")
                    assert (await peer.state("a")).connected  # the socket stays usable

                    await proxy.up()
                    with trio.fail_after(20):  # the pool reconnects on its own
                        while True:
                            (ack,) = await peer.emit_with_ack("a", "message:send", send)
                            if ack["success"]:
                                break
                            assert ack["error"] == "STORE_UNAVAILABLE"
                    assert (await peer.next_event("a", "message:new")).args == [ack["message"]]
                    assert (await http(site.port, "GET", "/readyz")).status == 200
                    assert [m["local_id"] for m in await site.history(cid, "phone")] == ["l-1"]
            finally:
                nursery.cancel_scope.cancel()


async def test_a_partitioned_store_fails_sends_in_time_and_does_not_hold_up_shutdown(
    pg_url: str,
) -> None:
    """The network to PostgreSQL black-holes packets (no reset): a send gets its
    STORE_UNAVAILABLE ack within the store's timeout (plus a margin), and a shutdown that
    begins with a send still waiting on the store ends its sessions within the grace
    period (plus a margin), then closes the store, still cut off, in bounded time."""
    timeout, grace, margin = 1.0, 1.0, 1.5
    with trio.fail_after(60):
        async with open_stall_proxy(urlsplit(pg_url).port or 5432) as proxy:
            async with (
                open_site(
                    _via(pg_url, proxy.port), store_timeout=timeout, grace_period=grace
                ) as site,
                open_peer("js") as peer,
            ):
                store = site.store
                assert isinstance(store, PostgresStore)
                cid = (await site.new_conversation("phone"))["id"]
                await connect_device(peer, "a", site, "phone", WEBSOCKET)
                await peer.next_event("a", "conversation:joined")

                proxy.stall()
                send = {"conversation_id": cid, "body": "hi", "local_id": "l-1"}
                start = trio.current_time()
                (ack,) = await peer.emit_with_ack("a", "message:send", send)
                assert trio.current_time() - start < timeout + margin
                assert (ack["success"], ack["error"]) == (False, "STORE_UNAVAILABLE")
                conforms("/client", "client_to_server", "message:send", ack, "ack")

                writes = store.batched_writes
                await peer.emit("a", "message:send", {**send, "local_id": "l-2"})
                await wait_until(lambda: store.batched_writes > writes)  # waiting on the store
                start = trio.current_time()
                site.server.shutdown()
                await wait_until(lambda: not site.server.sessions, timeout=grace + 10)
                assert trio.current_time() - start < grace + margin
            # the server is done and the store closed: bounded, with the network still cut
            assert trio.current_time() - start < grace + margin + timeout + 2.0
            assert store.pool_stats() == (0, 0)


async def test_shutdown_tells_every_device_when_to_come_back(db_url: str) -> None:
    with trio.fail_after(60):
        async with open_site(db_url) as site, open_peer("js") as js, open_peer("python") as py:
            clients = [(js, f"js{n}", WEBSOCKET) for n in range(4)]
            clients += [(py, f"py{n}", POLLING) for n in range(4)]
            for peer, socket, transports in clients:
                await connect_device(peer, socket, site, f"device-{socket}", transports)
            site.server.shutdown()
            delays = []
            for peer, socket, _ in clients:
                notice = await peer.next_event(socket, "server:shutdown")
                (payload,) = notice.args
                conforms("/client", "server_to_client", "server:shutdown", payload)
                delays.append(payload["reconnect_delay_ms"])
                bye = await peer.next_event(socket, kind="disconnect")
                assert bye.reason == SERVER_DISCONNECT[peer.kind]
            assert all(5_000 <= delay <= 15_000 for delay in delays), delays
            # Spread over the window, not bunched: one delay in each eighth of it.
            assert sorted((delay - 5_000) * 8 // 10_000 for delay in delays) == list(range(8))


async def test_a_client_that_stopped_reading_does_not_hold_up_the_notices(db_url: str) -> None:
    """One phone stops reading while its acks pile up past the backlog bound; at
    shutdown every other device still gets its notice at once."""
    target = "/v1/socket.io/?EIO=4&transport=websocket"
    with trio.fail_after(90):
        async with open_site(db_url, grace_period=5) as site, open_peer("js") as peer:
            healthy = [f"h{n}" for n in range(6)]
            for socket in healthy[:3]:
                await connect_device(peer, socket, site, f"device-{socket}", WEBSOCKET)
            before = set(site.server.sessions)
            async with await trio.open_tcp_stream("127.0.0.1", site.port) as stream:
                stream.socket.setsockopt(SOL_SOCKET, SO_RCVBUF, 4096)
                stalled = await websocket_handshake(stream, target)
                await stalled.receive()
                await stalled.send_text("40/client," + orjson.dumps(site.auth("stalled")).decode())
                cid = (await site.new_conversation("stalled"))["id"]
                (session,) = set(site.server.sessions) - before
                body = "\N{GRINNING FACE}" * 10_000  # 40 kB a message, and in its ack
                for n in range(160):  # acks it will never read: over the 4 MiB bound
                    send = {"conversation_id": cid, "body": body, "local_id": f"s{n}"}
                    frame = orjson.dumps(["message:send", send]).decode()
                    # Bounded, in case the server stops reading it too; a send cut off
                    # mid-frame leaves a partial frame, which nothing may follow.
                    with trio.move_on_after(10) as cut:
                        await stalled.send_text(f"42/client,{n}{frame}")
                    if cut.cancelled_caught:
                        break
                await wait_until(lambda: session.backlog_bytes > 4 * 1024 * 1024, timeout=30)
                for socket in healthy[3:]:  # after it in the order of the notices
                    await connect_device(peer, socket, site, f"device-{socket}", WEBSOCKET)
                site.server.shutdown()
                with trio.fail_after(2):  # not the grace period: at once
                    for socket in healthy:
                        await peer.next_event(socket, "server:shutdown")
