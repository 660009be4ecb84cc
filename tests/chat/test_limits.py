"""The rate limits through the official JS client (CONTRACT.md "Limits"), with the
windows in memory and in the real Redis: messages and typing per device, live
connections per device, CONNECT attempts per IP address (and 429 on polling
handshakes), repeat offenders disconnected, REST's 429; and one limit held by two nodes
sharing Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio
from prometheus_client.parser import text_string_to_metric_families

from replyhq_trio.chat import ClientAddress, RateLimits

from .. import _redis
from .._raw import http
from .._waiting import wait_for
from ..interop._peers import Peer, open_peer
from ._site import PATH, Site, chat_settings, conforms, connect_device, contract, open_site

MINUTE_MS = 60_000
CONNECT_ERROR = "client/handshake.connect_error.schema.json"


@asynccontextmanager
async def _site(db_url: str, presence_url: str | None, **limits: int) -> AsyncIterator[Site]:
    off = {"messages": 0, "typing": 0, "connections": 0, "connects": 0}
    # Typing never stops by itself during a test here.
    chat = chat_settings(limits=RateLimits(**{**off, **limits}), typing_timeout=60.0)
    async with open_site(db_url, chat=chat, redis_url=presence_url) as site:
        yield site


def _rate_limited(error: dict[str, Any]) -> int:
    """The ``retry_after_ms`` of a RATE_LIMITED error event (checked against the
    contract)."""
    conforms("/client", "server_to_client", "error", error)
    assert error["code"] == "RATE_LIMITED", error
    retry_after: int = error["retry_after_ms"]
    assert 0 < retry_after <= MINUTE_MS
    return retry_after


async def _rate_limited_metric(site: Site) -> dict[str, float]:
    """``replyhq_rate_limited_total`` by limit, scraped from ``GET /metrics``."""
    response = await http(site.port, "GET", "/metrics")
    assert response.status == 200
    return {
        sample.labels["limit"]: sample.value
        for family in text_string_to_metric_families(response.body.decode())
        for sample in family.samples
        if sample.name == "replyhq_rate_limited_total"
    }


async def _send(peer: Peer, socket: str, conversation_id: str, local_id: str) -> dict[str, Any]:
    payload = {"conversation_id": conversation_id, "body": f"m {local_id}", "local_id": local_id}
    (ack,) = await peer.emit_with_ack(socket, "message:send", payload)
    conforms("/client", "client_to_server", "message:send", ack, part="ack")
    return dict(ack)


async def test_messages_over_the_limit_are_refused_and_a_repeat_offender_is_disconnected(
    db_url: str, presence_url: str | None
) -> None:
    async with _site(db_url, presence_url, messages=3, strikes=3) as site:
        conversation = (await site.new_conversation("phone"))["id"]
        with trio.fail_after(30):
            async with open_peer("js") as peer:
                await connect_device(peer, "a", site, "phone", ("websocket",))
                for index in range(3):
                    assert (await _send(peer, "a", conversation, f"ok-{index}"))["success"]

                refused = await _send(peer, "a", conversation, "over-1")
                assert refused["success"] is False
                assert refused["error"] == "RATE_LIMITED"
                assert 0 < refused["retry_after_ms"] <= MINUTE_MS
                # Without an ack, the refusal comes as an ``error`` event.
                payload = {"conversation_id": conversation, "body": "x", "local_id": "over-2"}
                await peer.emit("a", "message:send", payload)
                _rate_limited((await peer.next_event("a", "error")).args[0])
                assert (await peer.state("a")).connected

                third = await _send(peer, "a", conversation, "over-3")
                assert third["error"] == "RATE_LIMITED"  # told first, then disconnected
                gone = await peer.next_event("a", kind="disconnect")
                assert gone.reason == "io server disconnect"

                # What was refused was not stored; the device's other sockets are unaffected
                # by the strikes (they are per socket) but not by the device's window.
                history = await site.history(conversation, "phone")
                assert [m["local_id"] for m in history] == ["ok-0", "ok-1", "ok-2"]
                await connect_device(peer, "b", site, "phone", ("polling",))
                assert (await _send(peer, "b", conversation, "still-over"))["error"] == (
                    "RATE_LIMITED"
                )
                assert await _rate_limited_metric(site) == {
                    "message": 4,
                    "typing": 0,
                    "connect": 0,
                    "connections": 0,
                }


async def test_typing_over_the_limit_is_refused_and_stopping_never_is(
    db_url: str, presence_url: str | None
) -> None:
    async with _site(db_url, presence_url, typing=2, strikes=0) as site:
        conversation = (await site.new_conversation("phone"))["id"]
        typing = {"conversation_id": conversation}
        with trio.fail_after(30):
            async with open_peer("js") as peer:
                await connect_device(peer, "typist", site, "phone", ("websocket",))
                await connect_device(peer, "other", site, "phone", ("websocket",))
                for socket in ("typist", "other"):
                    await peer.next_event(socket, "conversation:joined")
                await peer.emit("typist", "typing:start", typing)
                heard = await peer.next_event("other", "user:typing")
                assert heard.args[0]["is_typing"] is True
                await peer.emit("typist", "typing:start", typing)  # still typing: counted
                await peer.emit("typist", "typing:start", typing)
                _rate_limited((await peer.next_event("typist", "error")).args[0])
                await peer.emit("typist", "typing:stop", typing)
                stopped = await peer.next_event("other", "user:typing")
                assert stopped.args[0]["is_typing"] is False
                # strikes=0: refusals never disconnect
                for _ in range(5):
                    await peer.emit("typist", "typing:start", typing)
                    _rate_limited((await peer.next_event("typist", "error")).args[0])
                assert (await peer.state("typist")).connected
                assert not [n for n in peer.buffered("other") if n.name == "user:typing"]


async def test_a_device_has_at_most_its_live_connections(
    db_url: str, presence_url: str | None
) -> None:
    async with _site(db_url, presence_url, connections=2) as site:
        with trio.fail_after(30):
            async with open_peer("js") as peer:
                await connect_device(peer, "a", site, "phone", ("websocket",))
                await connect_device(peer, "b", site, "phone", ("polling",))
                third = await peer.connect(
                    "c", site.url, "/client", site.auth("phone"), ("websocket",), path=PATH
                )
                assert not third.connected
                assert third.message == "TOO_MANY_CONNECTIONS"
                contract().check(CONNECT_ERROR, {"message": third.message})
                assert (await _rate_limited_metric(site))["connections"] == 1
                await connect_device(peer, "tablet", site, "tablet", ("websocket",))

                await peer.disconnect("a")

                async def room_again() -> bool:
                    result = await peer.connect(
                        "c", site.url, "/client", site.auth("phone"), ("websocket",), path=PATH
                    )
                    return result.connected

                await wait_for(room_again, timeout=10)


async def test_connect_attempts_per_address_and_polling_handshakes_get_429(
    db_url: str, presence_url: str | None
) -> None:
    async with _site(db_url, presence_url, connects=3) as site:
        with trio.fail_after(30):
            async with open_peer("js") as peer:
                await connect_device(peer, "a", site, "phone", ("websocket",))
                wrong = {**site.auth("phone"), "api_key": "not-the-key"}
                refused = await peer.connect(
                    "b", site.url, "/client", wrong, ("websocket",), path=PATH
                )
                assert refused.message == "INVALID_CREDENTIALS"  # refused, and counted
                await connect_device(peer, "c", site, "tablet", ("polling",))

                over = await peer.connect(
                    "d", site.url, "/client", site.auth("laptop"), ("websocket",), path=PATH
                )
                assert not over.connected
                assert over.message == "RATE_LIMITED"
                assert 0 < over.data["retry_after_ms"] <= MINUTE_MS
                contract().check(CONNECT_ERROR, {"message": over.message, "data": over.data})

                # A new long-polling session from the address is refused before it exists.
                response = await http(site.port, "GET", f"{PATH}/?EIO=4&transport=polling")
                assert response.status == 429
                assert 1 <= int(response.headers["retry-after"]) <= 60
                sessions = len(site.server.sessions)
                polling = await peer.connect(
                    "e", site.url, "/client", site.auth("laptop"), ("polling",), path=PATH
                )
                assert not polling.connected
                assert len(site.server.sessions) == sessions

                # The live connections are untouched, and /admin's CONNECT is not limited per
                # address (over a WebSocket: a polling handshake does not say its namespace).
                assert (await peer.state("a")).connected
                auth = {"app_id": site.app_id, "admin_token": site.app.admin_token}
                admin = await peer.connect(
                    "admin", site.url, "/admin", auth, ("websocket",), path=PATH
                )
                assert admin.connected


async def test_rest_answers_429_with_retry_after_and_shares_the_devices_window(
    db_url: str, presence_url: str | None
) -> None:
    async with _site(db_url, presence_url, messages=2) as site:
        conversation = (await site.new_conversation("phone"))["id"]
        target = f"/v1/conversations/{conversation}/messages"
        with trio.fail_after(30):
            async with open_peer("js") as peer:
                await connect_device(peer, "a", site, "phone", ("websocket",))
                assert (await _send(peer, "a", conversation, "socket-1"))["success"]
            status, _ = await site.rest(
                "POST",
                target,
                {"body": "b", "local_id": "rest-1"},
                headers=site.device_headers("phone"),
            )
            assert status == 201
            response = await http(
                site.port,
                "POST",
                target,
                b'{"body": "b", "local_id": "rest-2"}',
                [*site.device_headers("phone"), ("content-type", "application/json")],
            )
            assert response.status == 429
            retry_after = int(response.headers["retry-after"])
            assert 1 <= retry_after <= 60
            body = orjson.loads(response.body)
            contract().check("rest/error.response.schema.json", body)
            assert body["error"]["code"] == "RATE_LIMITED"
            assert 0 < body["error"]["retry_after_ms"] <= retry_after * 1000
            # An agent's messages are not a device's: not limited.
            status, _ = await site.rest(
                "POST",
                target,
                {"body": "agent", "local_id": "agent-1"},
                headers=site.agent_headers(),
            )
            assert status == 201


async def test_two_nodes_on_one_redis_hold_one_limit(db_url: str, redis_url: str) -> None:
    prefix = _redis.new_prefix()
    limits = chat_settings(limits=RateLimits(messages=4, typing=0, connections=2, connects=0))
    async with (
        open_site(db_url, chat=limits, redis_url=redis_url, key_prefix=prefix) as one,
        open_site(db_url, chat=limits, redis_url=redis_url, key_prefix=prefix) as two,
    ):
        conversation = (await one.new_conversation("phone"))["id"]
        with trio.fail_after(30):
            async with open_peer("js") as peer:
                await connect_device(peer, "on-one", one, "phone", ("websocket",))
                on_two = await peer.connect(
                    "on-two", two.url, "/client", one.auth("phone"), ("websocket",), path=PATH
                )
                assert on_two.connected
                # The device's third connection, on either node, is one too many.
                third = await peer.connect(
                    "third", two.url, "/client", one.auth("phone"), ("polling",), path=PATH
                )
                assert third.message == "TOO_MANY_CONNECTIONS"

                outcomes = []
                for index in range(6):
                    socket = "on-one" if index % 2 == 0 else "on-two"
                    ack = await _send(peer, socket, conversation, f"m-{index}")
                    outcomes.append(ack["success"] or ack["error"])
                assert outcomes == [True, True, True, True, "RATE_LIMITED", "RATE_LIMITED"]


def test_the_client_address_is_the_peers_unless_a_trusted_proxy_forwards_it() -> None:
    forwarded = {"x-forwarded-for": "203.0.113.7, 10.1.2.3"}
    nobody = ClientAddress()
    assert nobody("198.51.100.2:5000", forwarded) == "198.51.100.2"  # never believed
    proxies = ClientAddress(["10.0.0.0/8", "127.0.0.1"])
    assert proxies("127.0.0.1:5000", forwarded) == "203.0.113.7"  # the last untrusted hop
    assert proxies("198.51.100.2:5000", forwarded) == "198.51.100.2"  # not via a proxy
    assert proxies("127.0.0.1:5000", {}) == "127.0.0.1"
    assert proxies("[::1]:5000", forwarded) == "::1"
    spoofed = {"x-forwarded-for": "1.2.3.4, 203.0.113.9"}  # the client wrote the first
    assert proxies("127.0.0.1:1", spoofed) == "203.0.113.9"
