"""Opening a connection, joining namespaces, refusals and closing (real sockets)."""

from __future__ import annotations

import gc

import pytest
import trio
import trio_websocket

from replyhq_trio.client import (
    ConnectFailed,
    ConnectionClosed,
    ConnectRefused,
    DisconnectReason,
    engineio_url,
    open_client,
)
from replyhq_trio.sansio import LocalProtocolError

from ._fake_server import OPEN_PACKET, FakeServer, Peer, joined


@pytest.mark.parametrize(
    ("url", "path", "expected"),
    [
        ("http://h:1", "/v1/socket.io", "ws://h:1/v1/socket.io/?EIO=4&transport=websocket"),
        ("https://h", "/socket.io/", "wss://h/socket.io/?EIO=4&transport=websocket"),
        ("ws://h:1/", "/v1/socket.io", "ws://h:1/v1/socket.io/?EIO=4&transport=websocket"),
        ("wss://h?t=1", "/x", "wss://h/x/?EIO=4&transport=websocket&t=1"),
    ],
)
def test_engineio_url(url: str, path: str, expected: str) -> None:
    assert engineio_url(url, path) == expected


@pytest.mark.parametrize("url", ["ftp://h", "http://h/client", "h:1"])
def test_engineio_url_refuses(url: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is not the point
        engineio_url(url)


async def test_handshake(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with open_client(server.url, headers={"X-Trace": "t-1"}) as client:
            peer = await server.accept()
            assert peer.path == "/v1/socket.io/?EIO=4&transport=websocket"
            assert peer.headers["x-trace"] == "t-1"
            assert client.sid == "eio-1"
            assert client.open_packet == OPEN_PACKET
            assert client.closed is None


async def test_connect_sends_auth_and_reads_the_namespace_sid(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with open_client(server.url) as client:
            peer = await server.accept()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.accept_namespace, "/client", "ns-7")
                sock = await client.connect("/client", {"app_id": "a1", "device_id": "d1"})
            assert sock.sid == "ns-7"
            assert sock.namespace == "/client"
            assert dict(client.sockets) == {"/client": sock}

            # The default namespace is written without a name, and no auth means none.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.accept_namespace, "/", "ns-8")
                root = await client.connect()
            assert root.sid == "ns-8"


async def test_connect_sends_auth_literally(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with open_client(server.url) as client, trio.open_nursery() as nursery:
            peer = await server.accept()
            nursery.start_soon(client.connect, "/admin", {"app_id": "a", "admin_token": "t"})
            await peer.expect('40/admin,{"app_id":"a","admin_token":"t"}')
            await peer.send('40/admin,{"sid":"x"}')


async def test_connect_refused(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with open_client(server.url) as client:
            peer = await server.accept()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.send, '44/client,{"message":"INVALID_CREDENTIALS"}')
                with pytest.raises(ConnectRefused) as refused:
                    await client.connect("/client", {"app_id": "a"})
            await peer.expect('40/client,{"app_id":"a"}')
            assert refused.value.message == "INVALID_CREDENTIALS"
            assert refused.value.data is None

            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    peer.send, '44/client,{"message":"RATE_LIMITED","data":{"retry_after_ms":10}}'
                )
                with pytest.raises(ConnectRefused) as refused:
                    await client.connect("/client", {"app_id": "a"})
            assert refused.value.message == "RATE_LIMITED"
            assert refused.value.data == {"retry_after_ms": 10}

            # A refusal leaves the connection usable.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.accept_namespace)
                await client.connect("/client")


async def test_connect_timeout_then_a_late_acceptance_is_left(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with open_client(server.url) as client:
            peer = await server.accept()
            with pytest.raises(ConnectFailed):
                await client.connect("/client", timeout=0.05)
            await peer.expect("40/client,")
            # Still waiting for that reply: joining again now would be a second CONNECT.
            with pytest.raises(LocalProtocolError):
                await client.connect("/client")
            await peer.send('40/client,{"sid":"late"}')
            await peer.expect("41/client,")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.accept_namespace)
                await client.connect("/client")


async def test_connect_twice_is_a_local_error(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with open_client(server.url) as client:
            peer = await server.accept()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.accept_namespace)
                await client.connect("/client")
            with pytest.raises(LocalProtocolError):
                await client.connect("/client")
            with pytest.raises(LocalProtocolError):
                await client.connect("client")


async def test_leaving_closes_the_websocket_with_1000(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with open_client(server.url):
            peer = await server.accept()
        assert await peer.close_code() == 1000


async def test_an_error_in_the_body_comes_out_unwrapped(server: FakeServer) -> None:
    peers: list[Peer] = []

    async def fail() -> None:
        async with open_client(server.url):
            peers.append(await server.accept())
            raise KeyError("mine")

    with trio.fail_after(5):
        with pytest.raises(KeyError):
            await fail()
        assert await peers[0].close_code() == 1000


async def test_cancelled_client_still_closes_cleanly(server: FakeServer) -> None:
    with trio.fail_after(5):
        with trio.CancelScope() as scope:
            async with open_client(server.url):
                peer = await server.accept()
                scope.cancel()
                await trio.sleep_forever()
        assert await peer.close_code() == 1000


async def test_refused_upgrade_fails_to_connect(server: FakeServer) -> None:
    server.reject_status = 403
    with trio.fail_after(5), pytest.raises(ConnectFailed) as failed:
        async with open_client(server.url):
            pytest.fail("connected")
    assert isinstance(failed.value.__cause__, trio_websocket.ConnectionRejected)
    del failed
    gc.collect()  # trio-websocket alone would leak the stream here (ResourceWarning)


async def test_no_open_packet_fails_to_connect(server: FakeServer) -> None:
    server.send_open = False
    with trio.fail_after(5), pytest.raises(ConnectFailed):
        async with open_client(server.url, connect_timeout=0.1):
            pytest.fail("connected")


async def test_a_bad_open_packet_fails_to_connect(server: FakeServer) -> None:
    server.open_packet = {"sid": "x"}
    with trio.fail_after(5), pytest.raises(ConnectFailed):
        async with open_client(server.url):
            pytest.fail("connected")


async def test_nothing_listening_fails_to_connect() -> None:
    with trio.fail_after(5):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        await listeners[0].aclose()  # a port that was just free
        with pytest.raises(ConnectFailed) as failed:
            async with open_client(f"http://127.0.0.1:{port}"):
                pytest.fail("connected")
        assert isinstance(failed.value.__cause__, OSError)


async def test_protocol_error_closes_with_1002(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with open_client(server.url) as client:
            peer = await server.accept()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.accept_namespace)
                sock = await client.connect("/client")
            await peer.send("49/client,[]")  # no Socket.IO packet type 9
            with pytest.raises(ConnectionClosed) as ended:
                await sock.receive()
            assert (ended.value.reason, ended.value.code) == (DisconnectReason.PROTOCOL_ERROR, 1002)
            assert client.closed is not None
        assert await peer.close_code() == 1002


async def test_a_packet_over_a_limit_closes_with_1008(server: FakeServer) -> None:
    with trio.fail_after(5):
        async with joined(server) as (_, peer, (sock,)):
            await peer.send('42/client,["deep",' + "[" * 40 + "]" * 40 + "]")
            with pytest.raises(ConnectionClosed) as ended:
                await sock.receive()
            assert (ended.value.reason, ended.value.code) == (DisconnectReason.PROTOCOL_ERROR, 1008)
        assert await peer.close_code() == 1008
