"""Engine.IO v4 over HTTP long-polling and WebSocket: the behaviours the official
engine.io-protocol suite checks, on the bare echo application at /engine.io/."""

from __future__ import annotations

import json

import pytest
import trio

from .._raw import WebSocketRejected, http, open_websocket

EIO = "/engine.io/?EIO=4&transport="


async def _open_polling(port: int) -> str:
    response = await http(port, "GET", EIO + "polling")
    assert response.status == 200
    sid: str = json.loads(response.text[1:])["sid"]
    return sid


async def test_polling_handshake_sends_exactly_the_open_packet(conformance_port: int) -> None:
    with trio.fail_after(5):
        response = await http(conformance_port, "GET", EIO + "polling")
    assert response.status == 200
    assert response.text.startswith("0")
    handshake = json.loads(response.text[1:])
    assert set(handshake) == {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}
    assert isinstance(handshake["sid"], str)
    assert handshake["upgrades"] == ["websocket"]
    assert (handshake["pingInterval"], handshake["pingTimeout"]) == (300, 200)
    assert handshake["maxPayload"] == 1_000_000


@pytest.mark.parametrize(
    "target",
    [
        "/engine.io/?transport=polling",
        "/engine.io/?EIO=abc&transport=polling",
        "/engine.io/?EIO=3&transport=polling",
        "/engine.io/?EIO=4",
        "/engine.io/?EIO=4&transport=abc",
    ],
)
async def test_bad_query_parameters_are_400(conformance_port: int, target: str) -> None:
    with trio.fail_after(5):
        assert (await http(conformance_port, "GET", target)).status == 400


@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_a_handshake_must_be_a_get(conformance_port: int, method: str) -> None:
    with trio.fail_after(5):
        assert (await http(conformance_port, method, EIO + "polling")).status == 400


async def test_websocket_handshake_sends_the_open_packet_without_upgrades(
    conformance_port: int,
) -> None:
    with trio.fail_after(5):
        async with open_websocket(conformance_port, EIO + "websocket") as ws:
            opened = await ws.receive()
    assert isinstance(opened, str)
    assert opened.startswith("0")
    handshake = json.loads(opened[1:])
    assert set(handshake) == {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}
    assert handshake["upgrades"] == []


@pytest.mark.parametrize(
    "target",
    [
        "/engine.io/?transport=websocket",
        "/engine.io/?EIO=abc&transport=websocket",
        "/engine.io/?EIO=4",
        "/engine.io/?EIO=4&transport=abc",
    ],
)
async def test_websocket_with_bad_parameters_is_refused(conformance_port: int, target: str) -> None:
    with trio.fail_after(5), pytest.raises(WebSocketRejected) as refused:
        async with open_websocket(conformance_port, target):
            pass
    assert refused.value.status == 400


@pytest.mark.parametrize(
    ("body", "echoed"),
    [
        ("4hello", "4hello"),
        ("4test1\x1e4test2\x1e4test3", "4test1\x1e4test2\x1e4test3"),
        ("4hello\x1ebAQIDBA==", "4hello\x1ebAQIDBA=="),
    ],
)
async def test_polling_sends_and_receives_payloads(
    conformance_port: int, body: str, echoed: str
) -> None:
    with trio.fail_after(5):
        sid = await _open_polling(conformance_port)
        pushed = await http(conformance_port, "POST", EIO + f"polling&sid={sid}", body.encode())
        assert (pushed.status, pushed.text) == (200, "ok")
        polled = await http(conformance_port, "GET", EIO + f"polling&sid={sid}")
    assert (polled.status, polled.text) == (200, echoed)


async def test_an_invalid_packet_closes_the_polling_session(conformance_port: int) -> None:
    with trio.fail_after(5):
        sid = await _open_polling(conformance_port)
        assert (
            await http(conformance_port, "POST", EIO + f"polling&sid={sid}", b"abc")
        ).status == 400
        assert (await http(conformance_port, "GET", EIO + f"polling&sid={sid}")).status == 400


async def test_a_duplicate_poll_closes_the_session(conformance_port: int) -> None:
    target = EIO + "polling&sid={}"
    with trio.fail_after(5):
        sid = await _open_polling(conformance_port)
        results: dict[str, object] = {}

        async def first() -> None:
            results["first"] = await http(conformance_port, "GET", target.format(sid))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            await trio.testing.wait_all_tasks_blocked()
            second = await http(conformance_port, "GET", target.format(sid) + "&t=burst")
        assert second.status in (400, 500)
        first_response = results["first"]
        assert getattr(first_response, "status", None) == 200
        assert getattr(first_response, "text", None) == "1"
        assert (await http(conformance_port, "GET", target.format(sid))).status == 400


async def test_a_post_over_max_payload_is_413(conformance_port: int) -> None:
    with trio.fail_after(5):
        sid = await _open_polling(conformance_port)
        big = b"4" + b"x" * 1_000_000
        response = await http(conformance_port, "POST", EIO + f"polling&sid={sid}", big)
        assert response.status == 413
        assert (await http(conformance_port, "GET", EIO + f"polling&sid={sid}")).status == 400


async def test_websocket_echoes_text_and_binary(conformance_port: int) -> None:
    with trio.fail_after(5):
        async with open_websocket(conformance_port, EIO + "websocket") as ws:
            await ws.receive()
            await ws.send_text("4hello")
            assert await ws.receive() == "4hello"
            await ws.send_binary(b"\x01\x02\x03\x04")
            assert await ws.receive() == b"\x01\x02\x03\x04"


async def test_an_invalid_packet_closes_the_websocket(conformance_port: int) -> None:
    with trio.fail_after(5):
        async with open_websocket(conformance_port, EIO + "websocket") as ws:
            await ws.receive()
            await ws.send_text("abc")
            assert await ws.wait_closed() == 1002


async def test_polling_heartbeat(conformance_port: int) -> None:
    with trio.fail_after(5):
        sid = await _open_polling(conformance_port)
        for _ in range(3):
            polled = await http(conformance_port, "GET", EIO + f"polling&sid={sid}")
            assert (polled.status, polled.text) == (200, "2")
            pong = await http(conformance_port, "POST", EIO + f"polling&sid={sid}", b"3")
            assert pong.status == 200


async def test_websocket_heartbeat(conformance_port: int) -> None:
    with trio.fail_after(5):
        async with open_websocket(conformance_port, EIO + "websocket") as ws:
            await ws.receive()
            for _ in range(3):
                assert await ws.receive() == "2"
                await ws.send_text("3")


async def test_a_silent_polling_session_times_out(conformance_port: int) -> None:
    target = EIO + "polling&sid={}"
    with trio.fail_after(5):
        sid = await _open_polling(conformance_port)
        ping = await http(conformance_port, "GET", target.format(sid))
        assert ping.text == "2"  # not answered: the next poll waits for the timeout
        closing = await http(conformance_port, "GET", target.format(sid))
        assert (closing.status, closing.text) == (200, "1")
        assert (await http(conformance_port, "GET", target.format(sid))).status == 400


async def test_a_silent_websocket_is_closed(conformance_port: int) -> None:
    with trio.fail_after(5):
        async with open_websocket(conformance_port, EIO + "websocket") as ws:
            await ws.receive()
            assert await ws.receive() == "2"  # not answered
            code = await ws.wait_closed()
    assert code in (1000, 1006)


async def test_a_client_close_ends_the_pending_poll_with_a_noop(conformance_port: int) -> None:
    target = EIO + "polling&sid={}"
    with trio.fail_after(5):
        sid = await _open_polling(conformance_port)
        async with trio.open_nursery() as nursery:
            polled: list[object] = []

            async def poll() -> None:
                polled.append(await http(conformance_port, "GET", target.format(sid)))

            nursery.start_soon(poll)
            await trio.testing.wait_all_tasks_blocked()
            closing = await http(conformance_port, "POST", target.format(sid), b"1")
        assert closing.status == 200
        assert [(getattr(r, "status", 0), getattr(r, "text", "")) for r in polled] == [(200, "6")]
        assert (await http(conformance_port, "GET", target.format(sid))).status == 400


async def test_a_client_close_ends_the_websocket(conformance_port: int) -> None:
    with trio.fail_after(5):
        async with open_websocket(conformance_port, EIO + "websocket") as ws:
            await ws.receive()
            await ws.send_text("1")
            assert await ws.wait_closed() in (1000, 1006)


async def test_upgrade_from_polling_to_websocket(conformance_port: int) -> None:
    with trio.fail_after(5):
        sid = await _open_polling(conformance_port)
        async with open_websocket(conformance_port, EIO + f"websocket&sid={sid}") as ws:
            await ws.send_text("2probe")
            assert await ws.receive() == "3probe"
            polled = await http(conformance_port, "GET", EIO + f"polling&sid={sid}")
            assert (polled.status, polled.text) == (200, "6")
            await ws.send_text("5")
            await ws.send_text("4hello")
            assert await ws.receive() == "4hello"
            # The sid is now the WebSocket's: polling with it is refused.
            assert (await http(conformance_port, "GET", EIO + f"polling&sid={sid}")).status == 400


async def test_a_second_websocket_for_an_upgraded_session_is_closed(conformance_port: int) -> None:
    with trio.fail_after(5):
        sid = await _open_polling(conformance_port)
        async with open_websocket(conformance_port, EIO + f"websocket&sid={sid}") as ws:
            await ws.send_text("2probe")
            await ws.send_text("5")
            assert await ws.receive() == "3probe"
            async with open_websocket(conformance_port, EIO + f"websocket&sid={sid}") as second:
                assert await second.wait_closed() == 1008
            await ws.send_text("4hello")
            assert await ws.receive() == "4hello"


async def test_a_bad_probe_leaves_the_session_on_polling(conformance_port: int) -> None:
    with trio.fail_after(5):
        sid = await _open_polling(conformance_port)
        async with open_websocket(conformance_port, EIO + f"websocket&sid={sid}") as ws:
            await ws.send_text("4not a probe")
            assert await ws.wait_closed() == 1002
        pushed = await http(conformance_port, "POST", EIO + f"polling&sid={sid}", b"4still here")
        assert pushed.status == 200
        polled = await http(conformance_port, "GET", EIO + f"polling&sid={sid}")
        assert polled.text == "4still here"
