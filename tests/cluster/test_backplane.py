"""The Redis backplane between servers of one process, on the real Redis (or a private
``redis-server`` the test stops): broadcasts asking for acks across nodes, a node that
goes deaf and notices, Redis restarting, and what is not the adapter's format."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import orjson
import pytest
import trio

from replyhq_trio.backends.redis_backplane import RedisBackplane, RedisBackplaneConfig
from replyhq_trio.config import ServerConfig
from replyhq_trio.hub import Hub, Socket
from replyhq_trio.ports import BackplaneUnavailable
from replyhq_trio.server import Server

from .. import _redis
from .._raw import RawWebSocket, open_websocket
from .._serving import serving
from .._waiting import wait_for, wait_until

WEBSOCKET = "/v1/socket.io/?EIO=4&transport=websocket"
#: Quick probes, so that a deaf node notices within a second.
FAST = RedisBackplaneConfig(probe_interval=0.1, probe_misses=3, reconnect_max=0.2)


def _server(redis_url: str, key: str, config: RedisBackplaneConfig = FAST) -> Server:
    backplane = RedisBackplane(redis_url, config=attrs_evolve(config, key=key))
    server = Server(
        ServerConfig(port=0, grace_period=0.05, close_timeout=0.2),
        hub=Hub(backplane=backplane),
    )
    chat = server.namespace("/chat")

    @chat.on_connected
    async def enter(socket: Socket) -> None:
        socket.join("lobby")

    @chat.on("say")
    async def say(socket: Socket, args: tuple[Any, ...]) -> None:
        await server.hub.emit("/chat", "said", *args, to="lobby", skip=[socket])

    @chat.on("poll")
    async def poll(socket: Socket, args: tuple[Any, ...]) -> dict[str, Any]:
        acks = await server.hub.emit_with_acks(
            "/chat", "vote", *args, to="lobby", skip=[socket], timeout=1.0
        )
        return {"answers": sorted(acks.answers), "complete": acks.complete}

    return server


def attrs_evolve(config: RedisBackplaneConfig, **changes: Any) -> RedisBackplaneConfig:
    import attrs

    return attrs.evolve(config, **changes)


async def _join(ws: RawWebSocket) -> None:
    assert isinstance(await ws.receive(), str)
    await ws.send_text("40/chat,")
    accepted = await ws.receive_skipping_pings()
    assert isinstance(accepted, str)
    assert accepted.startswith("40/chat,")


@asynccontextmanager
async def _nodes(redis_url: str, count: int) -> AsyncIterator[tuple[list[Server], list[int]]]:
    key = f"{_redis.new_prefix()}socket.io"
    servers = [_server(redis_url, key) for _ in range(count)]
    async with AsyncExitStack() as stack:
        ports = [await stack.enter_async_context(serving(server)) for server in servers]
        yield servers, ports


def _backplane(server: Server) -> RedisBackplane:
    backplane = server.hub.backplane
    assert isinstance(backplane, RedisBackplane)
    return backplane


async def _answered_vote(ws: RawWebSocket, answer: str) -> None:
    frame = await ws.receive_skipping_pings()
    assert isinstance(frame, str)
    assert frame.startswith("42/chat,")
    ack_id = frame[len("42/chat,") : frame.index("[")]
    await ws.send_text(f"43/chat,{ack_id}[{orjson.dumps(answer).decode()}]")


async def test_a_broadcast_asking_for_acks_collects_them_from_every_node(redis_url: str) -> None:
    with trio.fail_after(20):
        async with (
            _nodes(redis_url, 3) as (_servers, ports),
            open_websocket(ports[0], WEBSOCKET) as asker,
            open_websocket(ports[1], WEBSOCKET) as one,
            open_websocket(ports[2], WEBSOCKET) as two,
            open_websocket(ports[2], WEBSOCKET) as silent,
        ):
            for ws in (asker, one, two, silent):
                await _join(ws)
            await asker.send_text('42/chat,0["poll","lunch?"]')
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_answered_vote, one, "yes")
                nursery.start_soon(_answered_vote, two, "no")
            # ``silent`` never answers: the poll times out with what came.
            answer = await asker.receive_skipping_pings()
            assert answer == '43/chat,0[{"answers":["no","yes"],"complete":false}]'
            frame = await silent.receive_skipping_pings()
            assert isinstance(frame, str)
            assert '"vote","lunch?"' in frame

            await asker.send_text('42/chat,1["poll","dinner?"]')
            async with trio.open_nursery() as nursery:
                for ws, vote in ((one, "a"), (two, "b"), (silent, "c")):
                    nursery.start_soon(_answered_vote, ws, vote)
            answer = await asker.receive_skipping_pings()
            assert answer == '43/chat,1[{"answers":["a","b","c"],"complete":true}]'


async def test_a_node_that_dies_while_asked_times_out_cleanly(redis_url: str) -> None:
    key = f"{_redis.new_prefix()}socket.io"
    with trio.fail_after(20):
        async with serving(_server(redis_url, key)) as port_one:
            asker_node_dead = trio.CancelScope()
            async with trio.open_nursery() as nursery:

                async def doomed_node(*, task_status: trio.TaskStatus[int]) -> None:
                    with asker_node_dead:
                        async with serving(_server(redis_url, key)) as port:
                            task_status.started(port)
                            await trio.sleep_forever()

                port_two = await nursery.start(doomed_node)
                async with (
                    open_websocket(port_one, WEBSOCKET) as asker,
                    open_websocket(port_two, WEBSOCKET) as doomed,
                ):
                    await _join(asker)
                    await _join(doomed)
                    await asker.send_text('42/chat,0["poll","still there?"]')
                    frame = await doomed.receive_skipping_pings()
                    assert isinstance(frame, str)
                    assert "still there?" in frame
                    asker_node_dead.cancel()  # its node goes before anyone answers
                    answer = await asker.receive_skipping_pings()
                    assert answer == '43/chat,0[{"answers":[],"complete":false}]'


class _DeafeningProxy:
    """Forwards to Redis; :meth:`deafen` silently drops what Redis sends to the
    subscriber connections open now (named ``replyhq-sub-...``): they stay open and
    deaf, as behind a broken middlebox."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._subscribers: list[dict[str, bool]] = []

    def deafen(self) -> None:
        for state in self._subscribers:
            state["deaf"] = True

    async def forward(self, client: trio.SocketStream) -> None:
        state = {"deaf": False}
        async with client:
            server = await trio.open_tcp_stream(*self.target)
            async with server, trio.open_nursery() as nursery:

                async def up() -> None:
                    while data := await client.receive_some(65536):
                        if b"replyhq-sub-" in data and state not in self._subscribers:
                            self._subscribers.append(state)
                        await server.send_all(data)
                    nursery.cancel_scope.cancel()

                async def down() -> None:
                    while data := await server.receive_some(65536):
                        if not state["deaf"]:
                            await client.send_all(data)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(up)
                nursery.start_soon(down)


async def test_a_deaf_node_notices_and_subscribes_again(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "replyhq_trio.backplane")
    key = f"{_redis.new_prefix()}socket.io"
    proxy = _DeafeningProxy(_redis.address(redis_url))
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    proxy.port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, proxy.forward, listeners)
            deaf_server = _server(f"redis://127.0.0.1:{proxy.port}/0", key)
            async with (
                serving(deaf_server) as port_one,
                serving(_server(redis_url, key)) as port_two,
                open_websocket(port_one, WEBSOCKET) as listener,
                open_websocket(port_two, WEBSOCKET) as speaker,
            ):
                await _join(listener)
                await _join(speaker)
                await speaker.send_text('42/chat,["say","one"]')
                assert await listener.receive_skipping_pings() == '42/chat,["said","one"]'

                proxy.deafen()
                stats = _backplane(deaf_server).stats
                await wait_until(lambda: stats.resubscribed == 1, timeout=10)
                await wait_until(lambda: stats.subscriptions == 2, timeout=10)
                await speaker.send_text('42/chat,["say","two"]')
                assert await listener.receive_skipping_pings() == '42/chat,["said","two"]'
            nursery.cancel_scope.cancel()
    assert any("subscribing again" in r.getMessage() for r in caplog.records)


async def test_broadcasts_resume_after_redis_restarts(redis_server_binary: str) -> None:
    key = "restart-socket.io"
    with trio.fail_after(30):
        async with _redis.private_redis() as redis:
            one, two = _server(redis.url, key), _server(redis.url, key)
            async with (
                serving(one) as port_one,
                serving(two) as port_two,
                open_websocket(port_one, WEBSOCKET) as alice,
                open_websocket(port_one, WEBSOCKET) as bob,
                open_websocket(port_two, WEBSOCKET) as carol,
            ):
                for ws in (alice, bob, carol):
                    await _join(ws)
                await redis.stop()
                await wait_until(lambda: not _backplane(one)._subscribed, timeout=10)
                with pytest.raises(Exception, match="not subscribed"):
                    await _backplane(one).check()
                # Alone meanwhile: its own sockets still hear each other.
                await alice.send_text('42/chat,["say","alone"]')
                assert await bob.receive_skipping_pings() == '42/chat,["said","alone"]'

                await redis.start()
                restarted = trio.current_time()

                async def both_ready() -> bool:
                    try:
                        await _backplane(one).check()
                        await _backplane(two).check()
                    except BackplaneUnavailable:
                        return False
                    return True

                await wait_for(both_ready, timeout=10)  # subscribed, and publishing
                # What was said meanwhile was held for the other nodes, and comes first.
                assert await carol.receive_skipping_pings() == '42/chat,["said","alone"]'
                await alice.send_text('42/chat,["say","together"]')
                assert await carol.receive_skipping_pings() == '42/chat,["said","together"]'
                assert trio.current_time() - restarted < 5
                assert await bob.receive_skipping_pings() == '42/chat,["said","together"]'


async def test_what_is_not_the_adapters_format_is_ignored_and_counted(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "replyhq_trio.backplane")
    with trio.fail_after(20):
        async with (
            _nodes(redis_url, 1) as (servers, ports),
            open_websocket(ports[0], WEBSOCKET) as ws,
            _redis.RespClient.connect(redis_url) as redis,
        ):
            await _join(ws)
            key = _backplane(servers[0])._config.key
            garbage = [
                b"\x93",  # truncated
                b"\xc1",  # never used by msgpack
                b"\x93\xa1x\x81\xa3nsp\xa5/chat\x80",  # a packet without data
                b"\x92\xa1x\x80",  # two elements
                orjson.dumps(["x", {"type": 2, "data": "nope", "nsp": "/chat"}, {}]),
            ]
            for payload in garbage:
                await redis.call("PUBLISH", f"{key}#/chat#", payload)
            await redis.call("PUBLISH", f"{key}-request#/chat#", b"{not json")
            await redis.call("PUBLISH", f"{key}-request#/chat#", b'{"type": 5, "opts": 7}')
            stats = _backplane(servers[0]).stats
            await wait_until(lambda: stats.malformed == len(garbage) + 2, timeout=10)
            # Still serving: a well-formed broadcast gets through.
            good = (
                b"\x93\xa7emitter\x83\xa4type\x02\xa4data\x92\xa4news\x01\xa3nsp\xa5/chat"
                b"\x83\xa5rooms\x90\xa6except\x90\xa5flags\x80"
            )
            await redis.call("PUBLISH", f"{key}#/chat#", good)
            assert await ws.receive_skipping_pings() == '42/chat,["news",1]'
    assert len([r for r in caplog.records if "malformed" in r.getMessage()]) == len(garbage) + 2
