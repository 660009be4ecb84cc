"""The ``/client`` flow as the Kotlin SDK speaks it: a WebSocket opened directly
(``?EIO=4&transport=websocket``, no polling), Engine.IO and Socket.IO packets written and
read by hand, on both stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import trio

from .._raw import RawWebSocket, open_websocket
from ._site import Site, conforms, contract, open_site

TARGET = "/v1/socket.io/?EIO=4&transport=websocket"


@pytest.fixture
async def site(db_url: str) -> AsyncIterator[Site]:
    async with open_site(db_url) as opened:
        yield opened


async def _packet(ws: RawWebSocket) -> str:
    message = await ws.receive_skipping_pings()
    assert isinstance(message, str), message
    return message


async def _event(ws: RawWebSocket) -> tuple[str, Any]:
    packet = await _packet(ws)
    assert packet.startswith("42/client,"), packet
    name, payload = orjson.loads(packet[len("42/client,") :])
    conforms("/client", "server_to_client", name, payload)
    return name, payload


async def test_a_hand_written_client_chats(site: Site) -> None:
    cid = (await site.new_conversation("kotlin"))["id"]
    with trio.fail_after(30):
        async with open_websocket(site.port, TARGET) as ws:
            opened = await _packet(ws)
            assert opened.startswith("0")
            handshake = orjson.loads(opened[1:])
            assert (handshake["upgrades"], handshake["maxPayload"]) == ([], 1_000_000)

            await ws.send_text("40/client," + orjson.dumps(site.auth("kotlin")).decode())
            accepted = await _packet(ws)
            assert accepted.startswith("40/client,")
            sid = orjson.loads(accepted[len("40/client,") :])["sid"]
            name, connected = await _event(ws)
            assert (name, connected["connection_id"]) == ("connected", sid)
            assert await _event(ws) == (
                "conversation:joined",
                {"conversation_id": cid, "last_message_id": None},
            )

            send = {"conversation_id": cid, "body": "from Kotlin", "local_id": "k-1"}
            await ws.send_text("42/client,7" + orjson.dumps(["message:send", send]).decode())
            # The ack and the broadcast, in either order.
            got = sorted([await _packet(ws), await _packet(ws)])
            assert got[0].startswith("42/client,")
            assert got[1].startswith("43/client,7")
            (ack,) = orjson.loads(got[1][len("43/client,7") :])
            conforms("/client", "client_to_server", "message:send", ack, "ack")
            assert orjson.loads(got[0][len("42/client,") :]) == ["message:new", ack["message"]]

            await ws.send_text('42/client,8["ping"]')
            assert await _packet(ws) == '43/client,8["pong"]'

            # A bad payload: the error in the ack, and the socket stays.
            await ws.send_text('42/client,9["message:send",{"conversation_id":"' + cid + '"}]')
            (refusal,) = orjson.loads((await _packet(ws))[len("43/client,9") :])
            assert (refusal["error"], refusal["field"]) == ("INVALID_PAYLOAD", "body")

            await ws.send_text("41/client,")
            await ws.send_close()
            assert await ws.wait_closed() == 1000


async def test_a_hand_written_client_is_refused_with_the_contracts_codes(site: Site) -> None:
    with trio.fail_after(30):
        async with open_websocket(site.port, TARGET) as ws:
            await _packet(ws)
            await ws.send_text('40/client,{"app_id":"x"}')
            refused = await _packet(ws)
            assert refused.startswith("44/client,")
            body = orjson.loads(refused[len("44/client,") :])
            contract().check(contract().index["client"]["handshake"]["connect_error"], body)
            assert body["message"] == "MISSING_PARAMS"
            await ws.send_text(
                "40/client," + orjson.dumps({**site.auth("k"), "api_key": "no"}).decode()
            )
            refused = await _packet(ws)
            assert orjson.loads(refused[len("44/client,") :])["message"] == "INVALID_CREDENTIALS"
            await ws.send_text('42/client,["message:send",{}]')  # not connected to /client
            assert await ws.wait_closed() in (1000, 1002, 1008)
